//! The accept loop every proxy listener runs: accept until the proxy drains, let the
//! listener decide (route or refuse), enforce the connection limit, spawn the handler.

use crate::{
    conn::{Active, Shared},
    metrics::{Failure, Route},
};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};

/// Accepts until the proxy drains. `admit` looks at each new connection and returns its
/// route and handler, or `None` to close it at once (it counts the refusal itself). The
/// handler runs as its own task, holding a connection permit and the route's `active` count.
pub async fn accept_loop<A, H, F>(listener: TcpListener, shared: Arc<Shared>, mut admit: A)
where
    A: FnMut(TcpStream) -> Option<(Arc<Route>, H)>,
    H: FnOnce(Active) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let name = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    loop {
        let stream = tokio::select! {
            biased;
            _ = shared.limits.stopped() => return,
            r = listener.accept() => match r {
                Ok((stream, _peer)) => stream,
                Err(e) => { accept_error(&name, e).await; continue; }
            },
        };
        let Some((route, handler)) = admit(stream) else { continue };
        let Some(permit) = shared.limits.try_admit() else {
            route.fail(Failure::Limit);
            continue;
        };
        tokio::spawn(async move {
            handler(Active::new(route)).await;
            drop(permit);
        });
    }
}

/// Accept errors (EMFILE, ENOBUFS, ...) are transient: log, back off briefly, keep serving.
pub(crate) async fn accept_error(listener: &str, e: std::io::Error) {
    tracing::warn!(PODMESH_EVENT = "accept_failed", "accept on {listener} failed: {e}; retrying");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
