//! Unit tests for the DER helpers and report parsing edge cases; real-vector tests live in
//! `tests/snp_vectors.rs`.

use super::report::SnpReport;
use super::SnpError;

fn minimal_report(version: u32) -> Vec<u8> {
    let mut r = vec![0u8; super::REPORT_LEN];
    r[..4].copy_from_slice(&version.to_le_bytes());
    r[0x34] = 1; // ECDSA P-384
    r
}

#[test]
fn v2_with_masked_chip_id_parses_with_legacy_tcb_layout() {
    let mut r = minimal_report(2);
    r[0x180] = 3; // bootloader
    r[0x186] = 8; // snp
    r[0x187] = 115; // microcode
    let p = SnpReport::parse(&r).unwrap();
    assert_eq!(p.chip_id(), &[0u8; 64], "original CHIP_ID kept");
    assert_eq!(p.product, None);
    let t = p.report.reported_tcb;
    assert_eq!((t.fmc, t.bootloader, t.snp, t.microcode), (None, 3, 8, 115));
    assert_eq!(p.reported_tcb_raw(), u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 115]));
}

#[test]
fn header_fields_are_checked_before_parsing() {
    let mut r = minimal_report(3);
    r[0x34] = 2;
    assert!(matches!(SnpReport::parse(&r), Err(SnpError::UnsupportedSignatureAlgorithm { sig_algo: 2 })));
    let mut r = minimal_report(3);
    r[0x48] = 7 << 2; // SIGNING_KEY = none
    assert!(matches!(SnpReport::parse(&r), Err(SnpError::NoSigningKey { signing_key: 7 })));
    let r = minimal_report(4);
    assert!(matches!(SnpReport::parse(&r), Err(SnpError::UnsupportedVersion { version: 4 })));
    // v3 with an unknown CPUID family.
    let mut r = minimal_report(3);
    r[0x188] = 0x17;
    assert!(matches!(SnpReport::parse(&r), Err(SnpError::UnknownProduct { family: 0x17, .. })));
    assert!(matches!(SnpReport::parse_azure_hcl(b"nope"), Err(SnpError::NotAzureHcl)));
    assert!(matches!(SnpReport::parse_azure_hcl(b"HCLA\0\0\0\0"), Err(SnpError::ReportLength { .. })));
}

#[test]
fn debug_bit_is_policy_bit_19() {
    let mut r = minimal_report(2);
    r[0x08..0x10].copy_from_slice(&0xB0000u64.to_le_bytes());
    assert!(SnpReport::parse(&r).unwrap().debug_allowed());
    r[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes());
    assert!(!SnpReport::parse(&r).unwrap().debug_allowed());
}

#[test]
fn migration_agent_policies_are_refused_unless_allowed() {
    use super::{SnpPolicy, POLICY_MIGRATE_MA};
    let mut r = minimal_report(2);
    r[0x08..0x10].copy_from_slice(&(0x30000 | POLICY_MIGRATE_MA).to_le_bytes());
    let report = SnpReport::parse(&r).unwrap();
    let e = SnpPolicy::default().check(&report).unwrap_err();
    assert!(matches!(e, SnpError::MigrationAgentNotAllowed { policy: 0x70000 }), "{e}");
    assert!(e.to_string().contains("MIGRATE_MA"), "{e}");
    SnpPolicy { allow_migration_agent: true, ..SnpPolicy::default() }.check(&report).unwrap();
}
