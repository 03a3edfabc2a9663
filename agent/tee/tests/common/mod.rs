//! Locating the shared evidence vectors; tests skip visibly when they are absent.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn vectors() -> Option<PathBuf> {
    let dir = std::env::var_os("PODMESH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: evidence vectors not found at {} (set PODMESH_VECTORS)", dir.display());
        None
    }
}

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
