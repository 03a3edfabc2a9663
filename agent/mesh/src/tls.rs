//! TLS material from the tls dir and the rustls configurations built from it.
//!
//! The tls dir holds `mesh-ca.pem` (trust anchor of the mesh), `certChain.pem` (our mesh
//! certificate followed by the intermediate CA) and `key.pem`. Loading validates everything
//! a peer will check: the key matches the certificate, and the chain verifies against the
//! mesh CA both as a client certificate and as a server certificate. Only then are the
//! configurations built: the mTLS server (plus one per ingress `mtls` entry with an
//! allow-list), the TLS-only server, and one egress client per egress entry, each checking
//! the peer's identity in the handshake (see [`crate::identity`]).
//!
//! Protocols: TLS 1.3 and TLS 1.2 with ECDHE + AEAD suites only; AES-GCM first (AES-NI),
//! X25519MLKEM768 first ([`KeyExchange`]). Servers issue stateless tickets and clients keep
//! sessions, so repeated connections resume instead of paying a full handshake;
//! [`TlsPolicy`] turns that off, picks the TLS 1.3 suites and the key exchange
//! (`podmesh proxy --tls-resumption`, `--tls13-ciphers`, `--key-exchange`).
//!
//! Resumption and identity: a resumed TLS 1.3 handshake carries no certificates, so the
//! peer's chain is not verified again by rustls. Three bounds keep a resumed session from
//! outliving the identity it was issued to: tickets expire after [`MAX_TICKET_AGE`] on the
//! server side (enforced in [`BoundedTicketer`], not just advertised), every reload of the
//! material brings a new ticket key (a new mesh CA never honours old tickets), and the
//! ingress re-verifies the remembered client chain of a resumed session against the current
//! mesh CA at the current time and against the port's allow-list
//! ([`TlsConfigs::recheck_client`]), so an expired, foreign or no longer admitted certificate
//! cannot ride on a ticket; egress does the same for the server's chain and the entry's
//! identity rule ([`TlsConfigs::recheck_server`]).

use crate::identity::{AllowListVerifier, EgressIdentity, EgressRule, EgressVerifier, Rules};
use rustls::{
    client::{danger::ServerCertVerifier, WebPkiServerVerifier},
    crypto::{aws_lc_rs, CryptoProvider},
    server::{danger::ClientCertVerifier, WebPkiClientVerifier},
    ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// File names inside the tls dir (owned by [`crate::tls_dir`]).
pub use crate::tls_dir::{CERT_CHAIN_FILE as CHAIN_FILE, KEY_FILE, MESH_CA_FILE};

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
    #[error("TLS 1.3 cipher list {list:?}: {reason} (known: TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256)")]
    CipherList { list: String, reason: String },
    #[error("key exchange {value:?}: use classical, hybrid (X25519MLKEM768 preferred) or pq-only")]
    KeyExchange { value: String },
}

/// How long a session ticket can resume: the lifetime advertised to clients and enforced
/// when the server decrypts the ticket.
pub const MAX_TICKET_AGE: Duration = Duration::from_secs(3600);

/// TLS knobs of the proxy: resumption on/off, the TLS 1.3 suites in preference order, and
/// the key exchange.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsPolicy {
    /// Servers issue tickets and clients resume; off = a full mTLS handshake every time.
    pub resumption: bool,
    /// TLS 1.3 suites (rustls names), most preferred first; `None` = the built-in order.
    pub tls13_ciphers: Option<Vec<String>>,
    /// Which key exchange groups are offered and accepted.
    pub key_exchange: KeyExchange,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        Self { resumption: true, tls13_ciphers: None, key_exchange: KeyExchange::default() }
    }
}

/// Key exchange of every handshake, ingress and egress (`--key-exchange`).
///
/// The host records all traffic, so a quantum computer of the future must not open today's
/// sessions (harvest now, decrypt later): the default puts the hybrid X25519MLKEM768 first.
/// rustls lets the client's order decide, sends a hybrid and an X25519 key share together
/// (so a classical server costs no extra round trip), and a classical client (OpenSSL 3.0)
/// still gets X25519 from a hybrid server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyExchange {
    /// X25519, P-256, P-384 only.
    Classical,
    /// X25519MLKEM768 preferred, then the classical groups.
    #[default]
    Hybrid,
    /// X25519MLKEM768 only, and so TLS 1.3 only: peers without ML-KEM are refused.
    PqOnly,
}

impl KeyExchange {
    pub const WORDS: [(&'static str, KeyExchange); 3] =
        [("classical", KeyExchange::Classical), ("hybrid", KeyExchange::Hybrid), ("pq-only", KeyExchange::PqOnly)];

    /// Parses `classical`, `hybrid` or `pq-only`.
    pub fn parse(s: &str) -> Result<Self, TlsError> {
        Self::WORDS
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(s.trim()))
            .map(|(_, k)| *k)
            .ok_or_else(|| TlsError::KeyExchange { value: s.to_string() })
    }

    fn groups(self) -> Vec<&'static dyn rustls::crypto::SupportedKxGroup> {
        use aws_lc_rs::kx_group::{SECP256R1, SECP384R1, X25519, X25519MLKEM768};
        match self {
            KeyExchange::Classical => vec![X25519, SECP256R1, SECP384R1],
            KeyExchange::Hybrid => vec![X25519MLKEM768, X25519, SECP256R1, SECP384R1],
            KeyExchange::PqOnly => vec![X25519MLKEM768],
        }
    }

    /// The protocol versions that can carry these groups (the hybrid exists in TLS 1.3 only).
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
        match self {
            KeyExchange::PqOnly => TLS13_ONLY,
            _ => BOTH,
        }
    }
}

/// The TLS 1.3 suites in the default preference order.
fn default_tls13_suites() -> Vec<rustls::SupportedCipherSuite> {
    use aws_lc_rs::cipher_suite as cs;
    vec![cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256]
}

/// The TLS 1.3 suites by rustls name (the OpenSSL/IANA spelling `TLS_AES_...` is accepted too).
fn tls13_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    let upper = name.to_ascii_uppercase();
    let canonical = upper.strip_prefix("TLS_").map_or(upper.clone(), |rest| format!("TLS13_{rest}"));
    default_tls13_suites().into_iter().find(|s| s.suite().as_str() == Some(canonical.as_str()))
}

/// Parses `--tls13-ciphers`: a comma list of TLS 1.3 suite names, most preferred first.
/// Returns the canonical rustls names; unknown, empty or repeated names are errors.
pub fn parse_tls13_ciphers(list: &str) -> Result<Vec<String>, TlsError> {
    let bad = |reason: String| TlsError::CipherList { list: list.to_string(), reason };
    let mut names: Vec<String> = Vec::new();
    for raw in list.split(',') {
        let name = raw.trim();
        if name.is_empty() {
            return Err(bad("empty suite name".into()));
        }
        let suite = tls13_suite(name).ok_or_else(|| bad(format!("unknown TLS 1.3 suite {name:?}")))?;
        let canonical = suite.suite().as_str().unwrap_or(name).to_string();
        if names.contains(&canonical) {
            return Err(bad(format!("{canonical} listed twice")));
        }
        names.push(canonical);
    }
    Ok(names)
}

/// The crypto provider of every configuration: aws-lc-rs, ECDHE + AEAD suites only, the
/// hybrid X25519MLKEM768 key exchange preferred ([`KeyExchange::Hybrid`]).
///
/// AES-128-GCM leads, as in BoringSSL/Envoy: with AES-NI both AES sizes are far above
/// line rate for a pod, and 128-bit keys are ~30 % less AES work per byte. OpenSSL peers
/// prefer AES-256-GCM; `--tls13-ciphers` selects that when a like-for-like run matters.
pub fn provider() -> Arc<CryptoProvider> {
    provider_with(None, KeyExchange::default())
}

/// [`provider`] with the TLS 1.3 suites replaced by `tls13` (validated names, in order) and
/// the key exchange groups of `kx`.
fn provider_with(tls13: Option<&[String]>, kx: KeyExchange) -> Arc<CryptoProvider> {
    use aws_lc_rs::cipher_suite as cs;
    let tls13_suites = match tls13 {
        Some(names) => names.iter().filter_map(|n| tls13_suite(n)).collect(),
        None => default_tls13_suites(),
    };
    Arc::new(CryptoProvider {
        cipher_suites: [
            tls13_suites,
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ],
        ]
        .concat(),
        kx_groups: kx.groups(),
        ..aws_lc_rs::default_provider()
    })
}

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
    wire::pem::certificates(&path.display().to_string(), pem).map_err(|e| match e {
        wire::pem::PemError::Bad { reason, .. } => TlsError::Pem { path: path.to_path_buf(), reason },
        wire::pem::PemError::NoCertificate { .. } => TlsError::NoCertificate { path: path.to_path_buf() },
    })
}

/// The validated configurations every handshake borrows (published on a watch channel).
pub struct TlsConfigs {
    /// Ingress, client certificate required (chain to the mesh CA), any identity.
    pub mtls_server: Arc<ServerConfig>,
    /// Ingress `mtls` entries with an allow-list: port, configuration, its verifier.
    mtls_ports: Vec<(u16, Arc<ServerConfig>, Arc<dyn ClientCertVerifier>)>,
    /// Ingress `#false` entries: no client certificate.
    pub tls_server: Arc<ServerConfig>,
    /// One per egress entry (plan order): configuration and its verifier.
    egress: Vec<(Arc<ClientConfig>, Arc<dyn ServerCertVerifier>)>,
    /// Hex SHA-256-free identifier for logs: serial-ish prefix of the leaf DER length+tail.
    pub summary: String,
    /// The verifier of the ports without an allow-list, for re-checking resumed sessions.
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl TlsConfigs {
    /// Loads `dir`, validates the material at time `now`, and builds the configurations.
    pub fn load(dir: &Path, now: UnixTime, policy: &TlsPolicy, rules: &Rules) -> Result<Self, TlsError> {
        Self::from_material(dir, Material::read(dir)?, now, policy, rules)
    }

    /// Validates `m` (file names from `dir`, for messages) and builds the configurations.
    pub fn from_material(
        dir: &Path,
        m: Material,
        now: UnixTime,
        policy: &TlsPolicy,
        rules: &Rules,
    ) -> Result<Self, TlsError> {
        let provider = provider_with(policy.tls13_ciphers.as_deref(), policy.key_exchange);
        let versions = policy.key_exchange.versions();
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
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::BadCa { path: ca_path.clone(), reason: e.to_string() })?;
        let egress_verifier = |rule: EgressRule| EgressVerifier { inner: server_verifier.clone(), rule };

        // The peers run exactly these verifiers: check our own chain with them now.
        let (leaf, intermediates) =
            m.chain.split_first().ok_or(TlsError::NoCertificate { path: chain_path.clone() })?;
        let untrusted = |role, e: rustls::Error| TlsError::Untrusted {
            chain: chain_path.clone(),
            ca: ca_path.clone(),
            role,
            reason: e.to_string(),
        };
        client_verifier.verify_client_cert(leaf, intermediates, now).map_err(|e| untrusted("client", e))?;
        let any_name = ServerName::try_from("podmesh.invalid")
            .map_err(|e| TlsError::Config { what: "validation", reason: e.to_string() })?;
        let any =
            EgressRule { entry: "self-check".into(), host: "podmesh.invalid".into(), identity: EgressIdentity::Any };
        egress_verifier(any)
            .verify_server_cert(leaf, intermediates, &any_name, &[], now)
            .map_err(|e| untrusted("server", e))?;

        let certified = Arc::new(certified);
        let r = policy.resumption;
        let (p, v) = (&provider, versions);
        let mtls_server = server_config(p, v, client_verifier.clone(), certified.clone(), r, "mTLS server")?;
        let mut mtls_ports = Vec::with_capacity(rules.ingress.len());
        for rule in &rules.ingress {
            let port = rule.port;
            let verifier: Arc<dyn ClientCertVerifier> =
                Arc::new(AllowListVerifier { inner: client_verifier.clone(), rule: rule.clone() });
            let config = server_config(p, v, verifier.clone(), certified.clone(), r, "mTLS server with allow-list")?;
            mtls_ports.push((port, config, verifier));
        }
        let tls_server =
            server_config(p, v, WebPkiClientVerifier::no_client_auth(), certified.clone(), r, "TLS server")?;
        let mut egress = Vec::with_capacity(rules.egress.len());
        for rule in &rules.egress {
            let verifier: Arc<dyn ServerCertVerifier> = Arc::new(egress_verifier(rule.clone()));
            egress.push((client_config(p, v, verifier.clone(), &m, r, "egress client")?, verifier));
        }

        Ok(Self {
            mtls_server,
            mtls_ports,
            tls_server,
            egress,
            summary: format!("{} certificate(s), leaf {} bytes", m.chain.len(), leaf.len()),
            client_verifier,
        })
    }

    /// The mTLS configuration of ingress port `port` (its allow-list, or any mesh certificate).
    pub fn mtls_server_for(&self, port: u16) -> &Arc<ServerConfig> {
        self.mtls_ports.iter().find(|(p, _, _)| *p == port).map_or(&self.mtls_server, |(_, c, _)| c)
    }

    /// The client configuration of egress entry `entry` (index in the plan).
    pub fn egress_client(&self, entry: usize) -> Option<&Arc<ClientConfig>> {
        self.egress.get(entry).map(|(c, _)| c)
    }

    /// The egress counterpart of [`Self::recheck_client`]: re-runs entry `entry`'s verifier
    /// (mesh CA and identity rule) on the server chain remembered by a resumed session.
    pub fn recheck_server(
        &self,
        entry: usize,
        chain: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(rustls::Error::NoCertificatesPresented)?;
        let (_, verifier) = self.egress.get(entry).ok_or(rustls::Error::General(format!("no egress entry {entry}")))?;
        verifier.verify_server_cert(leaf, intermediates, name, &[], now).map(|_| ())
    }

    /// Re-verifies the client chain remembered by a resumed mTLS session to `port` against
    /// the current mesh CA at `now` and the port's allow-list (rustls does not: a resumed
    /// handshake carries no certificates). Fails for an expired certificate, one of a
    /// replaced mesh CA, or an identity the port no longer admits.
    pub fn recheck_client(&self, port: u16, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(rustls::Error::NoCertificatesPresented)?;
        let verifier = self.mtls_ports.iter().find(|(p, _, _)| *p == port).map_or(&self.client_verifier, |(_, _, v)| v);
        verifier.verify_client_cert(leaf, intermediates, now).map(|_| ())
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    verifier: Arc<dyn ClientCertVerifier>,
    certified: Arc<rustls::sign::CertifiedKey>,
    resumption: bool,
    what: &'static str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let err = |e: rustls::Error| TlsError::Config { what, reason: e.to_string() };
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    if resumption {
        // Stateless tickets for TLS 1.3 (bounded, see the module docs); a small stateful
        // cache for TLS 1.2 session IDs.
        config.ticketer = Arc::new(BoundedTicketer(aws_lc_rs::Ticketer::new().map_err(err)?));
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        // One ticket per handshake is enough for a client that resumes once per connection.
        config.send_tls13_tickets = 1;
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    verifier: Arc<dyn ServerCertVerifier>,
    m: &Material,
    resumption: bool,
    what: &'static str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let err = |e: rustls::Error| TlsError::Config { what, reason: e.to_string() };
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
        .map_err(err)?;
    config.resumption = if resumption {
        rustls::client::Resumption::in_memory_sessions(1024)
    } else {
        rustls::client::Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// Wraps a ticketer so that a ticket is honoured for at most [`MAX_TICKET_AGE`]: the expiry
/// travels inside the encrypted ticket and is checked on decryption. rustls itself only
/// advertises the lifetime (clients may ignore it) and rotates keys every 6 h, so without
/// this a ticket could resume for up to 12 h.
#[derive(Debug)]
struct BoundedTicketer(Arc<dyn rustls::server::ProducesTickets>);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl rustls::server::ProducesTickets for BoundedTicketer {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.0.lifetime().min(MAX_TICKET_AGE.as_secs() as u32)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let expiry = unix_now().saturating_add(u64::from(self.lifetime()));
        self.0.encrypt(&[&expiry.to_be_bytes()[..], plain].concat())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.0.decrypt(cipher)?;
        let (expiry, rest) = plain.split_first_chunk::<8>()?;
        (unix_now() < u64::from_be_bytes(*expiry)).then(|| rest.to_vec())
    }
}

/// The identity a peer's leaf certificate claims, for logs: `CN=… SAN=…`. Only call it on
/// a chain that was verified; on anything unparsable it says so instead of failing.
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> String {
    let Some(leaf) = chain.and_then(|c| c.first()) else { return "no certificate".into() };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else { return "unparsable certificate".into() };
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("-");
    let sans: Vec<String> = crate::identity::sans_of(leaf).iter().map(ToString::to_string).collect();
    format!("CN={cn} SAN=[{}]", sans.join(","))
}

/// The server name for an egress remote: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
        .map_err(|e| TlsError::Config { what: "egress server name", reason: format!("{host:?}: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    #[test]
    fn tls13_cipher_lists_parse_in_order_or_explain() {
        assert_eq!(
            parse_tls13_ciphers("TLS13_AES_256_GCM_SHA384, tls_aes_128_gcm_sha256").unwrap(),
            ["TLS13_AES_256_GCM_SHA384", "TLS13_AES_128_GCM_SHA256"]
        );
        for bad in [
            "",
            "TLS13_AES_256_GCM_SHA384,",
            "AES256",
            "TLS13_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ] {
            let e = parse_tls13_ciphers(bad).expect_err(bad).to_string();
            assert!(e.contains("TLS 1.3 cipher list") && !e.contains('\n'), "{e}");
        }
        let p = provider_with(Some(&["TLS13_AES_256_GCM_SHA384".to_string()]), KeyExchange::Hybrid);
        let tls13: Vec<_> = p.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).collect();
        assert_eq!(tls13.len(), 1);
        assert_eq!(tls13[0].suite(), rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    }

    #[test]
    fn key_exchange_words_parse_and_hybrid_comes_first() {
        assert_eq!(KeyExchange::parse("classical").unwrap(), KeyExchange::Classical);
        assert_eq!(KeyExchange::parse(" Hybrid ").unwrap(), KeyExchange::Hybrid);
        assert_eq!(KeyExchange::parse("pq-only").unwrap(), KeyExchange::PqOnly);
        for bad in ["", "pq", "mlkem", "hybrid,classical"] {
            let e = KeyExchange::parse(bad).unwrap_err().to_string();
            assert!(e.contains("classical, hybrid") && e.contains(&format!("{bad:?}")), "{e}");
        }
        let names = |k: KeyExchange| provider_with(None, k).kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>();
        use rustls::NamedGroup as G;
        assert_eq!(names(KeyExchange::default()), [G::X25519MLKEM768, G::X25519, G::secp256r1, G::secp384r1]);
        assert_eq!(names(KeyExchange::Classical), [G::X25519, G::secp256r1, G::secp384r1]);
        assert_eq!(names(KeyExchange::PqOnly), [G::X25519MLKEM768]);
        assert_eq!(KeyExchange::PqOnly.versions().len(), 1, "the hybrid group exists in TLS 1.3 only");
    }

    #[test]
    fn peer_identity_names_subject_and_sans_or_says_why_not() {
        let mut params = rcgen::CertificateParams::new(vec!["pod.mesh".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("10.99.0.1".parse().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::IpAddress("fd99::1".parse().unwrap()));
        params.distinguished_name.push(rcgen::DnType::CommonName, "web-0");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let chain = [cert.der().clone()];
        assert_eq!(peer_identity(Some(&chain)), "CN=web-0 SAN=[pod.mesh,10.99.0.1,fd99::1]");
        assert_eq!(peer_identity(None), "no certificate");
        assert_eq!(peer_identity(Some(&[CertificateDer::from(vec![0x30, 0x03, 0x01])])), "unparsable certificate");
    }

    #[test]
    fn tickets_are_bounded_and_expire() {
        let t = BoundedTicketer(aws_lc_rs::Ticketer::new().unwrap());
        assert!(t.lifetime() <= 3600);
        let ticket = t.encrypt(b"session").unwrap();
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        // A ticket whose embedded expiry has passed is refused.
        let expired = t.0.encrypt(&[&(unix_now() - 1).to_be_bytes()[..], b"session"].concat()).unwrap();
        assert_eq!(t.decrypt(&expired), None);
        assert_eq!(t.decrypt(b"garbage"), None);
    }
}
