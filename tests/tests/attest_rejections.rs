//! End to end: evidence the coordinator must refuse. Each case: the daemon keeps retrying with
//! the coordinator's reason in its log, no certificate is written, the deny table stays.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::cluster::*;
use podmesh_tests::harness::wait_for;
use std::time::Duration;

/// Runs one daemon against the running coordinator and checks that it is refused for `reason`.
fn refused(cl: &Cluster, tag: &str, host_data: &str, measurement: &str, reason: &str) {
    refused_with(cl, tag, host_data, measurement, &[], reason)
}

/// [`refused`] for a guest whose tsm-sim mount gets the `extra` flags.
fn refused_with(cl: &Cluster, tag: &str, host_data: &str, measurement: &str, extra: &[&str], reason: &str) {
    let tsm = cl.mount_tsm(tag, host_data, measurement, extra).unwrap();
    let pod = &cl.pods.a;
    firewall::deny::install(Some(pod.name())).unwrap();
    let dir = cl.path(&format!("tls-{tag}"));
    let mut att = cl.start_attest(pod, 1, &tsm.root, &dir, tag, &[]).unwrap();
    // At least two attempts: the reason is logged on each, with backoff in between.
    wait_for(&format!("two refused attempts ({reason})"), Duration::from_secs(20), || {
        if let Some(st) = att.exited() {
            panic!("attest exited ({st}) instead of retrying: {}", att.log_text());
        }
        (count(&att.log_text(), reason) >= 2).then_some(())
    })
    .unwrap();
    let log = att.log_text();
    assert!(log.contains("attestation attempt 1 failed") && log.contains("retrying in"), "{log}");
    assert!(!dir.join("certChain.pem").exists() && !dir.join("key.pem").exists(), "files written despite {reason}");
    assert!(deny_installed(pod), "deny table gone despite {reason}");
    att.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn attest_rejected_evidence_leaves_no_certificate_and_the_deny_table() {
    let t = podmesh_tests::skip_unless_root!();
    let (cl, coord) = Cluster::with_coordinator(&t, &[]).unwrap();
    refused(&cl, "wrong-measurement", HOSTDATA_A, OTHER_MEASUREMENT, "measurement_mismatch");
    refused(&cl, "unknown-host-data", HOSTDATA_UNKNOWN, MEASUREMENT, "unknown_host_data");
    // A guest launched by older firmware (LAUNCH_TCB bootloader 1) that reports the current TCB:
    // the standard manifest's minimum_tcb is also its launch floor.
    refused_with(&cl, "old-launch", HOSTDATA_A, MEASUREMENT, &["--launch-tcb", "bl=1"], "tcb_too_low");
    let coord_log = coord.log_text();
    assert!(
        coord_log.contains("measurement_mismatch") && coord_log.contains("unknown_host_data"),
        "coordinator log: {coord_log}"
    );
    assert!(coord_log.contains("LAUNCH_TCB bootloader SPL 1"), "coordinator log: {coord_log}");
    drop(coord);

    // Same state, a manifest without the simulated-TEE opt-in (applied explicitly at the restart).
    let strict = Manifest { allow_simulated: false, ..Manifest::standard() };
    let _coord = cl.start_coordinator(&strict, &["--apply-manifest"], "strict").unwrap();
    refused(&cl, "sim-not-allowed", HOSTDATA_A, MEASUREMENT, "simulated_not_allowed");
}
