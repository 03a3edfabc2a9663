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

/// The sim anchor dir: the simulated Intel root and collateral whose (only) TCB level is the
/// one `collateral_for` reports, UpToDate.
fn sim_anchor(base: &std::path::Path, guest: &TdxProvider, collateral_for: &TdxLaunch) -> std::path::PathBuf {
    let anchor = base.join("anchor");
    std::fs::create_dir(&anchor).unwrap();
    std::fs::write(anchor.join("intel_root.der"), guest.keys().root_der()).unwrap();
    std::fs::write(anchor.join("collateral.json"), guest.keys().collateral_json(collateral_for).unwrap()).unwrap();
    anchor
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
    let anchor = sim_anchor(tmp.path(), &good, good.launch());

    let defaults = TdxLaunch::default();
    let manifest_json = tdx_manifest_json(true, good.launch(), "tdx-web");
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

/// Quotes that Intel's (simulated) collateral accepts as UpToDate but the manifest must not: a
/// TDX module older than the manifest's TEE_TCB_SVN floor (the collateral's one TCB level is the
/// older module's), another TDX module (MRSEAM), and a quote from a foreign quoting enclave.
#[tokio::test]
async fn older_or_other_tdx_modules_and_foreign_quoting_enclaves_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sim_state = tmp.path().join("tsm-sim");
    let good = TdxProvider::new(&sim_state, launch(MRTD, RTMR2)).unwrap();
    let older = TdxLaunch { tee_tcb_svn: [2, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..launch(MRTD, RTMR2) };
    assert!(older.tee_tcb_svn < good.launch().tee_tcb_svn);
    let anchor = sim_anchor(tmp.path(), &good, &older);
    let config = Config { anchors: Anchors::default().with_sim(&anchor).expect("TDX sim anchor"), ..Config::default() };
    let manifest_json = tdx_manifest_json(true, good.launch(), "tdx-web");
    let running = start(&tmp.path().join("state"), Some(manifest(&manifest_json)), config, Limits::default()).await;
    let client = running.client();
    let workload = Workload::new();
    attest_tdx(&client, &good, &workload).await.expect("the pinned module");

    let detail = |r: Result<wire::api::CertificateResponse, ClientError>, want: Reason| match r {
        Err(ClientError::Rejected { reason, detail, .. }) if reason == want => detail,
        other => panic!("expected {want}, got {other:?}"),
    };
    let older_guest = TdxProvider::new(&sim_state, older).unwrap();
    let d = detail(attest_tdx(&client, &older_guest, &workload).await, Reason::TcbTooLow);
    assert!(d.contains("TEE_TCB_SVN 02000500") && d.contains("at byte 0"), "{d}");
    let other_module = TdxProvider::new(&sim_state, TdxLaunch { mr_seam: [0x12; 48], ..launch(MRTD, RTMR2) }).unwrap();
    let d = detail(attest_tdx(&client, &other_module, &workload).await, Reason::MeasurementMismatch);
    assert!(d.contains("MRSEAM 1212"), "{d}");
    let foreign_qe =
        TdxProvider::new(&sim_state, TdxLaunch { qe_vendor_id: [0xab; 16], ..launch(MRTD, RTMR2) }).unwrap();
    let d = detail(attest_tdx(&client, &foreign_qe, &workload).await, Reason::EvidenceInvalid);
    assert!(d.contains("QE vendor ID abababab") && d.contains("not Intel's"), "{d}");
    running.stop().await;
}
