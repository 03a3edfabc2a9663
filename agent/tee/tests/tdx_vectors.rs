//! TDX verification on real quotes and Intel collateral (see vectors/README.md).
//!
//! Complete collateral exists for dcap-qvl's `tdx_quote` (v4) and `tdx_quote_outdated`
//! (v5/TD1.5). go-tdx-guest ships PCS responses and CRLs without the issuer chains; those
//! chains are Intel's (the same TCB-signing and PCK Platform CA certificates), so they are
//! taken from dcap-qvl's collateral. trustee ships TCB info and QE identity but no PCK CRL
//! valid in their window (2025-10-28..2025-11-26): those quotes are parsed and must fail
//! with that precise reason.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use tee::tdx::{
    self, collateral_from_dcap_json, collateral_from_pcs, QuoteCollateralV3, TdxError, TdxPolicy, TdxQuote,
};
use tee::{verify, Evidence, TrustConfig, VerifyError};

fn dcap(v: &std::path::Path, name: &str) -> QuoteCollateralV3 {
    collateral_from_dcap_json(&String::from_utf8(read(v, &format!("tdx/dcap-qvl/{name}"))).unwrap()).unwrap()
}

fn trust(statuses: &[&str]) -> TrustConfig {
    let mut t = TrustConfig::production().unwrap();
    t.tdx_policy =
        TdxPolicy { accepted_tcb_statuses: statuses.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    t
}

fn ev(quote: &[u8], c: &QuoteCollateralV3) -> Evidence {
    Evidence::Tdx { quote: quote.to_vec(), collateral: Box::new(c.clone()) }
}

fn tdx_err(r: Result<tee::VerifiedClaims, VerifyError>) -> TdxError {
    match r {
        Err(VerifyError::Tdx(e)) => e,
        other => panic!("expected a TDX error, got {other:?}"),
    }
}

/// go-tdx-guest's PCS responses + CRLs with Intel's issuer chains from dcap-qvl's set.
fn go_tdx_guest_collateral(v: &std::path::Path) -> QuoteCollateralV3 {
    let chains = dcap(v, "tdx_quote_collateral.json");
    collateral_from_pcs(
        &String::from_utf8(read(v, "tdx/go-tdx-guest/sample_tcbInfo_response")).unwrap(),
        &String::from_utf8(read(v, "tdx/go-tdx-guest/sample_qeIdentity_response")).unwrap(),
        chains.tcb_info_issuer_chain.clone(),
        chains.qe_identity_issuer_chain.clone(),
        read(v, "tdx/go-tdx-guest/pckcrl"),
        chains.pck_crl_issuer_chain.clone(),
        read(v, "tdx/go-tdx-guest/rootcrl.der"),
    )
    .unwrap()
}

#[test]
fn quotes_with_complete_collateral_verify() {
    let v = vectors();
    let t = trust(&["UpToDate", "OutOfDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"]);
    let cases = [
        (
            "dcap-qvl v4",
            read(&v, "tdx/dcap-qvl/tdx_quote"),
            dcap(&v, "tdx_quote_collateral.json"),
            at("2025-07-01T00:00:00Z"),
            "TDX v4 TD1.0",
        ),
        (
            "go-tdx-guest v5 TD1.5",
            read(&v, "tdx/go-tdx-guest/quote_v5_sample.dat"),
            go_tdx_guest_v5_collateral(&v),
            at("2026-03-01T00:00:00Z"),
            "TDX v5 TD1.5",
        ),
    ];
    for (name, quote, coll, now, product) in cases {
        let claims = verify(&ev(&quote, &coll), &t, now).unwrap_or_else(|e| panic!("{name}: {e}"));
        let q = TdxQuote::parse(&quote).unwrap();
        assert_eq!(claims.product, product, "{name}");
        assert_eq!(claims.measurement, hex::encode(q.td.mr_td));
        assert_eq!(claims.rtmrs.len(), 4);
        assert_eq!(claims.policy_key, hex::encode(q.td.mr_config_id));
        eprintln!("{name}: {}", serde_json::to_string(&claims).unwrap());
    }
}

/// go-tdx-guest's v5 TCB info (FMSPC 90c06f000000) with QE identity and CRLs from
/// dcap-qvl's 2026 collateral set (same window).
fn go_tdx_guest_v5_collateral(v: &std::path::Path) -> QuoteCollateralV3 {
    let base = dcap(v, "tdx_quote_outdated_collateral.json");
    let (tcb_info, tcb_info_signature) = {
        let c = collateral_from_pcs(
            &String::from_utf8(read(v, "tdx/go-tdx-guest/sample_tcbinfo_response_v5")).unwrap(),
            &String::from_utf8(read(v, "tdx/go-tdx-guest/sample_qeIdentity_response")).unwrap(),
            String::new(),
            String::new(),
            Vec::new(),
            String::new(),
            Vec::new(),
        )
        .unwrap();
        (c.tcb_info, c.tcb_info_signature)
    };
    QuoteCollateralV3 { tcb_info, tcb_info_signature, ..base }
}

#[test]
fn go_tdx_guest_spr_e4_collateral_lacks_a_2023_tcb_signing_chain() {
    // go-tdx-guest's PCS responses and CRLs are valid 2023-06-18..2023-07-08, but the only
    // TCB-signing issuer chain in the vectors (dcap-qvl's) was issued 2025-05-06. Everything
    // up to the chain's validity is exercised; the missing piece is named in the error.
    let v = vectors();
    let e = tdx_err(verify(
        &ev(&read(&v, "tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat"), &go_tdx_guest_collateral(&v)),
        &trust(&["UpToDate", "OutOfDate"]),
        at("2023-07-01T00:00:00Z"),
    ));
    assert!(matches!(e, TdxError::CertificateExpired(_)), "{e}");
}

#[test]
fn tcb_status_is_enforced_by_policy() {
    let v = vectors();
    let e = tdx_err(verify(
        &ev(&read(&v, "tdx/go-tdx-guest/quote_v5_sample.dat"), &go_tdx_guest_v5_collateral(&v)),
        &trust(&["Nonexistent"]),
        at("2026-03-01T00:00:00Z"),
    ));
    assert!(matches!(e, TdxError::TcbStatusNotAccepted { .. }), "{e}");
}

#[test]
fn a_quote_below_every_tcb_level_fails_with_that_reason() {
    // dcap-qvl's own "outdated" sample: all signatures verify, but its platform TCB is below
    // every level of its TCB info (dcap-qvl itself only accepts it with a TCB override).
    let v = vectors();
    let e = tdx_err(verify(
        &ev(&read(&v, "tdx/dcap-qvl/tdx_quote_outdated"), &dcap(&v, "tdx_quote_outdated_collateral.json")),
        &trust(&["UpToDate", "OutOfDate"]),
        at("2026-03-01T00:00:00Z"),
    ));
    assert!(matches!(e, TdxError::TcbLevelNotFound), "{e}");
}

#[test]
fn collateral_outside_its_validity_window_fails() {
    let v = vectors();
    let t = trust(&["UpToDate"]);
    let quote = read(&v, "tdx/dcap-qvl/tdx_quote");
    let coll = dcap(&v, "tdx_quote_collateral.json");
    for now in [today(), at("2025-06-01T00:00:00Z")] {
        let e = tdx_err(verify(&ev(&quote, &coll), &t, now));
        assert!(matches!(e, TdxError::CollateralExpired { .. }), "{e}");
    }
}

#[test]
fn flipping_a_signed_quote_byte_fails() {
    let v = vectors();
    let t = trust(&["UpToDate"]);
    let coll = dcap(&v, "tdx_quote_collateral.json");
    let quote = read(&v, "tdx/dcap-qvl/tdx_quote");
    for off in [48 + 136, 48 + 520, 48 + 583] {
        // MRTD, REPORTDATA
        let mut q = quote.clone();
        q[off] ^= 1;
        let e = tdx_err(verify(&ev(&q, &coll), &t, at("2025-07-01T00:00:00Z")));
        assert!(matches!(e, TdxError::BadSignature(_)), "{e}");
        eprintln!("offset {off}: {e}");
    }
}

#[test]
fn policy_checks_for_tdx() {
    let v = vectors();
    let quote = read(&v, "tdx/dcap-qvl/tdx_quote");
    let coll = dcap(&v, "tdx_quote_collateral.json");
    let now = at("2025-07-01T00:00:00Z");
    let mut t = trust(&["UpToDate"]);
    t.tdx_policy.mr_config_id = Some([0xAB; 48]);
    assert!(matches!(tdx_err(verify(&ev(&quote, &coll), &t, now)), TdxError::MrConfigIdMismatch { .. }));
    let mut t = trust(&["UpToDate"]);
    t.tdx_policy.mr_td = vec![[0; 48]];
    assert!(matches!(tdx_err(verify(&ev(&quote, &coll), &t, now)), TdxError::MrTdNotAllowed { .. }));
    let mut t = trust(&["UpToDate"]);
    t.tdx_policy.report_data = Some([0; 64]);
    assert!(matches!(tdx_err(verify(&ev(&quote, &coll), &t, now)), TdxError::ReportDataMismatch));
}

/// The TDX-module checks go-tdx-guest offers (MRSEAM, a componentwise TEE_TCB_SVN floor) and
/// the QE vendor ID, on a real quote whose collateral says UpToDate.
#[test]
fn mrseam_tee_tcb_svn_floor_and_qe_vendor_on_a_real_quote() {
    let v = vectors();
    let quote = read(&v, "tdx/dcap-qvl/tdx_quote");
    let q = TdxQuote::parse(&quote).unwrap();
    assert_eq!(q.qe_vendor_id, tdx::INTEL_QE_VENDOR_ID);
    let coll = dcap(&v, "tdx_quote_collateral.json");
    let now = at("2025-07-01T00:00:00Z");
    // Pinned to the quote's own values: accepted.
    let mut t = trust(&["UpToDate"]);
    t.tdx_policy.mr_seam = vec![q.td.mr_seam];
    t.tdx_policy.min_tee_tcb_svn = Some(q.td.tee_tcb_svn);
    verify(&ev(&quote, &coll), &t, now).unwrap();
    // Another TDX module.
    t.tdx_policy.mr_seam = vec![[0x42; 48]];
    let e = tdx_err(verify(&ev(&quote, &coll), &t, now));
    assert!(matches!(e, TdxError::MrSeamNotAllowed { allowed: 1, .. }), "{e}");
    // One SVN byte above the quote's: refused, naming the byte.
    t.tdx_policy.mr_seam.clear();
    let mut floor = q.td.tee_tcb_svn;
    let index = floor.iter().position(|&b| b < u8::MAX).unwrap();
    floor[index] += 1;
    t.tdx_policy.min_tee_tcb_svn = Some(floor);
    let e = tdx_err(verify(&ev(&quote, &coll), &t, now));
    assert!(matches!(e, TdxError::TeeTcbSvnTooLow { index: i, .. } if i == index), "{e}");
    // A foreign QE vendor in the header: named before dcap-qvl runs (its signature would fail too).
    let mut foreign = quote.clone();
    foreign[12] ^= 0xff;
    let e = tdx_err(verify(&ev(&foreign, &coll), &trust(&["UpToDate"]), now));
    assert!(matches!(e, TdxError::QeVendorNotIntel { .. }), "{e}");
    assert!(e.to_string().contains("939a7233f79c4ca9940a0db3957f0607"), "{e}");
}

#[test]
fn trustee_quotes_parse_but_lack_a_current_pck_crl() {
    let v = vectors();
    let chains = dcap(&v, "tdx_quote_collateral.json");
    let coll = collateral_from_pcs(
        &String::from_utf8(read(&v, "tdx/trustee/tcbInfo.json")).unwrap(),
        &String::from_utf8(read(&v, "tdx/trustee/enclaveIdentity.json")).unwrap(),
        chains.tcb_info_issuer_chain.clone(),
        chains.qe_identity_issuer_chain.clone(),
        chains.pck_crl.clone(),
        chains.pck_crl_issuer_chain.clone(),
        chains.root_ca_crl.clone(),
    )
    .unwrap();
    let e = tdx_err(verify(
        &ev(&read(&v, "tdx/trustee/tdx_quote_6.dat"), &coll),
        &trust(&["UpToDate"]),
        at("2025-11-01T00:00:00Z"),
    ));
    assert!(matches!(e, TdxError::CollateralExpired { piece: "PCK CRL", .. }), "{e}");
}

#[test]
fn every_quote_parses_with_padding_tolerated() {
    let v = vectors();
    let cases = [
        ("tdx/trustee/tdx_quote_4.dat", 4, 2, None),
        ("tdx/trustee/tdx_quote_5.dat", 5, 3, None),
        ("tdx/trustee/tdx_quote_6.dat", 4, 2, None),
        ("tdx/trustee-az-tdx-vtpm/td-quote.bin", 4, 2, None),
        ("tdx/go-tdx-guest/cos-113-tdx-quote.dat", 4, 2, Some(3065)),
        ("tdx/go-tdx-guest/quote_v5_sample.dat", 5, 3, None),
        ("tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat", 4, 2, Some(39)),
        ("tdx/oak/tdx_oc_quote.bin", 4, 2, Some(3065)),
        ("tdx/dcap-qvl/tdx_quote", 4, 2, None),
        ("tdx/dcap-qvl/tdx_quote_outdated", 5, 3, None),
    ];
    for (f, version, body, trailing) in cases {
        let q = TdxQuote::parse(&read(&v, f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!((q.version, q.body_type), (version, body), "{f}");
        if let Some(t) = trailing {
            assert_eq!(q.trailing, t, "{f}");
        }
        assert_eq!(q.td.mr_service_td.is_some(), body == 3);
    }
    // The cos quote's REPORTDATA is the nonce go-tdx-guest recorded.
    let q = TdxQuote::parse(&read(&v, "tdx/go-tdx-guest/cos-113-tdx-quote.dat")).unwrap();
    assert_eq!(q.td.report_data.to_vec(), read(&v, "tdx/go-tdx-guest/nonce.dat"));
    // An SGX quote (v3) is not TDX evidence.
    assert!(matches!(
        TdxQuote::parse(&read(&v, "tdx/trustee/occlum_quote.dat")),
        Err(TdxError::UnsupportedVersion { version: 3 })
    ));
}

#[test]
fn bad_quotes_and_collateral_are_clear_errors() {
    assert!(matches!(TdxQuote::parse(&[]), Err(TdxError::Truncated { .. })));
    let mut q = vec![0u8; 700];
    q[0] = 4;
    q[4] = 0x81;
    assert!(matches!(
        TdxQuote::parse(&q),
        Err(TdxError::Truncated { what: "signature data", .. }) | Err(TdxError::Truncated { .. }) | Ok(_)
    ));
    q[4] = 0;
    assert!(matches!(TdxQuote::parse(&q), Err(TdxError::NotTdx { .. })));
    let mut v5 = vec![0u8; 100];
    v5[0] = 5;
    v5[4] = 0x81;
    v5[48] = 9;
    assert!(matches!(TdxQuote::parse(&v5), Err(TdxError::BadBody { body_type: 9, .. })));
    assert!(matches!(collateral_from_dcap_json("{}"), Err(TdxError::MissingCollateral { .. })));
    assert!(matches!(collateral_from_dcap_json("nope"), Err(TdxError::BadCollateral { .. })));
    let dir = tempfile::tempdir().unwrap();
    let e = tdx::load_collateral_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TdxError::MissingCollateral { piece: "tcb_info.json", .. }), "{e}");
}

#[test]
fn collateral_directory_of_pcs_files_loads_and_verifies() {
    let v = vectors();
    let base = dcap(&v, "tdx_quote_outdated_collateral.json");
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, data: &[u8]| std::fs::write(dir.path().join(name), data).unwrap();
    put("tcb_info.json", &read(&v, "tdx/go-tdx-guest/sample_tcbinfo_response_v5"));
    put(
        "qe_identity.json",
        format!(
            "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
            base.qe_identity,
            hex::encode(&base.qe_identity_signature)
        )
        .as_bytes(),
    );
    put("tcb_info_issuer_chain.pem", base.tcb_info_issuer_chain.as_bytes());
    put("pck_crl_issuer_chain.pem", base.pck_crl_issuer_chain.as_bytes());
    put("pck_crl.der", &base.pck_crl);
    put("root_ca_crl.der", &base.root_ca_crl);
    let coll = tdx::load_collateral_dir(dir.path()).unwrap();
    let claims = verify(
        &ev(&read(&v, "tdx/go-tdx-guest/quote_v5_sample.dat"), &coll),
        &trust(&["UpToDate", "OutOfDate", "SWHardeningNeeded"]),
        at("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(claims.product, "TDX v5 TD1.5");
    // A missing piece is named.
    std::fs::remove_file(dir.path().join("pck_crl.der")).unwrap();
    let e = tdx::load_collateral_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TdxError::MissingCollateral { piece: "pck_crl.der", .. }), "{e}");
}
