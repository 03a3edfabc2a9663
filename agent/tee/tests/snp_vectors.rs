//! SEV-SNP verification on real reports from public projects (see vectors/README.md).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use tee::certtable::{CertEntry, CertKind, CertTable};
use tee::snp::{AmdRoots, MinTcb, Product, SnpError, SnpPolicy, SnpReport};
use tee::{verify, Evidence, TrustConfig, VerifyError};

struct Case {
    name: &'static str,
    report: Vec<u8>,
    vek: Vec<u8>,
    product: &'static str,
    at: time::OffsetDateTime,
}

fn permissive() -> TrustConfig {
    let mut t = TrustConfig::production().unwrap();
    t.snp_policy = SnpPolicy { allow_debug: true, ..Default::default() };
    t
}

fn cases(v: &std::path::Path) -> Vec<Case> {
    let hex_report =
        hex::decode(String::from_utf8(read(v, "snp/virtee-sev/report_milan.hex")).unwrap().trim()).unwrap();
    let hcl = SnpReport::parse_azure_hcl(&read(v, "snp/trustee-az-snp-vtpm/hcl-report.bin")).unwrap();
    vec![
        Case {
            name: "go-sev-guest Milan v2",
            report: read(v, "snp/go-sev-guest/attestation.bin"),
            vek: read(v, "snp/go-sev-guest/vcek.testcer"),
            product: "Milan",
            at: today(),
        },
        Case {
            name: "virtee Milan hex",
            report: hex_report,
            vek: read(v, "snp/virtee-sev/vcek_milan.der"),
            product: "Milan",
            at: today(),
        },
        Case {
            name: "trustee Milan",
            report: read(v, "snp/trustee/test-report.bin"),
            vek: read(v, "snp/trustee/test-vcek.der"),
            product: "Milan",
            at: today(),
        },
        Case {
            name: "trustee Milan VLEK v3 (inside VLEK validity)",
            report: read(v, "snp/trustee/test-vlek-report.bin"),
            vek: read(v, "snp/trustee/test-vlek.der"),
            product: "Milan",
            at: at("2025-06-01T00:00:00Z"),
        },
        Case {
            name: "ms-sidecar Milan",
            report: read(v, "snp/ms-sidecar/snp_report.bin"),
            vek: pem_first_der(&read(v, "snp/ms-sidecar/uvm_host_amd_certificate.pem")),
            product: "Milan",
            at: today(),
        },
        Case {
            name: "Azure HCL-embedded Milan",
            report: hcl.raw.clone(),
            vek: pem_first_der(&read(v, "snp/trustee-az-snp-vtpm/vcek.pem")),
            product: "Milan",
            at: today(),
        },
        Case {
            name: "Azure Genoa v3",
            report: read(v, "snp/trustee-az-snp-vtpm/extracted/genoa_report_from_evidence-genoa.bin"),
            vek: pem_first_der(&read(v, "snp/trustee-az-snp-vtpm/vcek-genoa.pem")),
            product: "Genoa",
            at: today(),
        },
        Case {
            name: "oak Genoa v5",
            report: read(v, "snp/oak/genoa_report.bin"),
            vek: read(v, "snp/oak/genoa_vcek.der"),
            product: "Genoa",
            at: today(),
        },
        Case {
            name: "oak Turin v5",
            report: read(v, "snp/oak/turin_report.bin"),
            vek: read(v, "snp/oak/turin_vcek.der"),
            product: "Turin",
            at: today(),
        },
    ]
}

fn evidence(report: &[u8], vek: &[u8]) -> Evidence {
    Evidence::Snp { report: report.to_vec(), vek: Some(vek.to_vec()), cert_table: None }
}

/// A GHCB certificate table carrying `vek` and the ASK/ARK of `roots`.
fn cert_table(vek: &[u8], roots: &AmdRoots) -> Vec<u8> {
    CertTable {
        entries: vec![
            CertEntry { kind: CertKind::Vcek, data: vek.to_vec() },
            CertEntry { kind: CertKind::Ask, data: roots.ask.clone() },
            CertEntry { kind: CertKind::Ark, data: roots.ark.clone() },
        ],
    }
    .encode()
    .unwrap()
}

fn snp_err(r: Result<tee::VerifiedClaims, VerifyError>) -> SnpError {
    match r {
        Err(VerifyError::Snp(e)) => e,
        other => panic!("expected an SNP error, got {other:?}"),
    }
}

#[test]
fn every_real_report_verifies_and_claims_match_the_bytes() {
    let v = vectors();
    let trust = permissive();
    for c in cases(&v) {
        let claims = verify(&evidence(&c.report, &c.vek), &trust, c.at).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(claims.product, c.product, "{}", c.name);
        assert_eq!(claims.measurement, hex::encode(&c.report[0x90..0xC0]), "{}", c.name);
        assert_eq!(claims.policy_key, hex::encode(&c.report[0xC0..0xE0]), "{}", c.name);
        assert_eq!(claims.report_data, hex::encode(&c.report[0x50..0x90]), "{}", c.name);
        assert_eq!(claims.vmpl, Some(u32::from_le_bytes(c.report[0x30..0x34].try_into().unwrap())));
        assert!(!claims.simulated);
        let json = serde_json::to_string(&claims).unwrap();
        assert!(json.contains("\"platform\":\"sev_snp\""), "{json}");
        let back: tee::VerifiedClaims = serde_json::from_str(&json).unwrap();
        assert_eq!(back, claims);
        eprintln!("{}: {json}", c.name);
    }
}

#[test]
fn the_same_report_delivered_in_a_certificate_table_verifies() {
    let v = vectors();
    let c = &cases(&v)[2];
    let table = cert_table(&c.vek, &AmdRoots::builtin(Product::Milan).unwrap());
    let ev = Evidence::Snp { report: c.report.clone(), vek: None, cert_table: Some(table) };
    verify(&ev, &permissive(), today()).unwrap();
}

#[test]
fn flipping_any_signed_byte_fails_with_a_specific_reason() {
    let v = vectors();
    let trust = permissive();
    for c in cases(&v) {
        // measurement, report data, host data, family/image id, policy, report id.
        for off in [0x08usize, 0x10, 0x20, 0x50, 0x8F, 0x90, 0xBF, 0xC0, 0xDF, 0x140, 0x1E0] {
            let mut r = c.report.clone();
            r[off] ^= 0x01;
            let e = snp_err(verify(&evidence(&r, &c.vek), &trust, c.at));
            assert!(matches!(e, SnpError::BadReportSignature { .. }), "{} offset {off:#x}: {e}", c.name);
        }
        // Unsigned signature padding must be zero too.
        for off in [0x2A0 + 60, 0x2E8 + 71, 0x330, 0x49F] {
            let mut r = c.report.clone();
            r[off] ^= 0x01;
            let e = snp_err(verify(&evidence(&r, &c.vek), &trust, c.at));
            assert!(matches!(e, SnpError::NonCanonicalSignature { .. }), "{} offset {off:#x}: {e}", c.name);
        }
        // Reserved bytes must be zero: `sev` refuses them before any signature check.
        let mut r = c.report.clone();
        r[0x29F] ^= 0x01;
        let e = snp_err(verify(&evidence(&r, &c.vek), &trust, c.at));
        assert!(matches!(e, SnpError::Parse(_)), "{}: {e}", c.name);
        let mut r = c.report.clone();
        r[0x180 + 7] ^= 0x01; // REPORTED_TCB microcode
        let e = snp_err(verify(&evidence(&r, &c.vek), &trust, c.at));
        assert!(matches!(e, SnpError::TcbMismatch { component: "microcode", .. }), "{}: {e}", c.name);
    }
}

#[test]
fn another_chips_vcek_is_a_hwid_mismatch() {
    let v = vectors();
    let cs = cases(&v);
    // virtee, trustee, ms-sidecar and Azure share TCB bl=3 tee=0 snp=8 ucode=115 but are
    // different chips: the swap is caught by the hwID, before the signature.
    for (report, vcek) in [(2, 1), (1, 2), (4, 5), (5, 4)] {
        let e = snp_err(verify(&evidence(&cs[report].report, &cs[vcek].vek), &permissive(), today()));
        assert!(matches!(e, SnpError::HwIdMismatch { .. }), "{} with {}'s VCEK: {e}", cs[report].name, cs[vcek].name);
    }
    // go-sev-guest's VCEK certifies bl=2 snp=5 ucode=68: a TCB mismatch.
    let e = snp_err(verify(&evidence(&cs[2].report, &cs[0].vek), &permissive(), today()));
    assert!(matches!(e, SnpError::TcbMismatch { component: "bootloader", cert: 2, report: 3, .. }), "{e}");
}

#[test]
fn a_genoa_chain_for_a_milan_report_fails() {
    let v = vectors();
    let c = &cases(&v)[2];
    let genoa = AmdRoots::builtin(Product::Genoa).unwrap();
    let table = cert_table(&c.vek, &genoa);
    let e = snp_err(verify(
        &Evidence::Snp { report: c.report.clone(), vek: None, cert_table: Some(table) },
        &permissive(),
        today(),
    ));
    assert!(matches!(e, SnpError::ChainMismatch { product: Product::Milan, .. }), "{e}");
    assert!(e.to_string().contains("ARK-Genoa"), "{e}");

    // Trusting only Genoa roots: the Milan VCEK is not signed by any trusted ASK.
    let mut only_genoa = permissive();
    only_genoa = only_genoa.with_simulated_anchors(vec![genoa], None);
    let e = snp_err(verify(&evidence(&c.report, &c.vek), &only_genoa, today()));
    assert!(matches!(e, SnpError::VekNotSignedByAmd { .. }), "{e}");

    // A v5 Genoa report with a Milan VCEK: the product comes from CPUID, the VCEK chains to Milan.
    let cs = cases(&v);
    let e = snp_err(verify(&evidence(&cs[7].report, &cs[2].vek), &permissive(), today()));
    assert!(matches!(e, SnpError::WrongProduct { report: Product::Genoa, chain: Product::Milan, .. }), "{e}");
}

#[test]
fn certificate_validity_is_judged_at_the_given_time() {
    let v = vectors();
    let cs = cases(&v);
    let vlek = &cs[3];
    // VLEKs live about a year: this one expired 2025-12-10.
    let e = snp_err(verify(&evidence(&vlek.report, &vlek.vek), &permissive(), today()));
    assert!(matches!(e, SnpError::CertificateExpired { which: "VLEK", .. }), "{e}");
    assert!(e.to_string().contains("2025"), "{e}");
    // Before the VCEK was issued.
    let e = snp_err(verify(&evidence(&cs[0].report, &cs[0].vek), &permissive(), at("2021-06-01T00:00:00Z")));
    assert!(matches!(e, SnpError::CertificateExpired { which: "VCEK", .. }), "{e}");
    // After the ARK's 25 years.
    let e = snp_err(verify(&evidence(&cs[0].report, &cs[0].vek), &permissive(), at("2046-01-01T00:00:00Z")));
    assert!(matches!(e, SnpError::CertificateExpired { which: "ARK", .. }), "{e}");
}

#[test]
fn policy_checks_each_fail_with_their_reason() {
    let v = vectors();
    let cs = cases(&v);
    // go-sev-guest's report has POLICY 0xB0000: debug allowed.
    let strict = TrustConfig::production().unwrap();
    let e = snp_err(verify(&evidence(&cs[0].report, &cs[0].vek), &strict, today()));
    assert!(matches!(e, SnpError::DebugNotAllowed), "{e}");

    let mut t = permissive();
    t.snp_policy.max_vmpl = Some(0);
    let e = snp_err(verify(&evidence(&cs[3].report, &cs[3].vek), &t, cs[3].at));
    assert!(matches!(e, SnpError::VmplTooHigh { vmpl: 1, max: 0 }), "{e}");

    let mut t = permissive();
    t.snp_policy.min_tcb = Some(MinTcb { bootloader: 0, tee: 0, snp: 255, microcode: 0, fmc: 0 });
    let e = snp_err(verify(&evidence(&cs[1].report, &cs[1].vek), &t, today()));
    assert!(matches!(e, SnpError::TcbTooLow { component: "snp", .. }), "{e}");

    let mut t = permissive();
    t.snp_policy.measurements = vec![[0u8; 48]];
    let e = snp_err(verify(&evidence(&cs[1].report, &cs[1].vek), &t, today()));
    assert!(matches!(e, SnpError::MeasurementNotAllowed { .. }), "{e}");
    let mut m = [0u8; 48];
    m.copy_from_slice(&cs[1].report[0x90..0xC0]);
    t.snp_policy.measurements = vec![m];
    verify(&evidence(&cs[1].report, &cs[1].vek), &t, today()).unwrap();

    let mut t = permissive();
    t.snp_policy.host_data = Some([0xEE; 32]);
    let e = snp_err(verify(&evidence(&cs[4].report, &cs[4].vek), &t, today()));
    assert!(matches!(e, SnpError::HostDataMismatch { .. }), "{e}");

    let mut t = permissive();
    t.snp_policy.report_data = Some([0; 64]);
    let e = snp_err(verify(&evidence(&cs[0].report, &cs[0].vek), &t, today()));
    assert!(matches!(e, SnpError::ReportDataMismatch), "{e}");
}

/// The checks Contrast turns on in go-sev-guest, on real reports. The trustee VLEK report was
/// launched at microcode 219 (LAUNCH_TCB) and reports 217 (REPORTED_TCB), so the two floors
/// are seen to be distinct checks.
#[test]
fn launch_tcb_and_chip_id_checks_on_real_reports() {
    let v = vectors();
    let cs = cases(&v);
    let vlek = &cs[3];
    let check = |t: &TrustConfig, c: &Case| verify(&evidence(&c.report, &c.vek), t, c.at);
    let tcb = |microcode| MinTcb { bootloader: 4, tee: 0, snp: 24, microcode, fmc: 0 };
    let mut t = permissive();
    t.snp_policy.min_tcb = Some(tcb(217));
    t.snp_policy.min_launch_tcb = Some(tcb(219));
    check(&t, vlek).unwrap();
    t.snp_policy.min_launch_tcb = Some(tcb(220));
    let e = snp_err(check(&t, vlek));
    assert!(matches!(e, SnpError::LaunchTcbTooLow { component: "microcode", found: 219, min: 220 }), "{e}");
    t.snp_policy.min_launch_tcb = None;
    t.snp_policy.min_tcb = Some(tcb(219));
    let e = snp_err(check(&t, vlek));
    assert!(matches!(e, SnpError::TcbTooLow { component: "microcode", found: 217, min: 219 }), "{e}");

    // CHIP_ID: the report's own chip passes, another chip and a masked (VLEK) CHIP_ID do not.
    let trustee = &cs[2];
    let chip: [u8; 64] = trustee.report[0x1A0..0x1E0].try_into().unwrap();
    let mut t = permissive();
    t.snp_policy.chip_ids = vec![chip];
    check(&t, trustee).unwrap();
    let e = snp_err(check(&t, &cs[4]));
    assert!(matches!(e, SnpError::ChipIdNotAllowed { allowed: 1, .. }), "{e}");
    let e = snp_err(check(&t, vlek));
    assert!(matches!(e, SnpError::ChipIdNotAllowed { .. }), "{e}");
    // No real report allows a migration agent; the default policy refuses one (see the tsm-sim
    // tests in the coordinator), and accepts every real report.
    for c in &cs {
        let policy = u64::from(SnpReport::parse(&c.report).unwrap().report.policy);
        assert_eq!(policy & tee::snp::POLICY_MIGRATE_MA, 0, "{}", c.name);
    }
}

#[test]
fn deliberately_invalid_vceks_are_rejected() {
    let v = vectors();
    let report = read(&v, "snp/trustee/test-report.bin");
    for f in ["snp/trustee/test-vcek-invalid-legacy.der", "snp/trustee/test-vcek-invalid-new.der"] {
        let r = verify(&evidence(&report, &read(&v, f)), &permissive(), today());
        let e = snp_err(r);
        assert!(matches!(e, SnpError::VekNotSignedByAmd { .. }), "{f}: {e}");
    }
}

#[test]
fn builtin_asvks_are_signed_by_the_builtin_arks() {
    // verify() checks this on every VLEK; here every product is covered regardless of vectors.
    for p in Product::ALL {
        let r = AmdRoots::builtin(p).unwrap();
        let ark = sev::certs::snp::Certificate::from_der(&r.ark).unwrap();
        let asvk = sev::certs::snp::Certificate::from_der(r.asvk.as_ref().unwrap()).unwrap();
        use sev::certs::snp::Verifiable;
        (&ark, &asvk).verify().unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

#[test]
fn missing_vek_and_garbage_reports_are_clear_errors() {
    let t = permissive();
    let e = snp_err(verify(&Evidence::Snp { report: vec![0; 10], vek: None, cert_table: None }, &t, today()));
    assert!(matches!(e, SnpError::ReportLength { len: 10 }), "{e}");
    let mut r = vec![0u8; 0x4A0];
    r[0] = 2;
    r[0x34] = 1;
    let e = snp_err(verify(&Evidence::Snp { report: r.clone(), vek: None, cert_table: None }, &t, today()));
    assert!(matches!(e, SnpError::MissingVek { .. }), "{e}");
    let e = snp_err(verify(
        &Evidence::Snp { report: r.clone(), vek: Some(vec![0x30, 0x03, 1, 2, 3]), cert_table: None },
        &t,
        today(),
    ));
    assert!(matches!(e, SnpError::BadCertificate { .. }), "{e}");
    r[0] = 9;
    let e = snp_err(verify(&Evidence::Snp { report: r, vek: None, cert_table: None }, &t, today()));
    assert!(matches!(e, SnpError::UnsupportedVersion { version: 9 }), "{e}");
}
