//! Property tests: the parsers never panic on arbitrary or mutated input (the fuzz targets in
//! /fuzz run the same calls for longer).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use proptest::prelude::*;
use tee::certtable::CertTable;
use tee::snp::{SnpReport, REPORT_LEN};
use tee::tdx::TdxQuote;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = SnpReport::parse(&data);
        let _ = SnpReport::parse_azure_hcl(&data);
        if let Ok(q) = TdxQuote::parse(&data) {
            prop_assert_eq!(q.raw.len() + q.trailing, data.len());
        }
        if let Ok(t) = CertTable::parse(&data) {
            prop_assert_eq!(CertTable::parse(&t.encode().unwrap()).unwrap(), t);
        }
    }

    #[test]
    fn mutated_snp_report_header(version in 0u32..8, key_info in any::<u32>(), cpuid in any::<[u8; 3]>(), chip in any::<[u8; 64]>()) {
        let mut r = vec![0u8; REPORT_LEN];
        r[..4].copy_from_slice(&version.to_le_bytes());
        r[0x34] = 1;
        r[0x48..0x4C].copy_from_slice(&key_info.to_le_bytes());
        r[0x188..0x18B].copy_from_slice(&cpuid);
        r[0x1A0..0x1E0].copy_from_slice(&chip);
        let _ = SnpReport::parse(&r);
    }

    #[test]
    fn mutated_tdx_header(version in 0u16..8, body_type in any::<u16>(), size in any::<u32>(), sig_len in any::<u32>()) {
        let mut q = vec![0u8; 1400];
        q[..2].copy_from_slice(&version.to_le_bytes());
        q[4] = 0x81;
        q[48..50].copy_from_slice(&body_type.to_le_bytes());
        q[50..54].copy_from_slice(&size.to_le_bytes());
        q[632..636].copy_from_slice(&sig_len.to_le_bytes());
        let _ = TdxQuote::parse(&q);
    }
}

#[test]
fn real_reports_with_random_byte_flips_never_panic() {
    let v = common::vectors();
    let trust = tee::TrustConfig::production().unwrap();
    let report = common::read(&v, "snp/oak/turin_report.bin");
    let vek = common::read(&v, "snp/oak/turin_vcek.der");
    let mut state = 0x2545F4914F6CDD1Du64;
    for _ in 0..300 {
        // xorshift: deterministic, no extra dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut r = report.clone();
        r[(state % REPORT_LEN as u64) as usize] ^= (state >> 32) as u8 | 1;
        let ev = tee::Evidence::Snp { report: r, vek: Some(vek.clone()), cert_table: None };
        assert!(tee::verify(&ev, &trust, common::today()).is_err());
    }
}
