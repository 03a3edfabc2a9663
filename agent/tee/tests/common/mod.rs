//! Helpers for the tests that read the shared evidence vectors.
#![allow(dead_code)]

pub use test_vectors::dir as vectors;

pub fn read(dir: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("vector {rel}: {e}"))
}

/// First certificate of a PEM bundle, as DER.
pub fn pem_first_der(pem: &[u8]) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).expect("PEM");
    p.contents
}

/// All certificates of a PEM bundle, as DER.
pub fn pem_all_der(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem).map(|p| p.expect("PEM").contents).collect()
}

pub fn at(rfc3339: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap()
}

/// "Today" for these tests: fixed, so results do not change as certificates age.
pub fn today() -> time::OffsetDateTime {
    at("2026-11-24T12:00:00Z")
}
