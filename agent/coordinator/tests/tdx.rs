//! TDX through the coordinator: quotes from tsm-sim's simulated DCAP PKI, collateral and the
//! Intel root from the exported sim anchor dir; MRTD, RTMR, attribute checks and MRCONFIGID lookup.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use coordinator::verify::Anchors;
use pki::{AttestationClaims, Platform};
use tsm_sim::signer::{Provider, TdxProvider};
use tsm_sim::tdx_quote::TdxLaunch;
use wire::api::{CertificateRequest, Evidence, Reason};
use wire::client::ClientError;

const MRTD: [u8; 48] = [0x5a; 48];
const MRCONFIGID: [u8; 48] = [0x33; 48];
const RTMR2: [u8; 48] = [0x44; 48];

fn launch(mr_td: [u8; 48], rtmr2: [u8; 48]) -> TdxLaunch {
    let mut launch = TdxLaunch { mr_td, mr_config_id: MRCONFIGID, ..TdxLaunch::default() };
    launch.rtmr[2] = rtmr2;
    launch
}

async fn attest_tdx(
    client: &wire::client::Client,
    guest: &TdxProvider,
    workload: &Workload,
) -> Result<wire::api::CertificateResponse, ClientError> {
    attest_tdx_tampered(client, guest, workload, |_| {}).await
}

/// Like [`attest_tdx`], with `tamper` applied to the quote before it is sent.
async fn attest_tdx_tampered(
    client: &wire::client::Client,
    guest: &TdxProvider,
    workload: &Workload,
    tamper: fn(&mut Vec<u8>),
) -> Result<wire::api::CertificateResponse, ClientError> {
    let nonce = client.nonce().await?.nonce;
    let mut quote =
        guest.generate(&wire::api::report_data(&workload.spki, &nonce), 0).expect("simulated quote").outblob;
    tamper(&mut quote);
    client
        .certificate(&CertificateRequest {
            evidence: Evidence::Tdx { quote },
            nonce,
            public_key: Some(workload.spki.clone()),
            csr: None,
        })
        .await
}

fn expect(r: Result<wire::api::CertificateResponse, ClientError>, want: Reason) {
    match r {
        Err(ClientError::Rejected { reason, detail, .. }) => assert_eq!(reason, want, "{detail}"),
        other => panic!("expected {want}, got {other:?}"),
    }
}

#[tokio::test]
async fn simulated_tdx_quote_gets_a_certificate_and_bad_ones_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let sim_state = tmp.path().join("tsm-sim");
    let good = TdxProvider::new(&sim_state, launch(MRTD, RTMR2)).expect("sim TDX provider");
    let anchor = tmp.path().join("anchor");
    std::fs::create_dir(&anchor).unwrap();
    std::fs::write(anchor.join("intel_root.der"), good.keys().root_der()).unwrap();
    std::fs::write(anchor.join("collateral.json"), good.keys().collateral_json(good.launch()).unwrap()).unwrap();

    let defaults = TdxLaunch::default();
    let manifest_json = serde_json::json!({
        "reference_values": { "tdx": {
            "mrtds": [hex::encode(MRTD)],
            "rtmrs": [null, null, hex::encode(RTMR2), null],
            "attributes": hex::encode(defaults.td_attributes.to_le_bytes()),
            "xfam": hex::encode(defaults.xfam.to_le_bytes()),
            "minimum_tcb_status": "UpToDate"
        } },
        "policies": { hex::encode(MRCONFIGID): { "name": "tdx-web", "sans": ["tdx-web", "10.0.1.1"] } },
        "allow_simulated_tee": true
    });
    let config = Config { anchors: Anchors::default().with_sim(&anchor).expect("TDX sim anchor"), ..Config::default() };
    let running = start(&tmp.path().join("state"), Some(manifest(&manifest_json)), config, Limits::default()).await;
    let client = running.client();
    let workload = Workload::new();

    let issued = attest_tdx(&client, &good, &workload).await.expect("TDX certificate");
    assert_eq!(issued.workload, "tdx-web");
    let leaf = &wire::pem::certificates("chain", &issued.cert_chain_pem).unwrap()[0];
    let claims = AttestationClaims::from_certificate(leaf).unwrap();
    assert_eq!(claims.platform, Platform::Tdx);
    assert_eq!(claims.measurement, MRTD);
    assert_eq!(claims.host_data, MRCONFIGID);
    assert_eq!(claims.initdata_digest.as_deref(), Some(&MRCONFIGID[..]), "the certificate names the initdata digest");
    assert_eq!(claims.runtime_measurements.len(), 4);
    assert_eq!(claims.runtime_measurements[2], RTMR2);
    assert!(claims.simulated);

    let wrong_mrtd = TdxProvider::new(&sim_state, launch([0x01; 48], RTMR2)).unwrap();
    expect(attest_tdx(&client, &wrong_mrtd, &workload).await, Reason::MeasurementMismatch);
    let wrong_rtmr = TdxProvider::new(&sim_state, launch(MRTD, [0x02; 48])).unwrap();
    expect(attest_tdx(&client, &wrong_rtmr, &workload).await, Reason::RtmrMismatch);
    let debug =
        TdxProvider::new(&sim_state, TdxLaunch { td_attributes: defaults.td_attributes | 1, ..launch(MRTD, RTMR2) })
            .unwrap();
    // dcap-qvl itself refuses debug TDs while verifying the quote
    match attest_tdx(&client, &debug, &workload).await {
        Err(ClientError::Rejected { reason, detail, .. }) => {
            assert!(matches!(reason, Reason::EvidenceInvalid | Reason::PolicyMismatch), "{reason}: {detail}");
            assert!(detail.to_lowercase().contains("debug"), "{detail}");
        }
        other => panic!("debug TD accepted: {other:?}"),
    }
    let other_config =
        TdxProvider::new(&sim_state, TdxLaunch { mr_config_id: [0x77; 48], ..launch(MRTD, RTMR2) }).unwrap();
    expect(attest_tdx(&client, &other_config, &workload).await, Reason::UnknownHostData);
    // tampered quote: flip a bit of MRTD inside the signed body
    expect(attest_tdx_tampered(&client, &good, &workload, |q| q[48 + 136] ^= 1).await, Reason::EvidenceInvalid);
    running.stop().await;
}
