//! Strict manifests through the coordinator: the policy checks that lying tsm-sim evidence
//! must fail (a guest POLICY with MIGRATE_MA, another chip, a launch under older firmware, an
//! older TDX module is in tdx.rs), and the permissive warnings and old-manifest errors of the
//! binary.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use podmesh_tests::harness::Proc;
use std::process::{Command, Stdio};
use std::time::Duration;
use tsm_sim::snp_chain::TcbVersion;
use tsm_sim::snp_report::SnpLaunch;
use wire::api::Reason;
use wire::client::ClientError;

fn expect(r: Result<wire::api::CertificateResponse, ClientError>, want: Reason, detail_has: &str) {
    match r {
        Err(ClientError::Rejected { reason, detail, .. }) => {
            assert_eq!(reason, want, "{detail}");
            assert!(detail.contains(detail_has), "{detail_has:?} not in {detail:?}");
        }
        other => panic!("expected {want}, got {other:?}"),
    }
}

/// The standard manifest with `edit` applied to its SNP reference values.
fn snp_manifest(edit: impl FnOnce(&mut serde_json::Value)) -> coordinator::manifest::Manifest {
    let mut v = manifest_json(true, &MEASUREMENT);
    edit(&mut v["reference_values"]["snp"]);
    manifest(&v)
}

fn web_launch() -> SnpLaunch {
    SnpLaunch { measurement: MEASUREMENT, host_data: WEB_HOST_DATA, ..SnpLaunch::default() }
}

#[tokio::test]
async fn lying_snp_evidence_fails_the_launch_tcb_chip_and_migration_agent_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let chip = platform.chip_id();
    // Everything pinned except the exact POLICY, so the MIGRATE_MA check stands on its own.
    let strict = snp_manifest(|snp| {
        snp["guest_policy"] = "any".into();
        snp["chip_ids"] = serde_json::json!([hex::encode(chip)]);
    });
    let running = start(&tmp.path().join("state"), Some(strict), sim_config(&platform), Limits::default()).await;
    let client = running.client();
    let workload = Workload::new();
    attest(&client, &platform.guest_with(web_launch()), &workload).await.expect("the honest guest");

    // POLICY 0x70000: SMT, must-be-one, and MIGRATE_MA.
    let migratable = platform.guest_with(SnpLaunch { policy: 0x7_0000, ..web_launch() });
    expect(attest(&client, &migratable, &workload).await, Reason::PolicyMismatch, "MIGRATE_MA");
    // Launched under bootloader SPL 1, reporting the current TCB (a live firmware update since).
    let old_launch = TcbVersion { bootloader: 1, ..TcbVersion::default() };
    let relaunched = platform.guest_with(SnpLaunch { launch_tcb: old_launch, ..web_launch() });
    expect(attest(&client, &relaunched, &workload).await, Reason::TcbTooLow, "LAUNCH_TCB bootloader SPL 1");
    running.stop().await;

    // Another chip than the one the manifest lists.
    let other_chip = snp_manifest(|snp| snp["chip_ids"] = serde_json::json!([hex::encode([0x5a; 64])]));
    let running = start(&tmp.path().join("state2"), Some(other_chip), sim_config(&platform), Limits::default()).await;
    let client = running.client();
    expect(attest(&client, &platform.guest_with(web_launch()), &workload).await, Reason::ProductNotAllowed, "CHIP_ID");
    running.stop().await;

    // What the manifest explicitly allows passes: a migration agent, an older launch TCB.
    let lenient = snp_manifest(|snp| {
        snp["guest_policy"] = "0x70000".into();
        snp["allow_migration_agent"] = true.into();
        snp["minimum_launch_tcb"] = serde_json::json!({"bootloader": 1, "tee": 0, "snp": 25, "microcode": 84});
    });
    let running = start(&tmp.path().join("state3"), Some(lenient), sim_config(&platform), Limits::default()).await;
    let client = running.client();
    let both = platform.guest_with(SnpLaunch { policy: 0x7_0000, launch_tcb: old_launch, ..web_launch() });
    attest(&client, &both, &workload).await.expect("allowed by the manifest");
    running.stop().await;
}

#[tokio::test]
async fn binary_warns_on_permissive_values_at_start_and_on_each_certificate_and_explains_old_manifests() {
    let bin = env!("CARGO_BIN_EXE_podmesh-coordinator");
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());

    // A manifest as podmesh accepted it before strict manifests: refused, saying what to add.
    let old = tmp.path().join("old.json");
    let mut v = manifest_json(true, &MEASUREMENT);
    v["reference_values"]["snp"].as_object_mut().unwrap().remove("minimum_tcb");
    std::fs::write(&old, v.to_string()).unwrap();
    let out = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(tmp.path().join("old-state"))
        .arg("--manifest")
        .arg(&old)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "old manifest accepted: {stderr}");
    assert!(
        stderr.contains("reference_values.snp.minimum_tcb: missing")
            && stderr.contains("add the minimum REPORTED_TCB")
            && stderr.contains(r#"or "any""#),
        "{stderr}"
    );

    // Permissive values: one warning each at start, and again with every certificate.
    let permissive = tmp.path().join("permissive.json");
    let mut v = manifest_json(true, &MEASUREMENT);
    v["reference_values"]["snp"]["minimum_tcb"] = "any".into();
    v["reference_values"]["snp"]["guest_policy"] = "any".into();
    std::fs::write(&permissive, v.to_string()).unwrap();
    let port = free_port();
    let state = tmp.path().join("state");
    let log = tmp.path().join("coordinator.log");
    let mut child = Proc::spawn(
        "podmesh-coordinator serve",
        Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"])
            .arg(&state)
            .arg("--manifest")
            .arg(&permissive)
            .arg("--sim-anchor")
            .arg(&platform.anchor)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let root_pem = wait_serving(&mut child, &state, &url).await;
    let client = wire::client::Client::new(&url, wire::client::ServerTrust::RootCaPem(root_pem)).unwrap();
    let warnings = |text: &str, field: &str| {
        text.lines()
            .filter(|l| {
                l.contains("PODMESH_EVENT=\"permissive_reference_value\"")
                    || l.contains("PODMESH_EVENT=permissive_reference_value")
            })
            .filter(|l| l.contains(field))
            .count()
    };
    let text = std::fs::read_to_string(&log).unwrap();
    for field in ["reference_values.snp.minimum_tcb", "reference_values.snp.guest_policy"] {
        assert_eq!(warnings(&text, field), 1, "{field} at start: {text}");
    }
    assert_eq!(warnings(&text, "measurements"), 0, "pinned values are not permissive: {text}");
    let guest = platform.guest(MEASUREMENT, WEB_HOST_DATA);
    attest(&client, &guest, &Workload::new()).await.unwrap();
    attest(&client, &guest, &Workload::new()).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    for field in ["reference_values.snp.minimum_tcb", "reference_values.snp.guest_policy"] {
        assert_eq!(warnings(&text, field), 3, "{field} at start and on 2 certificates: {text}");
    }
    assert!(text.contains("issued under the permissive reference value"), "{text}");
    child.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    child.wait_exit(Duration::from_secs(15)).unwrap();
}

#[tokio::test]
async fn put_refuses_non_strict_manifests_and_an_old_persisted_manifest_is_replaced_only_when_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let (token, hash) = coordinator::owner::generate();
    let config = coordinator::service::Config {
        owner: Some(coordinator::owner::OwnerToken::from_hash_hex(&hash).unwrap()),
        ..sim_config(&platform)
    };
    let state = tmp.path().join("state");
    let strict = manifest_json(true, &MEASUREMENT);
    let running = start(&state, Some(manifest(&strict)), config.clone(), Limits::default()).await;
    let client = running.client();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 3] = [
        ("reference_values.snp.guest_policy: missing", |v| {
            v["reference_values"]["snp"].as_object_mut().unwrap().remove("guest_policy");
        }),
        ("reference_values.tdx.rtmrs[0]: null no longer means any", |v| {
            v["reference_values"]["tdx"] =
                tdx_manifest_json(true, &Default::default(), "x")["reference_values"]["tdx"].clone();
            v["reference_values"]["tdx"]["rtmrs"] = serde_json::json!([null, null, null, null]);
        }),
        ("reference_values.tdx.xfam: missing", |v| {
            v["reference_values"]["tdx"] =
                tdx_manifest_json(true, &Default::default(), "x")["reference_values"]["tdx"].clone();
            v["reference_values"]["tdx"].as_object_mut().unwrap().remove("xfam");
        }),
    ];
    for (want, edit) in cases {
        let mut v = strict.clone();
        edit(&mut v);
        match client.set_manifest(&token, v.to_string().into_bytes()).await {
            Err(ClientError::Rejected { reason: Reason::ManifestInvalid, detail, .. }) => {
                assert!(detail.contains(want), "{want:?} not in {detail:?}")
            }
            other => panic!("{want}: expected manifest_invalid, got {other:?}"),
        }
    }
    assert_eq!(client.ca().await.unwrap().manifest_generation, 1, "refused updates change nothing");
    running.stop().await;

    // A manifest persisted by a coordinator before strict manifests: explained without
    // --apply-manifest (with or without --manifest), replaced (a new generation) with it.
    let persisted = state.join("generations/1/manifest.json");
    let mut old = strict.clone();
    old["reference_values"]["snp"].as_object_mut().unwrap().remove("minimum_tcb");
    std::fs::write(&persisted, old.to_string()).unwrap();
    let err = coordinator::service::Coordinator::open(&state, None, config.clone()).err().expect("old manifest served");
    let err = err.to_string();
    assert!(err.contains("reference_values.snp.minimum_tcb: missing") && err.contains("--apply-manifest"), "{err}");
    let err = coordinator::service::Coordinator::open(&state, Some(manifest(&strict)), config.clone()).err();
    assert!(err.expect("replaced without --apply-manifest").to_string().contains("--apply-manifest"));
    let config = coordinator::service::Config { apply_manifest: true, ..config };
    let running = start(&state, Some(manifest(&strict)), config, Limits::default()).await;
    assert_eq!(running.client().ca().await.unwrap().manifest_generation, 2);
    attest(&running.client(), &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await.unwrap();
    running.stop().await;
}
