//! Mesh (and coordinator server) certificates: workload key, SANs, EKUs, claims.

use crate::claims::AttestationClaims;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey, SubjectPublicKeyInfo,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, DnsName};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// Default mesh certificate lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("workload public key is not a usable SubjectPublicKeyInfo: {0}")]
    PublicKey(String),
    #[error("workload public key SPKI is not in canonical DER (re-encoding differs)")]
    NonCanonicalSpki,
    #[error("certificate signing request rejected: {0}")]
    Csr(String),
    #[error("subject alternative name {name:?} is invalid: {why}")]
    San { name: String, why: &'static str },
    #[error("certificate lifetime must be between 1 s and 10 years, got {0:?}")]
    Lifetime(Duration),
    #[error("issuer CA unusable: {0}")]
    Issuer(String),
    #[error("signing the certificate failed: {0}")]
    Sign(rcgen::Error),
    #[error("generating the workload key failed: {0}")]
    KeyGen(rcgen::Error),
}

/// The workload's public key, as raw SPKI DER or inside a (self-signed) CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyInput {
    SpkiDer(Vec<u8>),
    CsrDer(Vec<u8>),
}

impl PublicKeyInput {
    /// The exact SPKI DER bytes the attestation report data must bind to
    /// (for a CSR: its SubjectPublicKeyInfo, after the CSR signature is checked).
    pub fn spki_der(&self) -> Result<Vec<u8>, IssueError> {
        match self {
            PublicKeyInput::SpkiDer(der) => {
                spki_key(der)?;
                Ok(der.clone())
            }
            PublicKeyInput::CsrDer(der) => csr_key(der).map(|(_, spki)| spki),
        }
    }
}

fn spki_key(der: &[u8]) -> Result<SubjectPublicKeyInfo, IssueError> {
    let key = SubjectPublicKeyInfo::from_der(der).map_err(|e| IssueError::PublicKey(e.to_string()))?;
    if key.subject_public_key_info() != der {
        return Err(IssueError::NonCanonicalSpki);
    }
    Ok(key)
}

fn csr_key(der: &[u8]) -> Result<(rcgen::PublicKey, Vec<u8>), IssueError> {
    use x509_parser::prelude::FromDer;
    let parsed = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| IssueError::Csr(format!("not DER PKCS#10: {e}")))?
        .1;
    let spki = parsed.certification_request_info.subject_pki.raw.to_vec();
    let params = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
        .map_err(|e| IssueError::Csr(e.to_string()))?;
    Ok((params.public_key, spki))
}

/// SANs of one workload, kept by kind so the certificate lists DNS, then IP, then URI names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
}

impl SubjectAltNames {
    /// Sorts free-form names by kind: an IP address, a URI (has a `scheme:`), or a DNS name.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, IssueError> {
        let mut out = Self::default();
        for name in names {
            let name = name.as_ref();
            let bad = |why| IssueError::San { name: name.to_owned(), why };
            if name.is_empty() {
                return Err(bad("empty"));
            }
            if let Ok(ip) = name.parse::<IpAddr>() {
                out.ips.push(ip);
            } else if let Some((scheme, rest)) = name.split_once(':') {
                let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
                if !scheme_ok
                    || rest.is_empty()
                    || !name.is_ascii()
                    || name.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
                {
                    return Err(bad("neither an IP address, a URI, nor a DNS name"));
                }
                out.uris.push(name.to_owned());
            } else {
                DnsName::try_from(name).map_err(|_| bad("not a valid DNS name"))?;
                out.dns.push(name.to_ascii_lowercase());
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty() && self.uris.is_empty()
    }

    fn to_rcgen(&self) -> Result<Vec<SanType>, IssueError> {
        let ia5 = |name: &String| {
            name.as_str().try_into().map_err(|_| IssueError::San { name: name.clone(), why: "not IA5 (ASCII)" })
        };
        let mut out = Vec::new();
        for dns in &self.dns {
            out.push(SanType::DnsName(ia5(dns)?));
        }
        out.extend(self.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        for uri in &self.uris {
            out.push(SanType::URI(ia5(uri)?));
        }
        Ok(out)
    }
}

/// What to put into one certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest<'a> {
    pub public_key: &'a PublicKeyInput,
    /// Subject CN; the workload's manifest name (valid even when there is no DNS SAN).
    pub common_name: &'a str,
    pub sans: &'a SubjectAltNames,
    pub lifetime: Duration,
    pub claims: Option<&'a AttestationClaims>,
}

/// A freshly issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub leaf_der: CertificateDer<'static>,
    pub leaf_pem: String,
    /// Leaf followed by the intermediate CA (mesh certificates), or the leaf alone (server certificates).
    pub chain_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // and no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

/// `O=podmesh, CN=<common_name>`: the subject of every certificate podmesh issues.
pub(crate) fn podmesh_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "podmesh");
    dn.push(DnType::CommonName, common_name);
    dn
}

pub(crate) fn issue(
    request: &LeafRequest<'_>,
    issuer: &Issuer<'_, impl SigningKey>,
    chain_tail: Option<&str>,
) -> Result<IssuedCertificate, IssueError> {
    if request.lifetime.is_zero() || request.lifetime > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err(IssueError::Lifetime(request.lifetime));
    }
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = podmesh_name(request.common_name);
    params.subject_alt_names = request.sans.to_rcgen()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = now - crate::ca::BACKDATE;
    params.not_after = now + request.lifetime;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    if let Some(claims) = request.claims {
        params.custom_extensions = claims.to_extensions();
    }
    let cert = match request.public_key {
        PublicKeyInput::SpkiDer(der) => params.signed_by(&spki_key(der)?, issuer),
        PublicKeyInput::CsrDer(der) => params.signed_by(&csr_key(der)?.0, issuer),
    }
    .map_err(IssueError::Sign)?;
    let leaf_pem = cert.pem();
    let chain_pem = match chain_tail {
        Some(tail) => format!("{leaf_pem}{tail}"),
        None => leaf_pem.clone(),
    };
    Ok(IssuedCertificate {
        leaf_der: cert.der().clone(),
        leaf_pem,
        chain_pem,
        not_before: params.not_before.into(),
        not_after: params.not_after.into(),
    })
}

/// A fresh ECDSA P-256 workload key (what `podmesh attest`, tests and benchmarks use).
pub fn new_workload_key() -> Result<KeyPair, IssueError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::KeyGen)
}

/// SPKI DER of a key pair, e.g. to build a [`PublicKeyInput::SpkiDer`].
pub fn spki_of(key: &KeyPair) -> Vec<u8> {
    key.subject_public_key_info()
}
