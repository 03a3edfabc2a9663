//! PEM in and out: the one reader of certificate chains (the guest's tls dir and the coordinator's
//! answers, the coordinator's own CA files) and the writer the CA uses, so callers never juggle
//! DER/PEM conversions themselves.

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why a PEM document gave no certificates. `what` names the input (a file, a response field).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{what}: not valid PEM: {reason}")]
    Bad { what: String, reason: String },
    #[error("{what}: contains no certificate")]
    NoCertificate { what: String },
}

/// `-----BEGIN {label}-----` with 64-column base64.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every CERTIFICATE block of `pem`, in order; at least one. Other block types (a key) are
/// skipped; the DER inside is not parsed here (rustls and x509-parser do that where it is used).
pub fn certificates(what: &str, pem: impl AsRef<[u8]>) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_ref())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Bad { what: what.to_owned(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate { what: what.to_owned() });
    }
    Ok(certs)
}

/// The first CERTIFICATE block of `pem` (later ones are ignored).
pub fn certificate(what: &str, pem: impl AsRef<[u8]>) -> Result<CertificateDer<'static>, PemError> {
    certificates(what, pem).map(|mut c| c.swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_chain_in_order() {
        let pem =
            format!("{}junk between blocks\n{}", encode("CERTIFICATE", b"first"), encode("CERTIFICATE", &[7; 100]));
        let certs = certificates("chain", &pem).unwrap();
        assert_eq!(certs.iter().map(|c| c.as_ref().to_vec()).collect::<Vec<_>>(), [b"first".to_vec(), vec![7; 100]]);
        assert_eq!(certificate("chain", pem.as_bytes()).unwrap().as_ref(), b"first");
        assert!(encode("CERTIFICATE", &[0; 100]).lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn bad_input_names_the_source() {
        let err = |pem: &[u8]| certificates("mesh-ca.pem", pem).unwrap_err();
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        for empty in [&b""[..], b"hello world", key_only] {
            assert!(matches!(err(empty), PemError::NoCertificate { .. }));
            assert_eq!(err(empty).to_string(), "mesh-ca.pem: contains no certificate");
        }
        let bad_base64 = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        for broken in [&bad_base64[..], b"-----BEGIN CERTIFICATE-----\nAAAA\n"] {
            let e = err(broken);
            assert!(
                matches!(e, PemError::Bad { .. }) && e.to_string().starts_with("mesh-ca.pem: not valid PEM: "),
                "{e}"
            );
        }
    }
}
