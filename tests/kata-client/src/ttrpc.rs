//! A ttRPC client over a unix socket (containerd/ttrpc `PROTOCOL.md`): each message is a 10-byte
//! header (length u32 BE, stream id u32 BE, type u8: 1 request / 2 response, flags u8) and a
//! protobuf body. A call is one `Request` (service, method, payload, timeout) on a fresh odd
//! stream id and one `Response` (google.rpc `Status`, payload) on the same id. Synchronous: the
//! test drives one call at a time.

use crate::proto::{self, Msg, ProtoError};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// ttRPC's limit on a message (both directions).
const MAX_MESSAGE: u32 = 4 << 20;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum TtrpcError {
    #[error("cannot connect to the agent at {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("{method}: socket: {source}")]
    Io { method: String, source: std::io::Error },
    #[error("{method}: the agent answered with a {len}-byte message (limit {MAX_MESSAGE})")]
    TooLarge { method: String, len: u32 },
    #[error("{method}: answer on stream {got}, expected {want} (type {kind})")]
    Stream { method: String, got: u32, want: u32, kind: u8 },
    #[error("{method}: malformed answer: {source}")]
    Proto { method: String, source: ProtoError },
    #[error("{method}: the agent says code {code}: {message}")]
    Status { method: String, code: u64, message: String },
}

pub struct Client {
    sock: UnixStream,
    next_stream: u32,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, TtrpcError> {
        let err = |source| TtrpcError::Connect { path: path.display().to_string(), source };
        let sock = UnixStream::connect(path).map_err(err)?;
        sock.set_read_timeout(Some(timeout)).map_err(err)?;
        sock.set_write_timeout(Some(timeout)).map_err(err)?;
        Ok(Self { sock, next_stream: 1 })
    }

    /// Calls `service`.`method` with an encoded request; returns the encoded answer.
    pub fn call(
        &mut self,
        service: &str,
        method: &str,
        payload: Msg,
        timeout: Duration,
    ) -> Result<Vec<u8>, TtrpcError> {
        let io = |source| TtrpcError::Io { method: method.to_owned(), source };
        let body = Msg::new()
            .string(1, service)
            .string(2, method)
            .bytes(3, &payload.into_bytes())
            .uint(4, u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX))
            .into_bytes();
        let len = u32::try_from(body.len()).ok().filter(|l| *l <= MAX_MESSAGE);
        let len = len.ok_or(TtrpcError::TooLarge { method: method.to_owned(), len: u32::MAX })?;
        let stream = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        let mut frame = Vec::with_capacity(10 + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(&[TYPE_REQUEST, 0]);
        frame.extend_from_slice(&body);
        self.sock.write_all(&frame).map_err(io)?;

        let mut header = [0u8; 10];
        self.sock.read_exact(&mut header).map_err(io)?;
        let [l0, l1, l2, l3, s0, s1, s2, s3, kind, _flags] = header;
        let (len, got) = (u32::from_be_bytes([l0, l1, l2, l3]), u32::from_be_bytes([s0, s1, s2, s3]));
        if len > MAX_MESSAGE {
            return Err(TtrpcError::TooLarge { method: method.to_owned(), len });
        }
        let mut answer = vec![0u8; len as usize];
        self.sock.read_exact(&mut answer).map_err(io)?;
        if got != stream || kind != TYPE_RESPONSE {
            return Err(TtrpcError::Stream { method: method.to_owned(), got, want: stream, kind });
        }
        decode_response(method, &answer)
    }
}

/// `Response { Status status = 1; bytes payload = 2; }`, `Status { int32 code = 1; string message = 2; }`.
fn decode_response(method: &str, answer: &[u8]) -> Result<Vec<u8>, TtrpcError> {
    let proto_err = |source| TtrpcError::Proto { method: method.to_owned(), source };
    let f = proto::fields(answer).map_err(proto_err)?;
    let status = proto::fields(proto::get_bytes(&f, 1)).map_err(proto_err)?;
    let code = proto::get_varint_field(&status, 1);
    if code != 0 {
        let message = String::from_utf8_lossy(proto::get_bytes(&status, 2)).into_owned();
        return Err(TtrpcError::Status { method: method.to_owned(), code, message });
    }
    Ok(proto::get_bytes(&f, 2).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_payload() {
        let ok = Msg::new().msg(1, Msg::new()).bytes(2, b"\x08\x07").into_bytes();
        assert_eq!(decode_response("M", &ok).unwrap(), b"\x08\x07");
        let err = Msg::new().msg(1, Msg::new().uint(1, 2).string(2, "no such container")).into_bytes();
        let e = decode_response("StartContainer", &err).unwrap_err().to_string();
        assert_eq!(e, "StartContainer: the agent says code 2: no such container");
        assert!(matches!(decode_response("M", &[0x0a, 0x09]), Err(TtrpcError::Proto { .. })));
    }

    #[test]
    fn a_peer_that_answers_on_another_stream_or_too_much_is_refused() {
        for header in [[0, 0, 0, 0, 0, 0, 0, 3, TYPE_RESPONSE, 0], [0xff, 0, 0, 0, 0, 0, 0, 1, TYPE_RESPONSE, 0]] {
            let (a, mut b) = UnixStream::pair().unwrap();
            let mut c = Client { sock: a, next_stream: 1 };
            b.write_all(&header).unwrap();
            let e = c.call("grpc.AgentService", "Check", Msg::new(), Duration::from_secs(5)).unwrap_err();
            assert!(matches!(e, TtrpcError::Stream { .. } | TtrpcError::TooLarge { .. }), "{e}");
        }
    }
}
