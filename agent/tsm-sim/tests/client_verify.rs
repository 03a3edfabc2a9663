//! E2's configfs-tsm client and verifier against the mounted simulator (needs root + /dev/fuse):
//! round trip, exact report-data binding, concurrent-writer detection, errno mapping, and
//! verification that succeeds only with the simulated anchor explicitly opted in.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use std::time::Duration;

use common::SimMount;
use tee::snp::{AmdRoots, Product};
use tee::{Evidence, TrustConfig};
use tsm::{Provider, TsmClient, TsmError};

fn client(m: &SimMount) -> TsmClient {
    TsmClient::new(&m.root).with_retries(3, Duration::from_millis(10))
}

/// Runs `tsm-sim anchor <flags> --state <m's state> --out <temp dir>`; the temp dir holds
/// what it wrote.
fn run_anchor(m: &SimMount, flags: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(common::BIN)
        .arg("anchor")
        .args(flags)
        .arg("--state")
        .arg(&m.state)
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "tsm-sim anchor {} failed", flags.join(" "));
    out
}

/// The anchor exactly as an operator would hand it to the coordinator: the PEM files
/// `tsm-sim anchor` writes.
fn exported_anchor(m: &SimMount) -> AmdRoots {
    let out = run_anchor(m, &["--product", "genoa"]);
    let read = |n: &str| common::pem_to_der(&std::fs::read_to_string(out.path().join(n)).unwrap());
    AmdRoots { product: Product::Genoa, ark: read("ark.pem"), ask: read("ask.pem"), asvk: None }
}

#[test]
fn client_round_trip_binds_report_data_and_verifies_only_with_the_sim_anchor() {
    podmesh_tests::skip_unless_fuse!();
    let measurement = "4d".repeat(48);
    let host_data = "c0ffee00".repeat(8);
    let m = SimMount::start(
        "snp",
        &["--measurement", &measurement, "--host-data", &host_data, "--tcb", "bl=9,tee=1,snp=22,ucode=80"],
    );
    let mut data = [0u8; 64];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let rep = client(&m).report(&data, Some(0)).expect("client report");
    assert_eq!(rep.provider, Provider::SevGuest);
    assert_eq!(rep.generation, 2, "privlevel + inblob writes");
    assert_eq!(&rep.outblob[0x50..0x90], &data[..], "report data bound exactly");
    let aux = rep.auxblob.clone().expect("SNP auxblob present");
    // The client removed its entry.
    assert_eq!(std::fs::read_dir(m.report_dir()).unwrap().count(), 0, "entry removed after the request");

    let evidence = Evidence::Snp { report: rep.outblob.clone(), vek: None, cert_table: Some(aux) };
    let now = time::OffsetDateTime::now_utc();

    let production = TrustConfig::production().expect("production anchors");
    let err = tee::verify(&evidence, &production, now).expect_err("real AMD anchors must reject simulated evidence");
    eprintln!("production anchors reject the simulated report: {err}");

    let sim = TrustConfig::production().unwrap().with_simulated_anchors(vec![exported_anchor(&m)], None);
    let claims = tee::verify(&evidence, &sim, now).expect("verifies with the simulated anchor");
    assert!(claims.simulated, "claims carry simulated: true");
    assert_eq!(claims.measurement, measurement);
    assert_eq!(claims.policy_key, host_data);
    assert_eq!(claims.report_data, hex::encode(data));
    assert_eq!(claims.vmpl, Some(0));
    assert_eq!(claims.product, "Genoa");
    assert!(claims.tcb.human.contains("bl=9") && claims.tcb.human.contains("snp=22"), "{:?}", claims.tcb);

    // One flipped signed byte and the production path (now with the sim anchor) fails.
    let mut tampered = rep.outblob.clone();
    tampered[0x90] ^= 1;
    let evidence = Evidence::Snp { report: tampered, vek: None, cert_table: rep.auxblob.clone() };
    assert!(tee::verify(&evidence, &sim, now).is_err(), "a flipped measurement byte must not verify");
}

#[test]
fn client_detects_and_retries_a_concurrent_writer() {
    podmesh_tests::skip_unless_fuse!();
    // Once: the first attempt sees the generation move, the retry (new entry) succeeds.
    let m = SimMount::start("snp", &["--inject", "race:1"]);
    let data = [0x42u8; 64];
    let rep = client(&m).report(&data, None).expect("retry after one concurrent write");
    assert_eq!(&rep.outblob[0x50..0x90], &data[..], "the retried report binds our data, not the racer's");
    drop(m);

    // Always: every attempt is disturbed, and the client gives up with that reason.
    let m = SimMount::start("snp", &["--inject", "race"]);
    match client(&m).report(&data, None) {
        Err(TsmError::ConcurrentWriter { expected, found, attempts }) => {
            assert_eq!((expected + 1, attempts), (found, 3));
        }
        other => panic!("expected ConcurrentWriter, got {other:?}"),
    }
}

#[test]
fn client_maps_every_injected_errno() {
    podmesh_tests::skip_unless_fuse!();
    let data = [1u8; 64];
    type Expect = fn(&TsmError) -> bool;
    let cases: [(&str, Expect); 6] = [
        ("enxio", |e| matches!(e, TsmError::NotConfidential { .. })),
        ("enotty", |e| matches!(e, TsmError::VmpckDisabled { .. })),
        ("etimedout", |e| matches!(e, TsmError::QuoteTimeout { .. })),
        ("eio", |e| matches!(e, TsmError::QuoteFailed { .. })),
        ("efbig", |e| matches!(e, TsmError::TooBig { .. })),
        ("ebusy", |e| matches!(e, TsmError::Busy { .. })),
    ];
    for (fault, expected) in cases {
        let m = SimMount::start("snp", &["--inject", fault]);
        let err = client(&m).report(&data, None).expect_err(fault);
        assert!(expected(&err), "--inject {fault}: got {err:?}");
        assert_eq!(std::fs::read_dir(m.report_dir()).unwrap().count(), 0, "--inject {fault}: entry removed on error");
    }
    // A transient EBUSY is retried away.
    let m = SimMount::start("snp", &["--inject", "ebusy:1"]);
    client(&m).report(&data, None).expect("one EBUSY is retried");
}

#[test]
fn busy_while_generating_is_retried_by_the_client() {
    podmesh_tests::skip_unless_fuse!();
    let m = SimMount::start("snp", &["--report-delay-ms", "300"]);
    let e = m.report_dir().join("slow");
    std::fs::create_dir(&e).unwrap();
    std::fs::write(e.join("inblob"), [3u8; 64]).unwrap();
    let reader = {
        let p = e.join("outblob");
        std::thread::spawn(move || std::fs::read(p))
    };
    std::thread::sleep(Duration::from_millis(100));
    let concurrent = std::fs::read(e.join("auxblob"));
    assert_eq!(concurrent.err().and_then(|e| e.raw_os_error()), Some(libc::EBUSY), "EBUSY while generating");
    assert_eq!(reader.join().unwrap().unwrap().len(), 0x4A0);
    // The client, meanwhile, gets its own entry and is not disturbed.
    client(&m).report(&[4u8; 64], None).expect("client report with generation delay");
}

#[test]
fn tdx_round_trip_through_the_client() {
    podmesh_tests::skip_unless_fuse!();
    let m = SimMount::start("tdx", &["--mrconfigid", &"77".repeat(48)]);
    let data = [0x99u8; 64];
    let rep = client(&m).report(&data, None).expect("TDX report");
    assert_eq!(rep.provider, Provider::TdxGuest);
    assert_eq!(rep.auxblob, None, "tdx_guest has no auxblob");
    let q = tee::tdx::TdxQuote::parse(&rep.outblob).expect("parses");
    assert_eq!(q.td.report_data, data);
    assert_eq!(q.td.mr_config_id, [0x77; 48]);
}

#[test]
fn tdx_quote_verifies_through_dcap_only_with_the_sim_root() {
    podmesh_tests::skip_unless_fuse!();
    let m = SimMount::start("tdx", &["--mrtd", &"a1".repeat(48)]);
    let data = [0x3cu8; 64];
    let rep = client(&m).report(&data, None).expect("TDX report");
    let out = run_anchor(&m, &["--tee", "tdx"]);
    let root = std::fs::read(out.path().join("intel_root.der")).unwrap();
    let collateral = tee::tdx::load_collateral_dir(out.path()).expect("E2 reads the exported collateral");
    let evidence = Evidence::Tdx { quote: rep.outblob.clone(), collateral: Box::new(collateral) };
    let now = time::OffsetDateTime::now_utc();

    let err = tee::verify(&evidence, &TrustConfig::production().unwrap(), now)
        .expect_err("Intel's real root must reject the simulated quote");
    eprintln!("production Intel root rejects the simulated quote: {err}");

    let sim = TrustConfig::production().unwrap().with_simulated_anchors(Vec::new(), Some(root));
    let claims = tee::verify(&evidence, &sim, now).expect("verifies with the simulated Intel root");
    assert!(claims.simulated);
    assert_eq!(claims.measurement, "a1".repeat(48));
    assert_eq!(claims.report_data, hex::encode(data));
    assert_eq!(claims.tcb.human, "UpToDate");

    let mut tampered = rep.outblob.clone();
    tampered[48 + 136] ^= 1; // a byte of MRTD
    let evidence =
        Evidence::Tdx { quote: tampered, collateral: Box::new(tee::tdx::load_collateral_dir(out.path()).unwrap()) };
    assert!(tee::verify(&evidence, &sim, now).is_err(), "a flipped MRTD byte must not verify");
}
