//! What every connection handler shares: TLS configs, limits, timeouts, marks, metrics.

use crate::{
    copy::{self, CopyError, Side},
    limits::Limits,
    local::{self, LocalCheck, LocalError},
    metrics::{Failure, Route},
    reload::TlsWatch,
    sockopt,
};
use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

/// Per-connection time limits.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timeouts {
    /// TLS handshake, from accept (ingress) or from connect (egress).
    pub handshake: Duration,
    /// TCP connect to the upstream (including DNS resolution on egress).
    pub connect: Duration,
    /// No byte in either direction for this long closes the connection.
    pub idle: Duration,
}

/// State shared by all listeners of one proxy.
pub struct Shared {
    pub tls: TlsWatch,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// `SO_MARK` of upstream sockets (0 = none); never the TPROXY mark.
    pub upstream_mark: u32,
    /// Our own listener ports (mTLS, TLS-only, admin): destinations we refuse (self-loop).
    pub own_ports: Vec<u16>,
    /// Whether `bind()` proves an ingress destination local (see [`crate::local`]).
    pub local: LocalCheck,
    /// Stamps connections, to close those made under a superseded mesh CA ([`crate::rotation`]).
    pub retirement: crate::rotation::Retirement,
}

/// Counts a connection as active while alive.
pub struct Active(Arc<Route>);

impl Active {
    pub fn new(route: Arc<Route>) -> Self {
        route.accepted.fetch_add(1, Ordering::Relaxed);
        route.active.fetch_add(1, Ordering::Relaxed);
        Self(route)
    }

    pub fn route(&self) -> &Route {
        &self.0
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects to `dest` from a socket with the upstream mark, within the connect timeout.
pub async fn connect_upstream(dest: SocketAddr, shared: &Shared) -> std::io::Result<tokio::net::TcpStream> {
    let socket = sockopt::upstream_socket(dest, shared.upstream_mark).map_err(std::io::Error::other)?;
    connect(socket, dest, shared).await
}

/// `socket.connect(dest)` within the connect timeout.
pub async fn connect(
    socket: tokio::net::TcpSocket,
    dest: SocketAddr,
    shared: &Shared,
) -> std::io::Result<tokio::net::TcpStream> {
    match tokio::time::timeout(shared.timeouts.connect, socket.connect(dest)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// The upstream socket of an ingress connection to `dest`, bound to `dest`'s own address.
/// Only a local address binds, so the connection can never leave the pod.
pub fn local_upstream(dest: SocketAddr, shared: &Shared) -> Result<tokio::net::TcpSocket, LocalError> {
    let socket = sockopt::upstream_socket(dest, shared.upstream_mark)?;
    if !shared.local.bind_proves(dest.ip()) {
        match local::is_interface_address(dest.ip()) {
            Ok(true) => {}
            Ok(false) => return Err(LocalError::NotLocal(dest)),
            Err(source) => return Err(LocalError::Check { addr: dest, source }),
        }
    }
    match sockopt::bind_source(&socket, dest) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EADDRNOTAVAIL as i32) => Err(LocalError::NotLocal(dest)),
        Err(source) => Err(LocalError::Check { addr: dest, source }),
    }
}

/// Counts a failed handshake on `route`; a peer refused by an identity rule also gets one
/// journal line (info, at most one per second and route) with its SANs, the entry and the rule.
pub fn handshake_failed(route: &Route, e: &std::io::Error, peer: &str) -> Failure {
    let failure = Failure::of_handshake(e);
    route.fail(failure);
    let refused = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).and_then(crate::identity::Refused::of);
    if let Some(r) = refused {
        if let Some(suppressed) = route.log_allowed() {
            tracing::info!(
                PODMESH_EVENT = "identity_refused",
                route = %route.name,
                peer = %peer,
                port = r.port.map(|p| p.to_string()).unwrap_or_default(),
                sans = %r.sans.join(","),
                rule = %r.rule,
                suppressed,
                "identity refused, peer {peer}: {r}{}",
                if suppressed > 0 { format!(" ({suppressed} more since the last line)") } else { String::new() }
            );
        }
    }
    failure
}

/// Copies until either side ends or the connection is `superseded` (made under a mesh CA whose
/// grace period is over): then the plaintext side is reset and the TLS side dropped without
/// close_notify, so neither end mistakes the cut for an orderly end. `Ok(true)`: superseded.
pub async fn copy_until_superseded<A, B>(
    a: &mut A,
    b: &mut B,
    shared: &Shared,
    counters: copy::Counters<'_>,
    superseded: impl std::future::Future<Output = ()>,
) -> Result<bool, CopyError>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::select! {
        r = copy::bidirectional(a, b, shared.timeouts.idle, counters) => r.map(|_| false),
        () = superseded => Ok(true),
    }
}

/// Counts and logs a connection closed by [`copy_until_superseded`], resetting its plaintext side.
pub fn superseded(plain: &tokio::net::TcpStream, route: &Route, peer: impl FnOnce() -> String) {
    let _ = crate::sockopt::reset_on_close(plain);
    route.fail(Failure::Superseded);
    tracing::debug!(
        PODMESH_EVENT = "connection_superseded",
        route = %route.name,
        "connection of route {} with {} closed: made under a superseded mesh CA, grace over",
        route.name,
        peer()
    );
}

/// Ends a proxied connection whose copy failed. The plaintext socket is reset (SO_LINGER 0)
/// whatever the cause, so the app never reads an orderly end that the TLS peer did not send
/// (the TLS side is dropped without close_notify, so its peer learns the same). A failure
/// of the TLS stream itself (ended without close_notify, reset, bad record) is a truncation:
/// counted and logged with the peer's identity, which `peer` describes.
pub fn copy_failed(
    e: &CopyError,
    tls_side: Side,
    plain: &tokio::net::TcpStream,
    route: &Route,
    peer: impl FnOnce() -> String,
) {
    if let Err(err) = crate::sockopt::reset_on_close(plain) {
        tracing::warn!("cannot set SO_LINGER 0 on a plaintext socket of route {}: {err}", route.name);
    }
    if e.side() == Some(tls_side) {
        route.fail(Failure::Truncated);
        tracing::info!(
            PODMESH_EVENT = "tls_truncated",
            route = %route.name,
            peer = %peer(),
            "TLS stream of route {} ended without close_notify ({e}); plaintext side reset",
            route.name
        );
    } else {
        tracing::debug!("connection of route {} ended: {e}; plaintext side reset", route.name);
    }
}
