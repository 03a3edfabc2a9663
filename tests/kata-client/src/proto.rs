//! The few protocol-buffers encodings the agent's API needs, by hand: varints and
//! length-delimited fields (proto3, so zero values are left out). The messages are the agent's
//! `agent.proto` / `oci.proto` (kata-containers 4.1.0, `src/libs/protocols/protos`) and ttRPC's
//! `Request` / `Response`; field numbers are written where the message is built (agent.rs,
//! ttrpc.rs). A generated client would pull the whole API and protobuf's code generator into
//! the test image for six calls.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("protobuf message truncated at byte {0}")]
    Truncated(usize),
    #[error("protobuf varint longer than 10 bytes at byte {0}")]
    VarintTooLong(usize),
    #[error("protobuf wire type {wire} (field {field}) is not supported")]
    WireType { field: u64, wire: u64 },
    #[error("protobuf field {0}: length does not fit")]
    Length(u64),
}

/// A message being built: fields appended in the order given.
#[derive(Debug, Default, Clone)]
pub struct Msg(Vec<u8>);

const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Msg {
    pub fn new() -> Self {
        Self::default()
    }
    fn key(&mut self, field: u32, wire: u64) {
        put_varint(&mut self.0, (u64::from(field) << 3) | wire);
    }
    fn len_delimited(mut self, field: u32, bytes: &[u8]) -> Self {
        self.key(field, LEN);
        put_varint(&mut self.0, bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }
    /// A string field (left out when empty, as proto3 does).
    pub fn string(self, field: u32, s: &str) -> Self {
        if s.is_empty() {
            return self;
        }
        self.len_delimited(field, s.as_bytes())
    }
    /// A repeated string field.
    pub fn strings<S: AsRef<str>>(mut self, field: u32, items: &[S]) -> Self {
        for s in items {
            self = self.len_delimited(field, s.as_ref().as_bytes());
        }
        self
    }
    pub fn bytes(self, field: u32, b: &[u8]) -> Self {
        if b.is_empty() {
            return self;
        }
        self.len_delimited(field, b)
    }
    pub fn uint(mut self, field: u32, v: u64) -> Self {
        if v != 0 {
            self.key(field, VARINT);
            put_varint(&mut self.0, v);
        }
        self
    }
    pub fn bool(self, field: u32, b: bool) -> Self {
        self.uint(field, u64::from(b))
    }
    /// A nested message, always written (presence matters for message fields).
    pub fn msg(self, field: u32, m: Msg) -> Self {
        self.len_delimited(field, &m.0)
    }
    /// A `map<string, string>` field: one entry message (key 1, value 2) per pair.
    pub fn map(mut self, field: u32, pairs: &[(&str, &str)]) -> Self {
        for (k, v) in pairs {
            self = self.msg(field, Msg::new().string(1, k).string(2, v));
        }
        self
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// One decoded field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let start = *pos;
    let mut v = 0u64;
    for shift in 0..10 {
        let b = *buf.get(*pos).ok_or(ProtoError::Truncated(*pos))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * shift);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtoError::VarintTooLong(start))
}

/// Every field of `buf` in order: (field number, value). Unknown fields are returned too; the
/// caller picks what it knows.
pub fn fields(buf: &[u8]) -> Result<Vec<(u64, Value<'_>)>, ProtoError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = get_varint(buf, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        let value = match wire {
            VARINT => Value::Varint(get_varint(buf, &mut pos)?),
            LEN => {
                let len = get_varint(buf, &mut pos)?;
                let len = usize::try_from(len).map_err(|_| ProtoError::Length(field))?;
                let end = pos.checked_add(len).ok_or(ProtoError::Length(field))?;
                let b = buf.get(pos..end).ok_or(ProtoError::Truncated(buf.len()))?;
                pos = end;
                Value::Bytes(b)
            }
            I64 | I32 => {
                let n = if wire == I64 { 8 } else { 4 };
                pos = pos.checked_add(n).filter(|p| *p <= buf.len()).ok_or(ProtoError::Truncated(buf.len()))?;
                Value::Fixed
            }
            _ => return Err(ProtoError::WireType { field, wire }),
        };
        out.push((field, value));
    }
    Ok(out)
}

/// The last occurrence of bytes field `field` (proto3: last one wins), empty when absent.
pub fn get_bytes<'a>(fields: &[(u64, Value<'a>)], field: u64) -> &'a [u8] {
    fields
        .iter()
        .rev()
        .find_map(|(f, v)| match v {
            Value::Bytes(b) if *f == field => Some(*b),
            _ => None,
        })
        .unwrap_or_default()
}

/// The last occurrence of varint field `field`, 0 when absent.
pub fn get_varint_field(fields: &[(u64, Value<'_>)], field: u64) -> u64 {
    fields
        .iter()
        .rev()
        .find_map(|(f, v)| match v {
            Value::Varint(x) if *f == field => Some(*x),
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_what_we_write() {
        let inner = Msg::new().string(1, "pid").string(2, "");
        let m =
            Msg::new().string(1, "ctr").uint(3, 300).bool(4, true).bool(5, false).msg(6, inner).strings(7, &["a", "b"]);
        let bytes = m.into_bytes();
        let f = fields(&bytes).unwrap();
        assert_eq!(get_bytes(&f, 1), b"ctr");
        assert_eq!(get_varint_field(&f, 3), 300);
        assert_eq!(get_varint_field(&f, 4), 1);
        assert_eq!(get_varint_field(&f, 5), 0, "false is left out");
        let nested = fields(get_bytes(&f, 6)).unwrap();
        assert_eq!(get_bytes(&nested, 1), b"pid");
        assert_eq!(f.iter().filter(|(n, _)| *n == 7).count(), 2);
        // 300 as a varint is ac 02 (protobuf's own example).
        assert_eq!(Msg::new().uint(1, 300).into_bytes(), [0x08, 0xac, 0x02]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(fields(&[0x0a, 0x05, b'a']), Err(ProtoError::Truncated(3)));
        assert_eq!(fields(&[0x08]), Err(ProtoError::Truncated(1)));
        assert_eq!(
            fields(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtoError::VarintTooLong(1))
        );
        assert!(matches!(fields(&[0x0b]), Err(ProtoError::WireType { wire: 3, .. })));
        assert!(fields(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        assert!(fields(&[0x09, 1, 2]).is_err(), "fixed64 cut short");
        // Every prefix of a valid message either parses or errors; none panics.
        let bytes = Msg::new().string(1, "container").uint(2, 1 << 40).msg(3, Msg::new().string(1, "x")).into_bytes();
        for n in 0..bytes.len() {
            let _ = fields(&bytes[..n]);
        }
    }
}
