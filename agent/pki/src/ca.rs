//! Root CA and the intermediate/mesh CA pair (see the crate docs for the hierarchy).

use crate::leaf::{self, IssueError, IssuedCertificate, LeafRequest};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384};
use rustls_pki_types::CertificateDer;
use std::time::Duration;
use time::OffsetDateTime;
use wire::pem;

/// Root CA validity. It never rotates, so it outlives any deployment.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Intermediate/mesh CA validity; manifest updates rotate it much earlier.
pub const MESH_CA_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Accepted clock skew between coordinator and workloads.
pub const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating a {what} key failed: {source}")]
    KeyGen { what: &'static str, source: rcgen::Error },
    #[error("signing the {what} certificate failed: {source}")]
    Sign { what: &'static str, source: rcgen::Error },
    #[error("loading the {what} private key failed: {source}")]
    KeyLoad { what: &'static str, source: rcgen::Error },
    #[error("loading the {what} certificate failed: {why}")]
    CertLoad { what: &'static str, why: String },
    #[error("the {what} private key does not match its certificate")]
    KeyMismatch { what: &'static str },
    #[error("the intermediate CA is not signed by this root CA (issuer name differs)")]
    NotUnderRoot,
}

/// The long-lived root CA. Holds its private key; never log or serialize it except to a 0400 file.
pub struct RootCa {
    key: KeyPair,
    cert: CertificateDer<'static>,
    cert_pem: String,
}

/// The current intermediate CA and its twin, the self-signed mesh CA.
pub struct MeshCa {
    key: KeyPair,
    intermediate: CertificateDer<'static>,
    intermediate_pem: String,
    mesh: CertificateDer<'static>,
    mesh_pem: String,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa").finish_non_exhaustive()
    }
}

fn ca_params(common_name: &str, lifetime: Duration, path_len: Option<u8>) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = leaf::podmesh_name(common_name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    params.serial_number = Some(leaf::random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

fn generate_key(what: &'static str) -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|source| CaError::KeyGen { what, source })
}

fn load_key(key_pem: &str, what: &'static str) -> Result<KeyPair, CaError> {
    KeyPair::from_pem(key_pem).map_err(|source| CaError::KeyLoad { what, source })
}

/// Parses `cert_pem` and checks that it carries `key`'s public key.
fn load_cert(cert_pem: &str, key: &KeyPair, what: &'static str) -> Result<CertificateDer<'static>, CaError> {
    use rcgen::PublicKeyData;
    let cert = pem::certificate(what, cert_pem).map_err(|e| CaError::CertLoad { what, why: e.to_string() })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert).map_err(|e| CaError::CertLoad { what, why: e.to_string() })?;
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CaError::KeyMismatch { what });
    }
    if !parsed.is_ca() {
        return Err(CaError::CertLoad { what, why: "not a CA certificate (basicConstraints)".into() });
    }
    Ok(cert)
}

fn issuer_of<'a>(
    cert: &CertificateDer<'_>,
    key: &'a KeyPair,
    what: &'static str,
) -> Result<Issuer<'static, &'a KeyPair>, CaError> {
    Issuer::from_ca_cert_der(cert, key).map_err(|e| CaError::CertLoad { what, why: e.to_string() })
}

impl RootCa {
    /// A fresh root CA (ECDSA P-384).
    pub fn generate() -> Result<Self, CaError> {
        let key = generate_key("root CA")?;
        let cert = ca_params("podmesh root CA", ROOT_LIFETIME, None)
            .self_signed(&key)
            .map_err(|source| CaError::Sign { what: "root CA", source })?;
        Ok(Self { cert_pem: cert.pem(), cert: cert.der().clone(), key })
    }

    /// Loads a persisted root CA; fails when key and certificate do not belong together.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, CaError> {
        let key = load_key(key_pem, "root CA")?;
        let cert = load_cert(cert_pem, &key, "root CA")?;
        Ok(Self { cert_pem: pem::encode("CERTIFICATE", &cert), cert, key })
    }

    /// PKCS#8 PEM of the private key (secret: write to a 0400 file only).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        issuer_of(&self.cert, &self.key, "root CA")
    }

    /// A TLS server certificate directly under the root (for the coordinator's own endpoint).
    /// Returns the certificate (chain = leaf only) and a fresh P-256 key in PKCS#8 PEM.
    pub fn issue_server(&self, request: &LeafRequest<'_>) -> Result<IssuedCertificate, IssueError> {
        let issuer = self.issuer().map_err(|e| IssueError::Issuer(e.to_string()))?;
        leaf::issue(request, &issuer, None)
    }
}

impl MeshCa {
    /// A fresh intermediate key, its certificate under `root`, and the self-signed mesh CA twin.
    pub fn generate(root: &RootCa) -> Result<Self, CaError> {
        let key = generate_key("mesh CA")?;
        let tag: [u8; 4] = rand::random();
        let name = format!("podmesh mesh CA {}", hex::encode(tag));
        let params = ca_params(&name, MESH_CA_LIFETIME, Some(0));
        let root_issuer = root.issuer()?;
        let intermediate =
            params.signed_by(&key, &root_issuer).map_err(|source| CaError::Sign { what: "intermediate CA", source })?;
        let mut mesh_params = params;
        mesh_params.serial_number = Some(leaf::random_serial());
        let mesh = mesh_params.self_signed(&key).map_err(|source| CaError::Sign { what: "mesh CA", source })?;
        Ok(Self {
            key,
            intermediate_pem: intermediate.pem(),
            intermediate: intermediate.der().clone(),
            mesh_pem: mesh.pem(),
            mesh: mesh.der().clone(),
        })
    }

    /// Loads a persisted intermediate/mesh pair and checks it belongs to `root`.
    pub fn from_pem(key_pem: &str, intermediate_pem: &str, mesh_pem: &str, root: &RootCa) -> Result<Self, CaError> {
        let key = load_key(key_pem, "mesh CA")?;
        let intermediate = load_cert(intermediate_pem, &key, "intermediate CA")?;
        let mesh = load_cert(mesh_pem, &key, "mesh CA")?;
        let (_, parsed_int) = x509_parser::parse_x509_certificate(&intermediate)
            .map_err(|e| CaError::CertLoad { what: "intermediate CA", why: e.to_string() })?;
        let (_, parsed_root) = x509_parser::parse_x509_certificate(root.cert_der())
            .map_err(|e| CaError::CertLoad { what: "root CA", why: e.to_string() })?;
        if parsed_int.issuer().as_raw() != parsed_root.subject().as_raw()
            || parsed_int.verify_signature(Some(parsed_root.public_key())).is_err()
        {
            return Err(CaError::NotUnderRoot);
        }
        Ok(Self {
            key,
            intermediate_pem: pem::encode("CERTIFICATE", &intermediate),
            intermediate,
            mesh_pem: pem::encode("CERTIFICATE", &mesh),
            mesh,
        })
    }

    /// PKCS#8 PEM of the shared intermediate/mesh private key (secret).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    pub fn intermediate_der(&self) -> &CertificateDer<'static> {
        &self.intermediate
    }

    pub fn mesh_ca_pem(&self) -> &str {
        &self.mesh_pem
    }

    pub fn mesh_ca_der(&self) -> &CertificateDer<'static> {
        &self.mesh
    }

    /// Issues a mesh certificate; the chain is leaf + intermediate.
    pub fn issue(&self, request: &LeafRequest<'_>) -> Result<IssuedCertificate, IssueError> {
        let issuer = issuer_of(&self.mesh, &self.key, "mesh CA").map_err(|e| IssueError::Issuer(e.to_string()))?;
        leaf::issue(request, &issuer, Some(&self.intermediate_pem))
    }
}
