//! TLS material from the tls dir and the rustls configurations built from it.
//!
//! The tls dir holds `mesh-ca.pem` (trust anchor of the mesh), `certChain.pem` (our mesh
//! certificate followed by the intermediate CA) and `key.pem`. Loading validates everything
//! a peer will check: the key matches the certificate, and the chain verifies against the
//! mesh CA both as a client certificate and as a server certificate. Only then are the four
//! configurations built: mTLS server, TLS-only server, and the egress client (lenient or
//! strict about the server's name).
//!
//! Protocols: TLS 1.3 and TLS 1.2 with ECDHE + AEAD suites only; AES-GCM first (AES-NI),
//! X25519 first. Servers issue stateless tickets and clients keep sessions, so repeated
//! connections resume instead of paying a full handshake.

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::{aws_lc_rs, CryptoProvider},
    server::{danger::ClientCertVerifier, WebPkiClientVerifier},
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

/// File names inside the tls dir (Contrast-compatible).
pub const MESH_CA_FILE: &str = "mesh-ca.pem";
pub const CHAIN_FILE: &str = "certChain.pem";
pub const KEY_FILE: &str = "key.pem";

/// Why TLS material was rejected. One line naming the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: contains no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: contains no private key")]
    NoKey { path: PathBuf },
    #[error("{path}: the private key does not match the certificate in {chain}: {reason}")]
    KeyMismatch { path: PathBuf, chain: PathBuf, reason: String },
    #[error("{path}: the private key is not usable: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{chain}: the chain does not verify against {ca} as a {role} certificate: {reason}")]
    Untrusted { chain: PathBuf, ca: PathBuf, role: &'static str, reason: String },
    #[error("{path}: cannot use the mesh CA as trust anchor: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("cannot build the {what} TLS configuration: {reason}")]
    Config { what: &'static str, reason: String },
}

/// The crypto provider of every configuration: aws-lc-rs, ECDHE + AEAD suites only.
pub fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::{cipher_suite as cs, kx_group};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1, kx_group::X25519MLKEM768],
        ..aws_lc_rs::default_provider()
    })
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Parsed PEM contents of the tls dir, not yet validated.
pub struct Material {
    pub mesh_ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Material {
    /// Reads and parses the three files of `dir`.
    pub fn read(dir: &Path) -> Result<Self, TlsError> {
        let ca_path = dir.join(MESH_CA_FILE);
        let chain_path = dir.join(CHAIN_FILE);
        let key_path = dir.join(KEY_FILE);
        let mesh_ca = certs(&ca_path, &read(&ca_path)?)?;
        let chain = certs(&chain_path, &read(&chain_path)?)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: key_path.clone() },
            other => TlsError::Pem { path: key_path.clone(), reason: other.to_string() },
        })?;
        Ok(Self { mesh_ca, chain, key })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The validated configurations every handshake borrows (published on a watch channel).
pub struct TlsConfigs {
    /// Ingress, client certificate required (chain to the mesh CA).
    pub mtls_server: Arc<ServerConfig>,
    /// Ingress `#false` entries: no client certificate.
    pub tls_server: Arc<ServerConfig>,
    /// Egress: verifies the server's chain against the mesh CA, ignores its name.
    pub client: Arc<ClientConfig>,
    /// Egress strict mode: also checks the server's SAN against the remote host.
    pub client_strict: Arc<ClientConfig>,
    /// Hex SHA-256-free identifier for logs: serial-ish prefix of the leaf DER length+tail.
    pub summary: String,
}

impl TlsConfigs {
    /// Loads `dir`, validates the material at time `now`, and builds the configurations.
    pub fn load(dir: &Path, now: UnixTime) -> Result<Self, TlsError> {
        Self::from_material(dir, Material::read(dir)?, now)
    }

    /// Validates `m` (file names from `dir`, for messages) and builds the configurations.
    pub fn from_material(dir: &Path, m: Material, now: UnixTime) -> Result<Self, TlsError> {
        let provider = provider();
        let ca_path = dir.join(MESH_CA_FILE);
        let chain_path = dir.join(CHAIN_FILE);
        let key_path = dir.join(KEY_FILE);

        let mut roots = RootCertStore::empty();
        for ca in &m.mesh_ca {
            roots.add(ca.clone()).map_err(|e| TlsError::BadCa { path: ca_path.clone(), reason: e.to_string() })?;
        }
        let roots = Arc::new(roots);

        let signing_key = provider
            .key_provider
            .load_private_key(m.key.clone_key())
            .map_err(|e| TlsError::BadKey { path: key_path.clone(), reason: e.to_string() })?;
        let certified = rustls::sign::CertifiedKey::new(m.chain.clone(), signing_key);
        certified.keys_match().map_err(|e| TlsError::KeyMismatch {
            path: key_path.clone(),
            chain: chain_path.clone(),
            reason: e.to_string(),
        })?;

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::BadCa { path: ca_path.clone(), reason: e.to_string() })?;
        let strict_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::BadCa { path: ca_path.clone(), reason: e.to_string() })?;
        let lenient_verifier = Arc::new(AnyNameVerifier(strict_verifier.clone()));

        // The peers run exactly these verifiers: check our own chain with them now.
        let (leaf, intermediates) = m.chain.split_first().ok_or(TlsError::NoCertificate { path: chain_path.clone() })?;
        let untrusted = |role, e: rustls::Error| TlsError::Untrusted {
            chain: chain_path.clone(),
            ca: ca_path.clone(),
            role,
            reason: e.to_string(),
        };
        client_verifier.verify_client_cert(leaf, intermediates, now).map_err(|e| untrusted("client", e))?;
        let any_name = ServerName::try_from("podmesh.invalid").map_err(|e| TlsError::Config {
            what: "validation",
            reason: e.to_string(),
        })?;
        lenient_verifier
            .verify_server_cert(leaf, intermediates, &any_name, &[], now)
            .map_err(|e| untrusted("server", e))?;

        let certified = Arc::new(certified);
        let mtls_server = server_config(provider.clone(), client_verifier, certified.clone(), "mTLS server")?;
        let tls_server = server_config(provider.clone(), WebPkiClientVerifier::no_client_auth(), certified.clone(), "TLS server")?;
        let client = client_config(provider.clone(), lenient_verifier, &m, "egress client")?;
        let client_strict = client_config(provider, strict_verifier, &m, "strict egress client")?;

        Ok(Self {
            mtls_server,
            tls_server,
            client,
            client_strict,
            summary: format!("{} certificate(s), leaf {} bytes", m.chain.len(), leaf.len()),
        })
    }
}

fn server_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ClientCertVerifier>,
    certified: Arc<rustls::sign::CertifiedKey>,
    what: &'static str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let err = |e: rustls::Error| TlsError::Config { what, reason: e.to_string() };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.ticketer = aws_lc_rs::Ticketer::new().map_err(err)?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    // One ticket per handshake is enough for a client that resumes once per connection.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    m: &Material,
    what: &'static str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let err = |e: rustls::Error| TlsError::Config { what, reason: e.to_string() };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
        .map_err(err)?;
    config.resumption = rustls::client::Resumption::in_memory_sessions(1024);
    Ok(Arc::new(config))
}

/// Verifies the chain against the mesh CA exactly like the WebPKI verifier, but accepts any
/// server name: mesh identity is "holds a certificate of this mesh", and Contrast-style
/// egress entries name peers by addresses that need not appear in their SANs.
#[derive(Debug)]
struct AnyNameVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // Name checks come last in webpki: the chain, validity and usage already passed.
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The server name for an egress remote: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
        .map_err(|e| TlsError::Config { what: "egress server name", reason: format!("{host:?}: {e}") })
}
