//! HTTPS client for the coordinator API (used by `podmesh attest`, the CLI, tests, benchmarks).
//! One request per TLS connection: attestation is rare, simplicity wins.

use crate::api::{
    self, CaResponse, CertificateRequest, CertificateResponse, ErrorBody, GenerationResponse, ManifestResponse,
    NonceResponse, Reason,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const MAX_RESPONSE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("coordinator URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("coordinator trust: {0}")]
    Trust(String),
    #[error("connecting to the coordinator at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("coordinator at {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("talking to the coordinator at {addr}: {why}")]
    Http { addr: String, why: String },
    #[error("coordinator rejected the request ({status}): {reason}: {detail}")]
    Rejected { status: u16, reason: Reason, detail: String, retry_after: Option<Duration> },
    #[error("coordinator answered {status} with an unexpected body: {body}")]
    Unexpected { status: u16, body: String },
}

/// How the client authenticates the coordinator.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The coordinator's root CA certificate (PEM).
    RootCaPem(String),
    /// SHA-256 of the root CA certificate's DER; the coordinator sends its root in the handshake.
    RootFingerprint([u8; 32]),
    /// Accept the root the coordinator presents (chain and name are still checked against it).
    /// Only for bootstrapping; callers must log it loudly.
    TrustOnFirstUse,
}

#[derive(Clone)]
pub struct Client {
    addr: String,
    host: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    timeout: Duration,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Pins the root by fingerprint, or takes the presented root (TOFU), then runs normal WebPKI checks.
#[derive(Debug)]
struct PresentedRootVerifier {
    fingerprint: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PresentedRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = match self.fingerprint {
            Some(fp) => intermediates.iter().find(|c| Sha256::digest(c.as_ref()).as_slice() == fp),
            None => intermediates.last(),
        }
        .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots.add(root.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl Client {
    /// `url` is `https://HOST:PORT` (a trailing `/` is fine).
    pub fn new(url: &str, trust: ServerTrust) -> Result<Self, ClientError> {
        let bad = |why| ClientError::Url { url: url.to_owned(), why };
        let rest = url.strip_prefix("https://").ok_or_else(|| bad("must start with https://"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("must be https://HOST:PORT without a path"));
        }
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("needs an explicit :PORT"))?;
        port.parse::<u16>().map_err(|_| bad("port is not a number 0..65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| bad("host is neither a DNS name nor an IP"))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Trust(e.to_string()))?;
        let config = match trust {
            ServerTrust::RootCaPem(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in crate::pem::certificates("coordinator root CA", &pem)
                    .map_err(|e| ClientError::Trust(e.to_string()))?
                {
                    roots.add(cert).map_err(|e| ClientError::Trust(format!("coordinator root CA: {e}")))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            ServerTrust::RootFingerprint(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PresentedRootVerifier {
                    fingerprint: Some(fp),
                    provider: provider(),
                }))
                .with_no_client_auth(),
            ServerTrust::TrustOnFirstUse => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PresentedRootVerifier {
                    fingerprint: None,
                    provider: provider(),
                }))
                .with_no_client_auth(),
        };
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            addr: format!("{}:{port}", if host.contains(':') { format!("[{host}]") } else { host.clone() }),
            host,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            timeout: Duration::from_secs(30),
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub async fn nonce(&self) -> Result<NonceResponse, ClientError> {
        self.call("POST", api::NONCE_PATH, None, None).await
    }

    pub async fn certificate(&self, request: &CertificateRequest) -> Result<CertificateResponse, ClientError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ClientError::Http { addr: self.addr.clone(), why: e.to_string() })?;
        self.call("POST", api::CERTIFICATE_PATH, Some(body), None).await
    }

    pub async fn ca(&self) -> Result<CaResponse, ClientError> {
        self.call("GET", api::CA_PATH, None, None).await
    }

    pub async fn manifest(&self) -> Result<ManifestResponse, ClientError> {
        self.call("GET", api::MANIFEST_PATH, None, None).await
    }

    /// Long poll on a connection of its own: returns once the generation differs from
    /// `after`, or after [`api::GENERATION_HOLD`] with it unchanged. Waits that long plus this
    /// client's timeout. [`GenerationWatch`] keeps the connection between polls.
    pub async fn generation_after(&self, after: u64) -> Result<GenerationResponse, ClientError> {
        GenerationWatch::new(self.clone()).after(after).await
    }

    pub async fn set_manifest(
        &self,
        owner_token: &str,
        manifest_json: Vec<u8>,
    ) -> Result<ManifestResponse, ClientError> {
        self.call("PUT", api::MANIFEST_PATH, Some(manifest_json), Some(owner_token)).await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        self.call_within(self.timeout, method, path, body, token).await
    }

    async fn call_within<T: serde::de::DeserializeOwned>(
        &self,
        timeout: Duration,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let (status, retry_after, bytes) =
            tokio::time::timeout(timeout, self.raw_inner(method, path, body.unwrap_or_default(), &headers))
                .await
                .map_err(|_| ClientError::Timeout { addr: self.addr.clone(), timeout })??;
        decode(status, retry_after, &bytes)
    }

    /// A TLS connection to the coordinator with HTTP/1.1 on it; the connection lives until the
    /// returned sender is dropped.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let http = |why: String| ClientError::Http { addr: self.addr.clone(), why };
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::Connect { addr: self.addr.clone(), source })?;
        let tls = self.connector.connect(self.server_name.clone(), tcp).await.map_err(|e| http(format!("TLS: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| http(e.to_string()))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One request on `sender`: (status, `Retry-After` if sent, body).
    async fn send(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Option<Duration>, Vec<u8>), ClientError> {
        let http = |why: String| ClientError::Http { addr: self.addr.clone(), why };
        sender.ready().await.map_err(|e| http(e.to_string()))?;
        let mut request = hyper::Request::builder().method(method).uri(path).header("host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        // Only the delay-seconds form: the coordinator never sends an HTTP date.
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| http(format!("reading the response: {e}")))?
            .to_bytes();
        Ok((status, retry_after, bytes.to_vec()))
    }

    /// One raw request: (status, body). For tests and tools.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let (status, _, bytes) = tokio::time::timeout(self.timeout, self.raw_inner(method, path, body, headers))
            .await
            .map_err(|_| ClientError::Timeout { addr: self.addr.clone(), timeout: self.timeout })??;
        Ok((status, bytes))
    }

    async fn raw_inner(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Option<Duration>, Vec<u8>), ClientError> {
        let mut sender = self.connect().await?;
        self.send(&mut sender, method, path, body, headers).await
    }
}

/// A 200 body as `T`, anything else as the coordinator's rejection.
fn decode<T: serde::de::DeserializeOwned>(
    status: u16,
    retry_after: Option<Duration>,
    bytes: &[u8],
) -> Result<T, ClientError> {
    let unexpected =
        || ClientError::Unexpected { status, body: String::from_utf8_lossy(bytes).chars().take(200).collect() };
    if status == 200 {
        return serde_json::from_slice(bytes).map_err(|_| unexpected());
    }
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(e) => Err(ClientError::Rejected { status, reason: e.reason, detail: e.detail, retry_after }),
        Err(_) => Err(unexpected()),
    }
}

/// The long poll of `GET /v1/generation` on one kept-alive connection: a pod pays one TLS
/// handshake per connection, not one per hold (10 000 pods re-polling every 50 s would
/// otherwise cost the coordinator 200 handshakes per second). Any error drops the connection;
/// the next poll opens a new one.
pub struct GenerationWatch {
    client: Client,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl GenerationWatch {
    pub fn new(client: Client) -> Self {
        Self { client, conn: None }
    }

    /// See [`Client::generation_after`].
    pub async fn after(&mut self, after: u64) -> Result<GenerationResponse, ClientError> {
        let timeout = self.client.timeout + api::GENERATION_HOLD;
        let result = match tokio::time::timeout(timeout, self.poll(after)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { addr: self.client.addr.clone(), timeout }),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn poll(&mut self, after: u64) -> Result<GenerationResponse, ClientError> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.client.connect().await?,
        };
        let path = format!("{}?after={after}", api::GENERATION_PATH);
        let (status, retry_after, bytes) = self.client.send(&mut sender, "GET", &path, Vec::new(), &[]).await?;
        self.conn = Some(sender);
        decode(status, retry_after, &bytes)
    }
}
