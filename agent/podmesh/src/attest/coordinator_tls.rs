//! How the daemon trusts the coordinator's TLS certificate, mapped onto
//! `wire::client::ServerTrust`.
//!
//! * `RootCa`: the configured root CA is the only anchor.
//! * `Fingerprint`: the root the coordinator presents must have this SHA-256.
//! * `FirstUse`: the first root presented is accepted and then pinned for the life of
//!   the process. Warned on every attempt: whoever answers first can impersonate the coordinator.

use rustls_pki_types::CertificateDer;

#[derive(Debug, Clone)]
pub enum Trust {
    RootCa { pem: String, der: CertificateDer<'static> },
    Fingerprint([u8; 32]),
    FirstUse,
}

#[derive(Debug, thiserror::Error)]
#[error("coordinator fingerprint {0:?} is not 64 hex digits (SHA-256 of the root CA certificate, DER; colons allowed)")]
pub struct BadFingerprint(String);

/// Parses `ab:cd:...` or `abcd...` (case-insensitive), as `openssl x509 -fingerprint -sha256` prints it.
pub fn parse_fingerprint(raw: &str) -> Result<[u8; 32], BadFingerprint> {
    let cleaned: String = raw.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&cleaned).map_err(|_| BadFingerprint(raw.to_owned()))?;
    <[u8; 32]>::try_from(bytes).map_err(|_| BadFingerprint(raw.to_owned()))
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
}
