//! PEM in and out, so callers never juggle DER/PEM conversions themselves.

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("no PEM CERTIFICATE block found in {0}")]
    NoCertificate(String),
    #[error("bad PEM in {what}: {why}")]
    Bad { what: String, why: String },
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

/// Every CERTIFICATE block in `pem`, in order; `what` names the source in errors.
pub fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Bad { what: what.to_owned(), why: e.to_string() })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate(what.to_owned()));
    }
    Ok(certs)
}

/// Exactly the first CERTIFICATE block.
pub fn certificate(pem: &str, what: &str) -> Result<CertificateDer<'static>, PemError> {
    certificates(pem, what).map(|mut c| c.swap_remove(0))
}
