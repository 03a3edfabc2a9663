//! Ingress: TPROXY'd connections terminated with (m)TLS, forwarded in plaintext to the app.
//!
//! The accepted socket's local address is the original destination (the app's port). The
//! upstream connection is opened only after the handshake completed: with TLS 1.3 a client
//! without a valid certificate sees its own handshake finish before the alert arrives, and
//! must never have caused a connection to the app.
//!
//! The original destination must be an address of the pod: the upstream socket is bound to
//! it before the handshake, and a foreign one ends the connection with a reset, a
//! `PODMESH_EVENT=ingress_refused` line and `podmesh_ingress_refused_total{destination}`
//! (see [`crate::local`]). The interception table never sends such a connection here; this
//! holds even if it did.

use crate::{
    accept::{accept_loop, Gate},
    conn::{self, Active, Shared},
    copy,
    limits::Ticket,
    local::LocalError,
    metrics::{Failure, Route},
    rotation::Peer,
    sockopt,
};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::{TcpListener, TcpStream};

/// Which of the two ingress listeners this is.
pub enum Listener {
    /// Client certificate required; serves every intercepted port not listed otherwise.
    /// `mtls` entries have their own route (and, with an allow-list, their own TLS config).
    Mtls { route: Arc<Route>, entries: Vec<(u16, Arc<Route>)> },
    /// `#false` entries: TLS without client certificate, one route per entry port.
    TlsOnly { routes: Vec<(u16, Arc<Route>)> },
}

impl Listener {
    fn route_for(&self, port: u16) -> Option<&Arc<Route>> {
        match self {
            Listener::Mtls { route, entries } => {
                Some(entries.iter().find(|(p, _)| *p == port).map_or(route, |(_, r)| r))
            }
            Listener::TlsOnly { routes } => routes.iter().find(|(p, _)| *p == port).map(|(_, r)| r),
        }
    }

    fn fallback(&self) -> Option<&Arc<Route>> {
        match self {
            Listener::Mtls { route, .. } => Some(route),
            Listener::TlsOnly { routes } => routes.first().map(|(_, r)| r),
        }
    }
}

/// Accepts until the proxy drains.
pub async fn serve(listener: TcpListener, kind: Arc<Listener>, shared: Arc<Shared>) {
    accept_loop(listener, shared.clone(), Gate::Handshake, |stream| {
        let orig = stream.local_addr().ok()?;
        // The dual-stack listener reports IPv4 destinations as v4-mapped IPv6; the app may
        // listen on 0.0.0.0 only, so connect upstream over real IPv4. (Real IPv6 keeps its
        // scope id: a link-local destination needs it.)
        let orig = match orig {
            SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
                SocketAddr::new(orig.ip().to_canonical(), orig.port())
            }
            other => other,
        };
        if shared.own_ports.contains(&orig.port()) {
            kind.fallback()?.fail(Failure::SelfLoop);
            return None; // dropped: a connection to our own port would loop through us
        }
        let Some(route) = kind.route_for(orig.port()).cloned() else {
            // Only nft decides which port lands here; anything else is refused, never served
            // without the client authentication it should have had.
            kind.fallback()?.fail(Failure::WrongListener);
            return None;
        };
        let (kind, shared) = (kind.clone(), shared.clone());
        Some((route, move |active: Active, ticket: Ticket| async move {
            handle(stream, orig, &kind, &shared, &active, ticket).await
        }))
    })
    .await
}

async fn handle(
    stream: TcpStream,
    orig: SocketAddr,
    kind: &Listener,
    shared: &Shared,
    active: &Active,
    ticket: Ticket,
) {
    let route = active.route();
    let _ = sockopt::tune_accepted(&stream);
    // Before any TLS work: a destination that is not ours is never served.
    let upstream = match conn::local_upstream(orig, shared) {
        Ok(socket) => socket,
        Err(e) => return refuse(&stream, orig, route, e),
    };
    let client = stream.peer_addr().ok();
    let stamp = shared.retirement.stamp();
    let current = shared.tls.borrow().clone();
    // The original destination picks the port's rule before the ClientHello is read.
    let config = match kind {
        Listener::Mtls { .. } => current.mtls_server_for(orig.port()).clone(),
        Listener::TlsOnly { .. } => current.tls_server.clone(),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut tls =
        match tokio::time::timeout(shared.timeouts.handshake, acceptor.accept(copy::ReadAhead::new(stream))).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let from = client.map_or_else(|| "?".to_string(), |a| a.to_string());
                conn::handshake_failed(route, &e, &from);
                tracing::debug!("ingress handshake for {orig} failed: {e}");
                return;
            }
            Err(_) => {
                route.fail(Failure::HandshakeTimeout);
                return;
            }
        };
    let resumed = route.count_handshake(tls.get_ref().1.handshake_kind());
    if resumed && matches!(kind, Listener::Mtls { .. }) {
        // A resumed session presents no certificate: check the one it was issued to.
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        if let Err(e) = current.recheck_client(orig.port(), chain, rustls_pki_types::UnixTime::now()) {
            let from = client.map_or_else(|| "?".to_string(), |a| a.to_string());
            let e = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            if conn::handshake_failed(route, &e, &from) != Failure::IdentityRefused {
                tracing::debug!("ingress resumed session for {orig} rejected: {e}");
            }
            return;
        }
    }
    drop(current);
    // Authenticated now: the handshake slot becomes a connection permit, held to the end.
    let Some(_permit) = ticket.established(&shared.limits) else {
        route.fail(Failure::Limit);
        return;
    };
    let mut upstream = match conn::connect(upstream, orig, shared).await {
        Ok(s) => s,
        Err(e) => {
            route.fail(Failure::Upstream);
            tracing::debug!("ingress upstream {orig}: {e}");
            return;
        }
    };
    route.proxied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counters = copy::Counters { a_to_b: &route.bytes_up, b_to_a: &route.bytes_down };
    let peer = match (kind, tls.get_ref().1.peer_certificates()) {
        (Listener::Mtls { .. }, Some(chain)) => {
            Peer::Client { port: orig.port(), chain: chain.iter().map(|c| c.clone().into_owned()).collect() }
        }
        _ => Peer::None,
    };
    let superseded = stamp.superseded(peer, shared.tls.clone());
    let describe = |tls: &tokio_rustls::server::TlsStream<_>| {
        let from = client.map_or_else(|| "?".to_string(), |a| a.to_string());
        format!("{} from {from} to {orig}", crate::tls::peer_identity(tls.get_ref().1.peer_certificates()))
    };
    match conn::copy_until_superseded(&mut tls, &mut upstream, shared, counters, superseded).await {
        Ok(false) => {}
        Ok(true) => conn::superseded(&upstream, route, || describe(&tls)),
        Err(e) => conn::copy_failed(&e, copy::Side::A, &upstream, route, || describe(&tls)),
    }
}

/// Ends a connection whose upstream cannot be opened with a reset (the client must not take
/// it for an orderly end), counting and logging a foreign destination.
fn refuse(stream: &TcpStream, orig: SocketAddr, route: &Route, e: LocalError) {
    let peer = stream.peer_addr().map_or_else(|_| "?".to_string(), |p| p.to_string());
    match e {
        LocalError::NotLocal(_) => {
            route.refuse(orig);
            tracing::warn!(
                PODMESH_EVENT = "ingress_refused",
                destination = %orig,
                peer = %peer,
                route = %route.name,
                "ingress connection from {peer} refused: {e} (never forwarded)"
            );
        }
        _ => {
            route.fail(Failure::Upstream);
            tracing::warn!(PODMESH_EVENT = "ingress_upstream_failed", destination = %orig, peer = %peer, "{e}");
        }
    }
    let _ = sockopt::reset_on_close(stream);
}
