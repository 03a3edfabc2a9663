//! A minimal HTTPS JSON client for the coordinator: one connection per request (attestation
//! is rare), a hard deadline, a body size limit, and errors that say which step failed.

use super::endpoint::Endpoint;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Responses larger than this are not a coordinator talking.
const MAX_BODY: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {addr}: {source}")]
    Tls { addr: String, source: std::io::Error },
    #[error("HTTP exchange with {addr}: {reason}")]
    Http { addr: String, reason: String },
    #[error("{addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("coordinator host {0:?} is not a valid TLS server name")]
    ServerName(String),
}

impl HttpError {
    /// Nothing listened or answered: what `--open-without-coordinator` is about.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HttpError::Connect { .. } | HttpError::Timeout { .. })
    }
}

pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// One request over a fresh TLS connection verified by `verifier`.
pub async fn request(
    endpoint: &Endpoint,
    verifier: Arc<dyn ServerCertVerifier>,
    method: Method,
    path: &str,
    json_body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let addr = endpoint.to_string();
    match tokio::time::timeout(timeout, exchange(endpoint, &addr, verifier, method, path, json_body)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout { addr, secs: timeout.as_secs().max(1) }),
    }
}

async fn exchange(
    endpoint: &Endpoint,
    addr: &str,
    verifier: Arc<dyn ServerCertVerifier>,
    method: Method,
    path: &str,
    json_body: Option<Vec<u8>>,
) -> Result<Response, HttpError> {
    let http = |reason: String| HttpError::Http { addr: addr.to_owned(), reason };
    let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| HttpError::ServerName(endpoint.host.clone()))?;
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| HttpError::Connect { addr: addr.to_owned(), source })?;
    let _ = tcp.set_nodelay(true);
    let config = rustls::ClientConfig::builder_with_provider(super::coordinator_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| http(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| HttpError::Tls { addr: addr.to_owned(), source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header(header::HOST, addr).header(header::ACCEPT, "application/json");
    if json_body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(json_body.unwrap_or_default()))).map_err(|e| http(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| http(format!("reading the response body: {e}")))?
        .to_bytes();
    conn.abort();
    Ok(Response { status, body })
}
