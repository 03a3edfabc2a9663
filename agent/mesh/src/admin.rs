//! The admin listener: `/live`, `/ready`, `/metrics` (Prometheus text), `/config` (JSON).
//!
//! A deliberately tiny HTTP/1.x responder: one GET per connection, request head capped at
//! 8 KiB and 5 s, `Connection: close`. Anything else gets a 4xx and the socket is closed.

use crate::{metrics, readiness::Readiness};
use std::{sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin endpoints show.
pub struct AdminState {
    pub readiness: Readiness,
    pub routes: Vec<Arc<metrics::Route>>,
    /// `/config` body, rendered once at startup.
    pub config_json: String,
    /// Mesh CA rotation counters.
    pub rotation: Arc<crate::rotation::Stats>,
}

/// A parsed response: status line, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
}

/// Answers one request head (everything up to the blank line).
pub fn respond(head: &[u8], state: &AdminState) -> Response {
    let Ok(head) = std::str::from_utf8(head) else { return text(400, "request head is not UTF-8\n") };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return text(400, "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return text(400, "only HTTP/1.x is served\n");
    }
    if method != "GET" && method != "HEAD" {
        return text(405, "only GET is served\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/live" => text(200, "live\n"),
        "/ready" => {
            let pending = state.readiness.pending();
            if pending.is_empty() {
                text(200, "ready\n")
            } else {
                text(503, format!("not ready, waiting for: {}\n", pending.join(", ")))
            }
        }
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: {
                let mut body = metrics::render(&state.routes);
                state.rotation.render(&mut body);
                body
            },
        },
        "/config" => Response { status: 200, content_type: "application/json", body: state.config_json.clone() },
        _ => text(404, "not found: try /live /ready /metrics /config\n"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Serves until `stop` resolves.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { crate::accept::accept_error("admin", e).await; continue; }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, handle(stream, &state)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let response = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break respond(&head[..end], state);
        }
        if head.len() > MAX_HEAD {
            break text(431, "request head larger than 8 KiB\n");
        }
    };
    let is_head = head.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if !is_head {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AdminState {
        AdminState {
            readiness: Readiness::new(),
            routes: vec![Arc::new(metrics::Route::new("mtls", "ingress_mtls"))],
            config_json: "{\"x\":1}".into(),
            rotation: Default::default(),
        }
    }

    #[test]
    fn endpoints() {
        let s = state();
        assert_eq!(respond(b"GET /live HTTP/1.1\r\nHost: x", &s).status, 200);
        assert_eq!(respond(b"GET /ready HTTP/1.1", &s).status, 200);
        let tok = s.readiness.token("rules");
        let r = respond(b"GET /ready HTTP/1.1", &s);
        assert_eq!((r.status, r.body.as_str()), (503, "not ready, waiting for: rules\n"));
        drop(tok);
        assert!(respond(b"GET /metrics HTTP/1.0", &s).body.contains("podmesh_connections_total{route=\"mtls\""));
        assert!(respond(b"GET /metrics HTTP/1.0", &s).body.contains("\npodmesh_mesh_ca_rotations_total 0\n"));
        assert_eq!(respond(b"GET /config?pretty HTTP/1.1", &s).body, "{\"x\":1}");
        assert_eq!(respond(b"GET /nope HTTP/1.1", &s).status, 404);
    }

    #[test]
    fn bad_requests_get_clear_errors() {
        let s = state();
        for (head, status) in [
            (&b"\xff\xfe GET"[..], 400),
            (b"", 400),
            (b"GET /live", 400),
            (b"GET  /live HTTP/1.1", 400),
            (b"GET /live HTTP/2", 400),
            (b"POST /live HTTP/1.1", 405),
            (b"GET /live HTTP/1.1 extra", 400),
        ] {
            assert_eq!(respond(head, &s).status, status, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[tokio::test]
    async fn serves_over_tcp_and_rejects_oversized_heads() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(l, Arc::new(state()), async {
            let _ = rx.await;
        }));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n") && resp.ends_with("live\n"), "{resp}");

        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&[b'A'; 9 * 1024]).await.unwrap(); // exactly what the server reads before it answers
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
        tx.send(()).unwrap();
        server.await.unwrap();
    }
}
