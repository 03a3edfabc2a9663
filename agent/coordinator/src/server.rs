//! HTTPS transport: rustls termination, axum routing, limits, timeouts, rejection logging,
//! graceful shutdown.

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
use std::net::SocketAddr;
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
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
struct AppState {
    coordinator: Arc<Coordinator>,
    limits: Limits,
}

/// Peer address, attached to each request for the log.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

fn peer_of(req: &Request) -> String {
    req.extensions().get::<Peer>().map(|p| p.0.to_string()).unwrap_or_else(|| "-".into())
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The 4xx answer plus its single log line.
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
    let status = StatusCode::from_u16(rejection.reason.status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &ErrorBody { reason: rejection.reason, detail: rejection.detail })
}

fn respond<T: serde::Serialize>(endpoint: &str, peer: &str, result: Result<T, Rejection>) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(rejection) => reject(endpoint, peer, rejection),
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
    respond(api::NONCE_PATH, &peer_of(&req), app.coordinator.nonce())
}

async fn certificate(State(app): State<AppState>, req: Request) -> Response {
    let peer = peer_of(&req);
    let body = match read_body(req.into_body(), app.limits.body_bytes).await {
        Ok(body) => body,
        Err(rejection) => return reject(api::CERTIFICATE_PATH, &peer, rejection),
    };
    let coordinator = app.coordinator.clone();
    respond(api::CERTIFICATE_PATH, &peer, blocking(move || coordinator.issue(&body)).await)
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
    let app = AppState { coordinator, limits };
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
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.handshake_timeout);
    let builder = Arc::new(builder);
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
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
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
