//! Untrusted bytes into the pki crate: peer certificates (claim extensions), workload SPKI and
//! CSR from certificate requests, and SAN lists. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pki::AttestationClaims::from_certificate(data);
    let _ = pki::PublicKeyInput::SpkiDer(data.to_vec()).spki_der();
    let _ = pki::PublicKeyInput::CsrDer(data.to_vec()).spki_der();
    if let Ok(text) = std::str::from_utf8(data) {
        let names: Vec<&str> = text.split(',').collect();
        let _ = pki::SubjectAltNames::parse(&names);
    }
});
