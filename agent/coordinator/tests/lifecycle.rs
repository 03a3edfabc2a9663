//! Manifest updates (mesh CA rotation), restarts, the state dir, and the binary's CLI + SIGTERM.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use common::*;
use coordinator::server::Limits;
use coordinator::service::Config;
use podmesh_tests::harness::Proc;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::api::Reason;
use wire::client::{Client, ClientError, ServerTrust};

/// Client-auth verification of a chain PEM against one anchor PEM, with or without the intermediate.
fn chain_ok(anchor_pem: &str, chain_pem: &str, with_intermediate: bool) -> bool {
    let mut roots = RootCertStore::empty();
    roots.add(wire::pem::certificate("anchor", anchor_pem).unwrap()).unwrap();
    let chain: Vec<CertificateDer<'static>> = wire::pem::certificates("chain", chain_pem).unwrap();
    let rest = if with_intermediate { &chain[1..] } else { &[][..] };
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .unwrap()
    .verify_client_cert(&chain[0], rest, UnixTime::now())
    .is_ok()
}

fn reject<T: std::fmt::Debug>(r: Result<T, ClientError>, want: Reason) {
    match r {
        Err(ClientError::Rejected { reason, .. }) => assert_eq!(reason, want),
        other => panic!("expected {want}, got {other:?}"),
    }
}

fn owner_config(platform: &SimPlatform) -> (Config, String) {
    let (token, hash) = coordinator::owner::generate();
    let owner = coordinator::owner::OwnerToken::from_hash_hex(&hash).unwrap();
    (Config { owner: Some(owner), ..sim_config(platform) }, token)
}

#[tokio::test]
async fn manifest_update_rotates_the_mesh_ca_but_not_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let (config, token) = owner_config(&platform);
    let running =
        start(&tmp.path().join("state"), Some(manifest(&manifest_json(true, &MEASUREMENT))), config, Limits::default())
            .await;
    let client = running.client();
    let old = attest(&client, &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await.unwrap();

    let new_measurement = [0xc3; 48];
    let new_manifest = serde_json::to_vec(&manifest_json(true, &new_measurement)).unwrap();
    // the owner credential is required and checked
    reject(client.set_manifest("wrong-token", new_manifest.clone()).await, Reason::Unauthorized);
    let (status, _) = client.raw("PUT", "/v1/manifest", new_manifest.clone(), &[]).await.unwrap();
    assert_eq!(status, 401);
    reject(client.set_manifest(&token, b"{\"policies\": {}}".to_vec()).await, Reason::ManifestInvalid);
    assert_eq!(client.ca().await.unwrap().manifest_generation, 1, "rejected updates change nothing");

    let updated = client.set_manifest(&token, new_manifest.clone()).await.unwrap();
    assert_eq!(updated.generation, 2);
    assert_ne!(updated.mesh_ca_pem, old.mesh_ca_pem);
    // setting the same manifest again is a no-op
    assert_eq!(client.set_manifest(&token, new_manifest).await.unwrap().generation, 2);

    // the old guest's measurement is no longer allowed; the new one is
    reject(
        attest(&client, &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await,
        Reason::MeasurementMismatch,
    );
    let new = attest(&client, &platform.guest(new_measurement, WEB_HOST_DATA), &Workload::new()).await.unwrap();
    assert_eq!(new.mesh_ca_pem, updated.mesh_ca_pem);
    assert_eq!(new.root_ca_pem, old.root_ca_pem, "the root never changes");

    assert!(chain_ok(&old.root_ca_pem, &old.cert_chain_pem, true));
    assert!(chain_ok(&new.root_ca_pem, &new.cert_chain_pem, true));
    assert!(chain_ok(&old.mesh_ca_pem, &old.cert_chain_pem, false));
    assert!(chain_ok(&new.mesh_ca_pem, &new.cert_chain_pem, false));
    assert!(!chain_ok(&new.mesh_ca_pem, &old.cert_chain_pem, false), "old workload must not be trusted by new ones");
    assert!(!chain_ok(&old.mesh_ca_pem, &new.cert_chain_pem, false), "new workload must not be trusted by old ones");
    assert!(!chain_ok(&old.mesh_ca_pem, &new.cert_chain_pem, true));
    running.stop().await;

    // history on disk: both manifests, only the live generation keeps its key
    let state = tmp.path().join("state");
    assert!(state.join("generations/1/manifest.json").exists());
    assert!(!state.join("generations/1/mesh-ca.key").exists());
    assert!(state.join("generations/2/mesh-ca.key").exists());
    assert_eq!(std::fs::read_to_string(state.join("current")).unwrap().trim(), "2");
}

#[tokio::test]
async fn restart_keeps_root_and_mesh_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let state = tmp.path().join("state");
    let m = manifest_json(true, &MEASUREMENT);

    let running = start(&state, Some(manifest(&m)), sim_config(&platform), Limits::default()).await;
    let before = running.client().ca().await.unwrap();
    let issued =
        attest(&running.client(), &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await.unwrap();
    running.stop().await;

    for (file, mode) in [("root-ca.key", 0o400), ("generations/1/mesh-ca.key", 0o400), ("root-ca.pem", 0o644)] {
        let meta = std::fs::metadata(state.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }

    // same manifest (or none): nothing rotates
    for manifest_arg in [Some(manifest(&m)), None] {
        let running = start(&state, manifest_arg, sim_config(&platform), Limits::default()).await;
        let after = running.client().ca().await.unwrap();
        assert_eq!(after, before);
        let again =
            attest(&running.client(), &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await.unwrap();
        assert!(
            chain_ok(&issued.mesh_ca_pem, &again.cert_chain_pem, false),
            "pre-restart workloads trust post-restart ones"
        );
        running.stop().await;
    }

    // a changed manifest file at start is refused: the persisted history is authoritative
    let err = coordinator::service::Coordinator::open(
        &state,
        Some(manifest(&manifest_json(true, &[0xc3; 48]))),
        sim_config(&platform),
    )
    .err()
    .expect("a manifest that is not the current one is refused at start");
    assert!(err.to_string().contains("--apply-manifest") && !err.to_string().contains('\n'), "{err}");
    // unless it is applied explicitly: a manifest update, new mesh CA, same root
    let apply = Config { apply_manifest: true, ..sim_config(&platform) };
    let running = start(&state, Some(manifest(&manifest_json(true, &[0xc3; 48]))), apply, Limits::default()).await;
    let rotated = running.client().ca().await.unwrap();
    assert_eq!(rotated.root_ca_pem, before.root_ca_pem);
    assert_ne!(rotated.mesh_ca_pem, before.mesh_ca_pem);
    assert_eq!(rotated.manifest_generation, 2);
    running.stop().await;

    // corrupt state is reported, not papered over
    std::fs::write(state.join("current"), "two\n").unwrap();
    let err = coordinator::service::Coordinator::open(&state, None, sim_config(&platform))
        .err()
        .expect("corrupt state refused");
    assert!(err.to_string().contains("not a generation number"), "{err}");
    std::fs::write(state.join("current"), "2\n").unwrap();
    std::fs::write(state.join("generations/2/mesh-ca.key"), "garbage").unwrap_or_else(|_| {
        // the key file is 0400; as root the write works, otherwise replace it
        std::fs::remove_file(state.join("generations/2/mesh-ca.key")).unwrap();
        std::fs::write(state.join("generations/2/mesh-ca.key"), "garbage").unwrap();
    });
    let err =
        coordinator::service::Coordinator::open(&state, None, sim_config(&platform)).err().expect("bad key refused");
    assert!(err.to_string().contains("mesh CA"), "{err}");
    // empty state without a manifest
    let err = coordinator::service::Coordinator::open(&tmp.path().join("empty"), None, Config::default())
        .err()
        .expect("needs a manifest");
    assert!(err.to_string().contains("--manifest"), "{err}");
}

#[tokio::test]
async fn binary_serves_cli_talks_to_it_and_sigterm_stops_it() {
    let bin = env!("CARGO_BIN_EXE_podmesh-coordinator");
    let tmp = tempfile::tempdir().unwrap();
    let platform = SimPlatform::new(tmp.path());
    let manifest_path = tmp.path().join("manifest.json");
    std::fs::write(&manifest_path, manifest_json(true, &MEASUREMENT).to_string()).unwrap();
    let hash_path = tmp.path().join("owner.sha256");
    let out = Command::new(bin).args(["owner-token", "--hash-out"]).arg(&hash_path).output().unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let token_path = tmp.path().join("owner.token");
    std::fs::write(&token_path, &token).unwrap();

    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let state = tmp.path().join("state");
    let mut child = Proc::spawn(
        "podmesh-coordinator serve",
        Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"])
            .arg(&state)
            .arg("--manifest")
            .arg(&manifest_path)
            .arg("--owner-token-file")
            .arg(&hash_path)
            .arg("--sim-anchor")
            .arg(&platform.anchor)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let root_pem = wait_serving(&mut child, &state, &url).await;
    // pinning by root fingerprint works as well as by PEM; a wrong pin fails the handshake
    let der = wire::pem::certificate("root", &root_pem).unwrap();
    let fingerprint: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&der).into();
    let pinned = Client::new(&url, ServerTrust::RootFingerprint(fingerprint)).unwrap();
    attest(&pinned, &platform.guest(MEASUREMENT, WEB_HOST_DATA), &Workload::new()).await.unwrap();
    let wrong = Client::new(&url, ServerTrust::RootFingerprint([0; 32])).unwrap();
    assert!(matches!(wrong.ca().await, Err(ClientError::Http { .. })));
    let other_root = pki::RootCa::generate().unwrap();
    let untrusting = Client::new(&url, ServerTrust::RootCaPem(other_root.cert_pem().to_owned())).unwrap();
    assert!(untrusting.ca().await.is_err());

    // CLI: manifest set rotates, manifest get shows generation 2
    let new_manifest = tmp.path().join("manifest2.json");
    std::fs::write(&new_manifest, manifest_json(true, &[0xc3; 48]).to_string()).unwrap();
    let root_file = state.join("root-ca.pem");
    let set = Command::new(bin)
        .args(["manifest", "set", "--coordinator", &url, "--root-ca"])
        .arg(&root_file)
        .arg("--token-file")
        .arg(&token_path)
        .arg(&new_manifest)
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let get = Command::new(bin)
        .args(["manifest", "get", "--coordinator", &url, "--root-ca"])
        .arg(&root_file)
        .output()
        .unwrap();
    assert!(get.status.success());
    let got: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(got["generation"], 2);
    let bad = Command::new(bin)
        .args(["manifest", "set", "--coordinator", &url, "--root-ca"])
        .arg(&root_file)
        .arg("--token-file")
        .arg(&hash_path) // the hash is not the token
        .arg(&new_manifest)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unauthorized"), "{}", String::from_utf8_lossy(&bad.stderr));

    // SIGTERM: graceful stop with exit status 0
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "coordinator did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");

    // bad command lines fail with a message, not a panic
    let out = Command::new(bin).args(["serve", "--listen", "nonsense", "--state", "/tmp/x"]).output().unwrap();
    assert!(!out.status.success());
    let out = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(tmp.path().join("s2"))
        .arg("--manifest")
        .arg(&hash_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest"), "{}", String::from_utf8_lossy(&out.stderr));
}
