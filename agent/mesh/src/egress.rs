//! Egress: plaintext from the app on a 127.x address, mTLS originated to the remote.
//!
//! The remote must prove the identity its entry expects (by default: the target host as a
//! SAN; see [`crate::identity`]) in the handshake, before any byte of the app is sent: a
//! host that redirects the connection to another workload of the mesh gets an alert.

use crate::{
    accept::{accept_loop, Gate},
    conn::{self, connect_upstream, Active, Shared},
    copy,
    limits::Ticket,
    metrics::{Failure, Route},
    rotation::Peer,
    sockopt,
};
use rustls_pki_types::ServerName;
use std::{net::SocketAddr, sync::Arc};
use tokio::net::{TcpListener, TcpStream};

/// Where one egress entry goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or IP address of the remote (as configured).
    pub host: String,
    pub port: u16,
    /// Index of the entry in the plan: its client configuration in [`crate::tls::TlsConfigs`].
    pub entry: usize,
    /// TLS server name derived from `host`.
    pub server_name: ServerName<'static>,
}

/// Accepts until the proxy drains.
pub async fn serve(listener: TcpListener, target: Arc<Target>, route: Arc<Route>, shared: Arc<Shared>) {
    accept_loop(listener, shared.clone(), Gate::Connection, |app| {
        let (target, shared) = (target.clone(), shared.clone());
        Some((route.clone(), move |active: Active, permit: Ticket| async move {
            handle(app, &target, &shared, &active).await;
            drop(permit);
        }))
    })
    .await
}

async fn handle(mut app: TcpStream, target: &Target, shared: &Shared, active: &Active) {
    let route = active.route();
    let _ = sockopt::tune_accepted(&app);
    let remote = match dial(target, shared).await {
        Ok(s) => s,
        Err(e) => {
            route.fail(Failure::Upstream);
            tracing::debug!("egress to {}:{}: {e}", target.host, target.port);
            return;
        }
    };
    let stamp = shared.retirement.stamp();
    let current = shared.tls.borrow().clone();
    let Some(config) = current.egress_client(target.entry).cloned() else {
        // Every entry of the plan has a configuration: a missing one is a bug, never a pass.
        route.fail(Failure::Protocol);
        tracing::error!("egress entry {} has no TLS configuration; connection refused", route.name);
        return;
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = connector.connect(target.server_name.clone(), copy::ReadAhead::new(remote));
    let mut tls = match tokio::time::timeout(shared.timeouts.handshake, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            conn::handshake_failed(route, &e, &format!("{}:{}", target.host, target.port));
            tracing::debug!("egress handshake with {}:{} failed: {e}", target.host, target.port);
            return;
        }
        Err(_) => {
            route.fail(Failure::HandshakeTimeout);
            return;
        }
    };
    if route.count_handshake(tls.get_ref().1.handshake_kind()) {
        // A resumed session presents no certificate: check the one it was issued to.
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let now = rustls_pki_types::UnixTime::now();
        if let Err(e) = current.recheck_server(target.entry, chain, &target.server_name, now) {
            let e = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            conn::handshake_failed(route, &e, &format!("{}:{}", target.host, target.port));
            tracing::debug!("egress resumed session with {}:{} rejected: {e}", target.host, target.port);
            return;
        }
    }
    drop(current);
    route.proxied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counters = copy::Counters { a_to_b: &route.bytes_up, b_to_a: &route.bytes_down };
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let peer = Peer::Server {
        entry: target.entry,
        chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
        name: target.server_name.clone(),
    };
    let superseded = stamp.superseded(peer, shared.tls.clone());
    let describe = |tls: &tokio_rustls::client::TlsStream<_>| {
        format!("{} at {}:{}", crate::tls::peer_identity(tls.get_ref().1.peer_certificates()), target.host, target.port)
    };
    match conn::copy_until_superseded(&mut app, &mut tls, shared, counters, superseded).await {
        Ok(false) => {}
        Ok(true) => conn::superseded(&app, route, || describe(&tls)),
        Err(e) => conn::copy_failed(&e, copy::Side::B, &app, route, || describe(&tls)),
    }
}

/// Resolves the remote (IP literals skip DNS) and connects to the first address that
/// answers, all within the connect timeout.
async fn dial(target: &Target, shared: &Shared) -> std::io::Result<TcpStream> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return connect_upstream(SocketAddr::new(ip, target.port), shared).await;
    }
    let resolve = tokio::net::lookup_host((host, target.port));
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(shared.timeouts.connect, resolve).await {
        Ok(r) => r?.collect(),
        Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("resolving {host} timed out"))),
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} resolved to no address"));
    for addr in addrs {
        match connect_upstream(addr, shared).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
