//! HTTPS transport: rustls termination, axum routing, limits, timeouts, rejection logging,
//! graceful shutdown.
//!
//! Unauthenticated clients get bounded resources only: a connection slot (in total and per
//! source address, taken at accept, before any TLS), a TLS-handshake deadline, a deadline for
//! each request's headers (also between keep-alive requests), HTTP/1.1 only (no HTTP/2 streams
//! to multiply a connection), a whole-request deadline, and a place in the bounded
//! verification pool ([`crate::admission`]). Refusals that a flood repeats are logged at most
//! once a second with the count folded in.

use crate::admission::{ConnLimiter, LogThrottle, VerifyPool};
use crate::service::Coordinator;
use crate::verify::Rejection;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pki::{LeafRequest, PublicKeyInput, RootCa, SubjectAltNames};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wire::api::{self, ErrorBody, Reason};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("coordinator TLS certificate: {0}")]
    Certificate(String),
    #[error("coordinator TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body_bytes: usize,
    pub request_timeout: Duration,
    pub handshake_timeout: Duration,
    /// For each request's headers, counted from when the server waits for them (so also
    /// bounds an idle keep-alive connection).
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub verify_workers: usize,
    pub verify_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_source: 64,
            verify_workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            verify_queue: 64,
        }
    }
}

#[derive(Clone)]
struct AppState {
    coordinator: Arc<Coordinator>,
    limits: Limits,
    verify: Arc<VerifyPool>,
    /// Repeated refusals (429/503) of a flood: one line a second.
    throttle: Arc<LogThrottle>,
}

/// Peer address, attached to each request for the log.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

fn peer_of(req: &Request) -> String {
    req.extensions().get::<Peer>().map(|p| p.0.to_string()).unwrap_or_else(|| "-".into())
}

fn peer_ip(req: &Request) -> IpAddr {
    req.extensions().get::<Peer>().map(|p| p.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The 4xx/5xx answer plus its single log line.
fn reject(endpoint: &str, peer: &str, rejection: Rejection) -> Response {
    tracing::warn!(
        PODMESH_EVENT = "coordinator_request_rejected",
        endpoint,
        peer,
        reason = rejection.reason.as_str(),
        "rejected {endpoint} from {peer}: {}: {}",
        rejection.reason,
        rejection.detail
    );
    answer(rejection)
}

fn answer(rejection: Rejection) -> Response {
    let status = StatusCode::from_u16(rejection.reason.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &ErrorBody { reason: rejection.reason, detail: rejection.detail });
    if let Some(after) = rejection.retry_after {
        // Whole seconds (RFC 9110), rounded up and never 0: 0 invites a retry storm.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response.headers_mut().insert(header::RETRY_AFTER, secs.max(1).into());
    }
    response
}

fn respond<T: serde::Serialize>(endpoint: &str, peer: &str, result: Result<T, Rejection>) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(rejection) => reject(endpoint, peer, rejection),
    }
}

/// [`respond`], but refusals a flood repeats (429/503) log one line a second, with the count.
fn respond_throttled<T: serde::Serialize>(
    app: &AppState,
    endpoint: &str,
    peer: &str,
    result: Result<T, Rejection>,
) -> Response {
    match result {
        Err(rejection) if rejection.retry_after.is_some() => match app.throttle.due() {
            Some(folded) => {
                tracing::warn!(
                    PODMESH_EVENT = "coordinator_request_rejected",
                    endpoint,
                    peer,
                    reason = rejection.reason.as_str(),
                    folded,
                    "rejected {endpoint} from {peer}: {}: {} ({folded} similar refusals since the last line)",
                    rejection.reason,
                    rejection.detail
                );
                answer(rejection)
            }
            None => answer(rejection),
        },
        other => respond(endpoint, peer, other),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, Rejection> {
    axum::body::to_bytes(body, limit).await.map(|b| b.to_vec()).map_err(|e| {
        Rejection::new(Reason::BodyTooLarge, format!("request body unreadable or larger than {limit} bytes: {e}"))
    })
}

/// Runs blocking (CPU-bound) coordinator work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Rejection> + Send + 'static,
) -> Result<T, Rejection> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Rejection::new(Reason::Internal, format!("worker failed: {e}"))))
}

async fn nonce(State(app): State<AppState>, req: Request) -> Response {
    let result = app.coordinator.nonce(peer_ip(&req));
    respond_throttled(&app, api::NONCE_PATH, &peer_of(&req), result)
}

async fn certificate(State(app): State<AppState>, req: Request) -> Response {
    let peer = peer_of(&req);
    let body = match read_body(req.into_body(), app.limits.body_bytes).await {
        Ok(body) => body,
        Err(rejection) => return reject(api::CERTIFICATE_PATH, &peer, rejection),
    };
    let coordinator = app.coordinator.clone();
    let result = app.verify.run(move || coordinator.issue(&body)).await;
    respond_throttled(&app, api::CERTIFICATE_PATH, &peer, result)
}

async fn ca(State(app): State<AppState>, req: Request) -> Response {
    respond(api::CA_PATH, &peer_of(&req), Ok(app.coordinator.ca()))
}

async fn manifest_get(State(app): State<AppState>, req: Request) -> Response {
    respond(api::MANIFEST_PATH, &peer_of(&req), app.coordinator.manifest())
}

async fn manifest_put(State(app): State<AppState>, req: Request) -> Response {
    let peer = peer_of(&req);
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = match read_body(req.into_body(), app.limits.body_bytes).await {
        Ok(body) => body,
        Err(rejection) => return reject(api::MANIFEST_PATH, &peer, rejection),
    };
    let coordinator = app.coordinator.clone();
    let result = blocking(move || coordinator.set_manifest(authorization.as_deref(), &body)).await;
    if let Ok(m) = &result {
        tracing::info!(PODMESH_EVENT = "coordinator_manifest_set", peer, generation = m.generation, manifest_sha256 = %m.manifest_sha256, "manifest set by the owner");
    }
    respond(api::MANIFEST_PATH, &peer, result)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    reject(&path, &peer_of(&req), Rejection::new(Reason::NotFound, format!("no endpoint {path}")))
}

async fn method_not_allowed(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let detail = format!("method {} not allowed on {path}", req.method());
    reject(&path, &peer_of(&req), Rejection::new(Reason::MethodNotAllowed, detail))
}

async fn with_timeout(State(app): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path().to_owned();
    let peer = peer_of(&req);
    match tokio::time::timeout(app.limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => reject(
            &path,
            &peer,
            Rejection::new(Reason::Timeout, format!("request not completed within {:?}", app.limits.request_timeout)),
        ),
    }
}

pub fn router(coordinator: Arc<Coordinator>, limits: Limits) -> Router {
    let generations = coordinator.generations();
    let app = AppState {
        coordinator,
        limits,
        verify: Arc::new(VerifyPool::new(limits.verify_workers, limits.verify_queue)),
        throttle: Arc::new(LogThrottle::new(Duration::from_secs(1))),
    };
    Router::new()
        .route(api::NONCE_PATH, post(nonce))
        .route(api::CERTIFICATE_PATH, post(certificate))
        .route(api::CA_PATH, get(ca))
        .route(api::MANIFEST_PATH, get(manifest_get).put(manifest_put))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), with_timeout))
        // After the timeout layer: the long poll holds longer than a request may take.
        .merge(crate::watch::router(generations))
        .with_state(app)
}

/// The coordinator's own TLS identity: a fresh key, certificate under the root for `sans`;
/// the chain sent is leaf + root so clients can pin the root by fingerprint.
pub fn tls_config(root: &RootCa, sans: &[String]) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let key = pki::leaf::new_workload_key().map_err(|e| ServerError::Certificate(e.to_string()))?;
    let names = SubjectAltNames::parse(sans).map_err(|e| ServerError::Certificate(e.to_string()))?;
    let input = PublicKeyInput::SpkiDer(pki::leaf::spki_of(&key));
    let issued = root
        .issue_server(&LeafRequest {
            public_key: &input,
            common_name: "podmesh coordinator",
            sans: &names,
            lifetime: Duration::from_secs(365 * 24 * 3600),
            claims: None,
        })
        .map_err(|e| ServerError::Certificate(e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|e| ServerError::Certificate(e.to_string()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![issued.leaf_der, root.cert_der().clone()], key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves until `shutdown` resolves, then stops accepting and drains in-flight requests
/// for at most `limits.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only: ALPN offers nothing else, and this refuses an HTTP/2 preface sent anyway.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_headers(64);
    let builder = Arc::new(builder);
    let connections = ConnLimiter::new(limits.max_connections, limits.max_connections_per_source);
    let refusals = LogThrottle::new(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(PODMESH_EVENT = "coordinator_accept_failed", error = %e, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Refused before a byte is read: closing at once keeps the refusal cheaper than the flood.
        let slot = match connections.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                if let Some(folded) = refusals.due() {
                    tracing::warn!(
                        PODMESH_EVENT = "coordinator_connection_refused",
                        %peer,
                        folded,
                        "refused a connection from {peer}: {refusal} ({folded} similar refusals since the last line)"
                    );
                }
                drop(tcp);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(PODMESH_EVENT = "coordinator_tls_failed", %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(PODMESH_EVENT = "coordinator_tls_failed", %peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router.layer(axum::Extension(Peer(peer))));
            let conn = builder.serve_connection(TokioIo::new(tls), service).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(PODMESH_EVENT = "coordinator_connection_error", %peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!(
        PODMESH_EVENT = "coordinator_draining",
        connections = graceful.count(),
        "stopped accepting; draining connections"
    );
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            PODMESH_EVENT = "coordinator_drain_timeout",
            "connections still open after {:?}; closing them",
            limits.drain_timeout
        );
    }
}
