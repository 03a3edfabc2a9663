//! The coordinator's production path (real AMD roots, VCEK from the cache dir) on a real
//! SEV-SNP report from ../shared/vectors: the signature chain verifies, then the manifest and
//! the key/nonce binding decide. Skips visibly when the vectors are absent.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use coordinator::verify::Anchors;
use wire::api::{CertificateRequest, Evidence, Reason};
use wire::client::ClientError;

use test_vectors::dir as vectors;

/// As strict as trustee's report allows: its POLICY (0x3001f), TCB (bl 3, tee 0, snp 8, ucode
/// 115) as both floors, and its chip.
fn snp_manifest(measurement: &[u8], host_data: &[u8], allow_debug: bool) -> serde_json::Value {
    let chip = hex::encode(&std::fs::read(vectors().join("snp/trustee/test-report.bin")).unwrap()[0x1A0..0x1E0]);
    serde_json::json!({
        "reference_values": { "snp": {
            "measurements": [hex::encode(measurement)], "guest_policy": "0x3001f",
            "minimum_tcb": { "bootloader": 3, "tee": 0, "snp": 8, "microcode": 115 },
            "chip_ids": [chip], "products": ["Milan"], "max_vmpl": 3, "allow_debug": allow_debug
        } },
        "policies": { hex::encode(host_data): { "name": "real", "sans": ["real"] } }
    })
}

#[tokio::test]
async fn real_snp_report_verifies_up_to_the_key_binding() {
    let vectors = vectors();
    let report = std::fs::read(vectors.join("snp/trustee/test-report.bin")).unwrap();
    let vcek = std::fs::read(vectors.join("snp/trustee/test-vcek.der")).unwrap();
    let parsed = tee::snp::SnpReport::parse(&report).unwrap();
    let measurement = &report[0x90..0xC0];
    let host_data = &report[0xC0..0xE0];

    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("vcek-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(cache.join(format!("{}.der", hex::encode(parsed.chip_id()))), vcek).unwrap();
    let config = Config { anchors: Anchors { vcek_cache: Some(cache), ..Anchors::default() }, ..Config::default() };
    let running = start(
        &tmp.path().join("state"),
        Some(manifest(&snp_manifest(measurement, host_data, false))),
        config,
        Limits::default(),
    )
    .await;
    let client = running.client();
    let workload = Workload::new();

    let request = |nonce: Vec<u8>, report: Vec<u8>| CertificateRequest {
        evidence: Evidence::Snp { report, cert_table: None },
        nonce,
        public_key: Some(workload.spki.clone()),
        csr: None,
    };
    let expect = |r: Result<wire::api::CertificateResponse, ClientError>, want: Reason| match r {
        Err(ClientError::Rejected { reason, detail, .. }) => assert_eq!(reason, want, "{detail}"),
        other => panic!("expected {want}, got {other:?}"),
    };
    // genuine report: chain and signature pass, but its report data is not bound to our key+nonce
    let nonce = client.nonce().await.unwrap().nonce;
    expect(client.certificate(&request(nonce, report.clone())).await, Reason::ReportDataMismatch);
    // one flipped bit in the signed part: the AMD signature no longer verifies
    let mut tampered = report.clone();
    tampered[0x50] ^= 0x80;
    let nonce = client.nonce().await.unwrap().nonce;
    expect(client.certificate(&request(nonce, tampered)).await, Reason::EvidenceInvalid);
    running.stop().await;

    // a manifest that does not list this measurement
    let config = Config {
        anchors: Anchors { vcek_cache: Some(tmp.path().join("vcek-cache")), ..Anchors::default() },
        ..Config::default()
    };
    let running = start(
        &tmp.path().join("state2"),
        Some(manifest(&snp_manifest(&[0u8; 48], host_data, false))),
        config,
        Limits::default(),
    )
    .await;
    let nonce = running.client().nonce().await.unwrap().nonce;
    expect(running.client().certificate(&request(nonce, report.clone())).await, Reason::MeasurementMismatch);
    running.stop().await;

    // the genuine report from a chip the manifest does not list: refused before the key binding
    let config = Config {
        anchors: Anchors { vcek_cache: Some(tmp.path().join("vcek-cache")), ..Anchors::default() },
        ..Config::default()
    };
    let mut other_chip = snp_manifest(measurement, host_data, false);
    other_chip["reference_values"]["snp"]["chip_ids"] = serde_json::json!([hex::encode([0x5a; 64])]);
    let running = start(&tmp.path().join("state4"), Some(manifest(&other_chip)), config, Limits::default()).await;
    let nonce = running.client().nonce().await.unwrap().nonce;
    expect(running.client().certificate(&request(nonce, report.clone())).await, Reason::ProductNotAllowed);
    running.stop().await;

    // no certificate table and no cached VCEK: the evidence is incomplete
    let running = start(
        &tmp.path().join("state3"),
        Some(manifest(&snp_manifest(measurement, host_data, false))),
        Config::default(),
        Limits::default(),
    )
    .await;
    let nonce = running.client().nonce().await.unwrap().nonce;
    expect(running.client().certificate(&request(nonce, report)).await, Reason::EvidenceInvalid);
    running.stop().await;
}
