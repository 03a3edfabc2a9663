//! PEM certificate parsing and the facts `status` and D-Bus report about them.

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Pem(#[from] wire::pem::PemError),
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    X509 { what: String, reason: String },
}

/// All certificates in a PEM document ([`wire::pem::certificates`]), in order, each checked to
/// be one well-formed X.509 certificate. `what` names the input in errors.
pub fn parse_pem_chain(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = wire::pem::certificates(what, pem)?;
    for c in &certs {
        parse(what, c)?;
    }
    Ok(certs)
}

/// SHA-256 over the DER encoding, lowercase hex (as `openssl x509 -fingerprint -sha256`
/// prints it, without the colons).
pub fn sha256_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::X509 { what: what.to_owned(), reason: "trailing bytes after the certificate".into() }),
        Err(e) => Err(CertError::X509 { what: what.to_owned(), reason: e.to_string() }),
    }
}

/// What an operator wants to know about one certificate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub sha256: String,
    /// SubjectPublicKeyInfo, DER.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
}

impl CertInfo {
    pub fn from_der(what: &str, der: &[u8]) -> Result<Self, CertError> {
        let cert = parse(what, der)?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                    GeneralName::IPAddress(b) => sans.push(match b.len() {
                        4 => format!("IP:{}", std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                        16 => format!("IP:{}", std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                        _ => format!("IP:<{} bytes>", b.len()),
                    }),
                    other => sans.push(format!("{other:?}")),
                }
            }
        }
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            sha256: sha256_fingerprint(der),
            spki_der: cert.public_key().raw.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.example".into(), "10.0.0.1".into()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2030, 1, 1);
        p.not_after = rcgen::date_time_ymd(2030, 1, 3);
        let c = p.self_signed(&key).unwrap();
        (c.pem(), c.der().to_vec())
    }

    #[test]
    fn parses_a_chain_and_reports_facts() {
        let (pem, der) = self_signed();
        let two = format!("{pem}{pem}");
        let certs = parse_pem_chain("chain", two.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        let info = CertInfo::from_der("leaf", &der).unwrap();
        assert_eq!(info.sans, vec!["DNS:a.example", "IP:10.0.0.1"]);
        assert_eq!(info.not_after - info.not_before, 2 * 86400);
        assert_eq!(info.sha256.len(), 64);
    }

    #[test]
    fn bad_input_is_a_named_error() {
        for (bytes, want) in [
            (&b""[..], "contains no certificate"),
            (b"hello world", "contains no certificate"),
            (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "not valid PEM"),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid X.509"),
        ] {
            let err = parse_pem_chain("mesh-ca.pem", bytes).unwrap_err().to_string();
            assert!(err.starts_with("mesh-ca.pem: ") && err.contains(want), "{err}");
        }
        let (_, der) = self_signed();
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(CertInfo::from_der("x", &trailing).unwrap_err().to_string().contains("trailing"));
        assert!(CertInfo::from_der("x", &der[..der.len() / 2]).is_err());
    }
}
