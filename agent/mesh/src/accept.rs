//! The accept loop every proxy listener runs: accept until the proxy drains, let the
//! listener decide (route or refuse), enforce the connection limit or the handshake budget,
//! spawn the handler.

use crate::{
    conn::{Active, Shared},
    limits::Ticket,
    metrics::{Failure, Route},
};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};

/// What a new connection must get before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A connection permit at once (egress: the app is local).
    Connection,
    /// A handshake slot for its source address (ingress: not authenticated yet); the
    /// handler trades it for a connection permit after the handshake
    /// ([`Ticket::established`]).
    Handshake,
}

/// Accepts until the proxy drains. `admit` looks at each new connection and returns its
/// route and handler, or `None` to close it at once (it counts the refusal itself). The
/// handler runs as its own task, holding what `gate` demands and the route's `active` count.
pub async fn accept_loop<A, H, F>(listener: TcpListener, shared: Arc<Shared>, gate: Gate, mut admit: A)
where
    A: FnMut(TcpStream) -> Option<(Arc<Route>, H)>,
    H: FnOnce(Active, Ticket) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let name = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shared.limits.stopped() => return,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => { accept_error(&name, e).await; continue; }
            },
        };
        let Some((route, handler)) = admit(stream) else { continue };
        let ticket = match gate {
            Gate::Connection => shared.limits.try_admit().map(Ticket::Connection).ok_or(Failure::Limit),
            Gate::Handshake => {
                shared.limits.try_handshake(peer.ip()).map(Ticket::Handshake).ok_or(Failure::HandshakeLimit)
            }
        };
        let ticket = match ticket {
            Ok(t) => t,
            Err(f) => {
                route.fail(f);
                continue;
            }
        };
        tokio::spawn(async move { handler(Active::new(route), ticket).await });
    }
}

/// Accept errors (EMFILE, ENOBUFS, ...) are transient: log, back off briefly, keep serving.
pub(crate) async fn accept_error(listener: &str, e: std::io::Error) {
    tracing::warn!(PODMESH_EVENT = "accept_failed", "accept on {listener} failed: {e}; retrying");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
