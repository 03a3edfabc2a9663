//! End to end: the coordinator's life seen from the daemons. Down at boot then up (the daemon
//! recovers by itself), restart (root and mesh CA stay), manifest update (new mesh CA: old and
//! new workloads reject each other, both verify against the root).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::cluster::*;
use podmesh_tests::harness::wait_for;
use podmesh_tests::netns::{addr, PodPair};
use std::time::Duration;

#[test]
fn attest_recovers_from_a_coordinator_down_at_boot_and_restart_keeps_the_cas() {
    let t = podmesh_tests::skip_unless_root!();
    // First start creates the state (root CA the daemons are configured with), then it goes down.
    let (cl, mut coord) = Cluster::with_coordinator(&t, &[]).unwrap();
    coord.terminate(Duration::from_secs(5));
    let root_before = std::fs::read_to_string(cl.root_ca_path()).unwrap();

    let tsm_a = cl.boot(&cl.pods.a, "a", HOSTDATA_A, &[]).unwrap();
    let dir_a = cl.path("tls-a");
    let mut att_a = cl.start_attest(&cl.pods.a, 1, &tsm_a.root, &dir_a, "a", &[]).unwrap();
    wait_for("two failed attempts while the coordinator is down", Duration::from_secs(15), || {
        (count(&att_a.log_text(), "attestation attempt") >= 2).then_some(())
    })
    .unwrap();
    let log = att_a.log_text();
    assert!(log.contains("connecting to the coordinator"), "the reason names the connection: {log}");
    assert!(deny_installed(&cl.pods.a) && !dir_a.join("certChain.pem").exists());

    // The coordinator comes back (restart on the same state): the daemon recovers on its own.
    let _coord = cl.start_coordinator(&Manifest::standard(), &[], "2").unwrap();
    wait_for_certificate(&mut att_a, &dir_a, Duration::from_secs(15)).unwrap();
    assert_eq!(std::fs::read_to_string(cl.root_ca_path()).unwrap(), root_before, "restart kept the root CA");
    assert_eq!(read(&dir_a, "coordinator-root-ca.pem"), root_before);

    // A second restart, then another workload: same root, same mesh CA, mutual trust.
    drop(_coord);
    let _coord = cl.start_coordinator(&Manifest::standard(), &[], "3").unwrap();
    let tsm_b = cl.mount_tsm("b", HOSTDATA_B, MEASUREMENT, &[]).unwrap();
    let dir_b = cl.path("tls-b");
    let mut att_b = cl.start_attest(&cl.pods.b, 2, &tsm_b.root, &dir_b, "b", &[]).unwrap();
    wait_for_certificate(&mut att_b, &dir_b, Duration::from_secs(20)).unwrap();
    assert_eq!(read(&dir_a, "mesh-ca.pem"), read(&dir_b, "mesh-ca.pem"), "coordinator restarts keep the mesh CA");
    assert_eq!(read(&dir_b, "coordinator-root-ca.pem"), root_before);
    chain_verifies(&read(&dir_b, "certChain.pem"), &read(&dir_a, "mesh-ca.pem")).unwrap();
}

#[test]
fn attest_manifest_update_splits_old_and_new_workloads() {
    let t = podmesh_tests::skip_unless_root!();
    let (cl, coord) = Cluster::with_coordinator(&t, &[]).unwrap();
    let tsm_a = cl.mount_tsm("a", HOSTDATA_A, MEASUREMENT, &[]).unwrap();
    let dir_a = cl.path("tls-a");
    let mut att_a = cl.start_attest(&cl.pods.a, 1, &tsm_a.root, &dir_a, "a", &["--once"]).unwrap();
    wait_for_certificate(&mut att_a, &dir_a, Duration::from_secs(30)).unwrap();
    let st = wait_for("attest --once to exit", Duration::from_secs(10), || att_a.exited()).unwrap();
    assert!(st.success(), "attest --once: {st}: {}", att_a.log_text());
    drop(coord);

    // The owner changes the manifest (a new SAN for pod-b) at a restart, explicitly: a new
    // generation, a new mesh CA.
    let mut updated = Manifest::standard();
    updated.policies[1].2.push("pod-b.v2");
    let _coord = cl.start_coordinator(&updated, &["--apply-manifest"], "2").unwrap();
    let tsm_b = cl.mount_tsm("b", HOSTDATA_B, MEASUREMENT, &[]).unwrap();
    let dir_b = cl.path("tls-b");
    let mut att_b = cl.start_attest(&cl.pods.b, 2, &tsm_b.root, &dir_b, "b", &["--once"]).unwrap();
    wait_for_certificate(&mut att_b, &dir_b, Duration::from_secs(30)).unwrap();

    let (ca_a, ca_b) = (read(&dir_a, "mesh-ca.pem"), read(&dir_b, "mesh-ca.pem"));
    assert_ne!(ca_a, ca_b, "the manifest update rotated the mesh CA");
    let root = read(&dir_a, "coordinator-root-ca.pem");
    assert_eq!(root, read(&dir_b, "coordinator-root-ca.pem"), "the root never rotates");
    // Both verify against the root; neither against the other's mesh CA.
    chain_verifies(&read(&dir_a, "certChain.pem"), &root).unwrap();
    chain_verifies(&read(&dir_b, "certChain.pem"), &root).unwrap();
    assert!(chain_verifies(&read(&dir_b, "certChain.pem"), &ca_a).is_err());
    assert!(chain_verifies(&read(&dir_a, "certChain.pem"), &ca_b).is_err());

    // Over the wire: old server rejects the new client, new server rejects the old client.
    let _srv_a = mtls_server(&cl.pods.a, 9443, &dir_a, "pod-a").unwrap();
    let _srv_b = mtls_server(&cl.pods.b, 9443, &dir_b, "pod-b").unwrap();
    let (to_a, to_b) = (addr(PodPair::V4_A, 9443), addr(PodPair::V4_B, 9443));
    // (No deny tables in this test: it is about trust, not about the firewall.)
    let new_to_old = mtls_request(&cl.pods.b, to_a, "pod-a", &ca_b, Some(&dir_b));
    assert!(new_to_old.is_err(), "new workload accepted old server (or vice versa): {new_to_old:?}");
    let new_to_old_trusting_root = mtls_request(&cl.pods.b, to_a, "pod-a", &root, Some(&dir_b));
    assert!(new_to_old_trusting_root.is_err(), "old server accepted a new client: {new_to_old_trusting_root:?}");
    let old_to_new = mtls_request(&cl.pods.a, to_b, "pod-b", &root, Some(&dir_a));
    assert!(old_to_new.is_err(), "new server accepted an old client: {old_to_new:?}");
    // Same generation still works.
    assert_eq!(mtls_request(&cl.pods.a, to_a, "pod-a", &ca_a, Some(&dir_a)).as_deref(), Ok("hello from pod-a"));
}

#[test]
fn attest_coordinator_trust_by_fingerprint_and_on_first_use() {
    let t = podmesh_tests::skip_unless_root!();
    let (cl, _coord) = Cluster::with_coordinator(&t, &[]).unwrap();
    let tsm = cl.mount_tsm("a", HOSTDATA_A, MEASUREMENT, &[]).unwrap();
    let root_der = certs(&std::fs::read_to_string(cl.root_ca_path()).unwrap()).remove(0);
    let fingerprint = sha256_hex(&root_der);

    // The right fingerprint (colon-separated, as openssl prints it): a certificate.
    let colons: Vec<String> =
        fingerprint.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
    let dir = cl.path("tls-fp");
    let mut att = cl
        .start_attest(&cl.pods.a, 1, &tsm.root, &dir, "fp", &["--once", "--coordinator-fingerprint", &colons.join(":")])
        .unwrap();
    wait_for_certificate(&mut att, &dir, Duration::from_secs(30)).unwrap();
    assert!(!att.log_text().contains("trusted on first use"));

    // A wrong fingerprint: refused on every attempt, no files.
    let dir = cl.path("tls-wrong");
    let wrong = "00".repeat(32);
    let mut att =
        cl.start_attest(&cl.pods.a, 1, &tsm.root, &dir, "wrong", &["--coordinator-fingerprint", &wrong]).unwrap();
    wait_for("two refused attempts with a wrong fingerprint", Duration::from_secs(15), || {
        (count(&att.log_text(), "attestation attempt") >= 2).then_some(())
    })
    .unwrap();
    assert!(!dir.join("certChain.pem").exists(), "{}", att.log_text());
    att.terminate(Duration::from_secs(5));

    // Neither: trust on first use, warned loudly, and the root is what the coordinator has.
    let dir = cl.path("tls-tofu");
    let mut att = cl.start_attest(&cl.pods.a, 1, &tsm.root, &dir, "tofu", &["--once", "--tofu"]).unwrap();
    wait_for_certificate(&mut att, &dir, Duration::from_secs(30)).unwrap();
    let log = att.log_text();
    assert!(log.contains("trusted on first use") && log.contains("NOT verified"), "{log}");
    assert_eq!(certs(&read(&dir, "coordinator-root-ca.pem"))[0], root_der);
}
