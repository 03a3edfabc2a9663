//! End to end: `org.podmesh.Attestation1` on a private system bus with podmesh's policy file,
//! `podmesh status`, and opening the pod without a coordinator when explicitly asked.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::cluster::*;
use podmesh_tests::harness::{bin, clean_podmesh_env, wait_for};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEST: &str = "org.podmesh.Attestation1";
const PATH: &str = "/org/podmesh/Attestation1";

#[test]
fn attest_publishes_state_on_the_bus_and_reattests_on_request() {
    let t = podmesh_tests::skip_unless_root!();
    let cl = Cluster::new(&t).unwrap();
    let bus = Bus::start(cl.work.path()).unwrap();
    let _coord = cl.start_coordinator(&Manifest::standard(), &[], "1").unwrap();
    let tsm = cl.boot(&cl.pods.a, "a", HOSTDATA_A, &[]).unwrap();
    let dir = cl.path("tls-a");
    let mut cmd = cl.attest_command(&cl.pods.a, 1, &tsm.root, &dir, &[]).unwrap();
    let mut att = cl.spawn_attest(cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address), "a").unwrap();
    wait_for_certificate(&mut att, &dir, Duration::from_secs(30)).unwrap();
    wait_for("State ready on the bus", Duration::from_secs(10), || {
        let (ok, out) = bus.busctl(false, &["get-property", DEST, PATH, DEST, "State"]);
        (ok && out.trim() == r#"s "ready""#).then_some(())
    })
    .unwrap();

    // Properties: readable by anyone (policy), matching the files.
    let (ok, expiry) = bus.busctl(true, &["get-property", DEST, PATH, DEST, "CertificateExpiry"]);
    assert!(ok, "nobody may read properties: {expiry}");
    let expiry: u64 =
        expiry.trim().strip_prefix("t ").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{expiry}"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(expiry > now && expiry < now + 2 * 86400, "expiry {expiry}, now {now}");
    let (_, fp) = bus.busctl(false, &["get-property", DEST, PATH, DEST, "MeshCaFingerprint"]);
    let mesh_ca_der = certs(&read(&dir, "mesh-ca.pem")).remove(0);
    let want = sha256_hex(&mesh_ca_der);
    assert_eq!(fp.trim(), format!("s \"{want}\""));
    let (_, generation) = bus.busctl(true, &["get-property", DEST, PATH, DEST, "MeshGeneration"]);
    assert_eq!(generation.trim(), "t 1", "the certificate's manifest generation");

    // Reattest(): root only (policy), then a fresh certificate.
    let (ok, out) = bus.busctl(true, &["call", DEST, PATH, DEST, "Reattest"]);
    assert!(!ok && out.contains("denied"), "nobody must not trigger re-attestation: {out}");
    let before = read(&dir, "certChain.pem");
    let (ok, out) = bus.busctl(false, &["call", DEST, PATH, DEST, "Reattest"]);
    assert!(ok, "Reattest as root: {out}");
    wait_for("a second certificate after Reattest()", Duration::from_secs(20), || {
        (count(&att.log_text(), "mesh certificate written") >= 2 && read(&dir, "certChain.pem") != before).then_some(())
    })
    .unwrap();
    assert!(att.log_text().contains("re-attestation requested over D-Bus"));

    // podmesh status --json, inside the pod, sees the deny table, the files and the bus.
    let out = cl
        .pods
        .a
        .command(bin("podmesh").to_str().unwrap())
        .args(["status", "--json", "--tls-dir"])
        .arg(&dir)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["deny_table_installed"], false, "no mesh: the daemon opened the pod: {status}");
    assert_eq!(status["key_mode"], "0400");
    assert_eq!(status["dbus"]["state"], "ready", "{status}");
    assert_eq!(status["mesh_ca"]["sha256"], want.as_str());
    assert!(status["certificate"]["sans"].as_array().unwrap().iter().any(|s| s == "DNS:pod-a"), "{status}");
    assert!(status["file_errors"].as_array().unwrap().is_empty(), "{status}");

    att.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn attest_open_without_coordinator_only_when_asked() {
    let t = podmesh_tests::skip_unless_root!();
    // A root CA to configure, then no coordinator.
    let (cl, mut coord) = Cluster::with_coordinator(&t, &[]).unwrap();
    coord.terminate(Duration::from_secs(5));
    let pod = &cl.pods.a;
    let tsm = cl.boot(pod, "a", HOSTDATA_A, &[]).unwrap();

    // Flag set, coordinator unreachable: the pod opens, the daemon keeps trying.
    let dir = cl.path("tls-a");
    let mut att = cl.start_attest(pod, 1, &tsm.root, &dir, "a", &["--open-without-coordinator"]).unwrap();
    wait_for("the deny table to go", Duration::from_secs(15), || (!deny_installed(pod)).then_some(())).unwrap();
    // The log line follows the removal.
    wait_for("the reason in the log", Duration::from_secs(5), || {
        att.log_text().contains("--open-without-coordinator is set").then_some(())
    })
    .unwrap();
    assert!(att.exited().is_none(), "the daemon keeps running: {}", att.log_text());
    att.terminate(Duration::from_secs(5));

    // No coordinator configured at all: without the flag a config error (78), deny stays.
    firewall::deny::install(Some(pod.name())).unwrap();
    let bare = |extra: &[&str]| {
        let mut cmd = pod.command(bin("podmesh").to_str().unwrap());
        cmd.args(["attest", "--kernel-cmdline", "/dev/null", "--no-dbus", "--tls-dir"]).arg(&dir).args(extra);
        clean_podmesh_env(&mut cmd).output().unwrap()
    };
    let out = bare(&[]);
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no coordinator configured"));
    assert!(deny_installed(pod));
    // With the flag: opens and exits 0.
    let out = bare(&["--open-without-coordinator"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!deny_installed(pod));
}
