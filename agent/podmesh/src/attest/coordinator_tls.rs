//! How the daemon decides to trust the coordinator's TLS certificate.
//!
//! * `RootCa`: the configured root CA file is the only anchor.
//! * `Fingerprint`: the coordinator's root CA is fetched once without verification, then
//!   accepted only if its SHA-256 matches the configured one; from then on it is the anchor.
//! * `TrustOnFirstUse`: like `Fingerprint` without the check. Logged as a warning on every
//!   attempt, because anyone on the path at first contact can impersonate the coordinator.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Trust {
    RootCa(CertificateDer<'static>),
    Fingerprint([u8; 32]),
    TrustOnFirstUse,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("coordinator fingerprint {0:?} is not 64 hex digits (SHA-256 of the root CA certificate, DER; colons allowed)")]
    BadFingerprint(String),
    #[error("coordinator root CA {0} cannot be used as a trust anchor: {1}")]
    BadAnchor(String, String),
}

/// Parses `ab:cd:...` or `abcd...` (case-insensitive), as `openssl x509 -fingerprint -sha256` prints it.
pub fn parse_fingerprint(raw: &str) -> Result<[u8; 32], TrustError> {
    let cleaned: String = raw.trim().chars().filter(|c| *c != ':').collect();
    let cleaned = cleaned.strip_prefix("sha256//").unwrap_or(&cleaned);
    let bytes = hex::decode(cleaned).map_err(|_| TrustError::BadFingerprint(raw.to_owned()))?;
    <[u8; 32]>::try_from(bytes).map_err(|_| TrustError::BadFingerprint(raw.to_owned()))
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Full WebPKI verification (chain and name) against one anchor.
pub fn anchored_verifier(anchor: &CertificateDer<'static>) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
    let fp = super::cert_info::sha256_fingerprint(anchor);
    let mut roots = RootCertStore::empty();
    roots.add(anchor.clone()).map_err(|e| TrustError::BadAnchor(fp.clone(), e.to_string()))?;
    let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TrustError::BadAnchor(fp, e.to_string()))?;
    Ok(v)
}

/// Accepts any certificate but still checks that the peer holds its key (handshake
/// signatures). Used only to fetch the root CA that is then checked or pinned.
#[derive(Debug)]
pub struct Unverified(Arc<CryptoProvider>);

impl Unverified {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(provider()))
    }
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_both_spellings_and_reject_garbage() {
        let hex64 = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex64).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            let err = parse_fingerprint(bad).unwrap_err().to_string();
            assert!(err.contains("not 64 hex digits"), "{err}");
        }
    }

    #[test]
    fn a_non_ca_garbage_anchor_is_rejected() {
        let err = anchored_verifier(&CertificateDer::from(vec![1u8, 2, 3])).unwrap_err().to_string();
        assert!(err.contains("cannot be used as a trust anchor"), "{err}");
    }
}
