//! End to end: coordinator + tsm-sim + `podmesh attest` in network namespaces, from an empty
//! tls dir to an mTLS request between two pods, with no hand-made certificate anywhere.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::cluster::*;
use podmesh_tests::harness::{bin, clean_podmesh_env, wait_for, Proc};
use podmesh_tests::netns::{addr, PodPair};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn attest_full_chain_to_mtls_between_two_pods_then_renew_and_stop() {
    let t = podmesh_tests::skip_unless_root!();
    // Short lifetime: the daemons renew at half of it, during this test.
    let (cl, _coord) = Cluster::with_coordinator(&t, &["--cert-lifetime-secs", "8"]).unwrap();
    let tsm_a = cl.mount_tsm("a", HOSTDATA_A, MEASUREMENT, &[]).unwrap();
    let tsm_b = cl.mount_tsm("b", HOSTDATA_B, MEASUREMENT, &[]).unwrap();
    for pod in [&cl.pods.a, &cl.pods.b] {
        firewall::deny::install(Some(pod.name())).unwrap();
    }
    let (dir_a, dir_b) = (cl.path("tls-a"), cl.path("tls-b"));
    let mut att_a = cl.start_attest(&cl.pods.a, 1, &tsm_a.root, &dir_a, "a", &[]).unwrap();
    let mut att_b = cl.start_attest(&cl.pods.b, 2, &tsm_b.root, &dir_b, "b", &[]).unwrap();
    wait_for_certificate(&mut att_a, &dir_a, Duration::from_secs(30)).unwrap();
    wait_for_certificate(&mut att_b, &dir_b, Duration::from_secs(30)).unwrap();

    // The files: Contrast names, key 0400, leaf SANs from the manifest, chain to the root.
    for dir in [&dir_a, &dir_b] {
        let mode = std::fs::metadata(dir.join("key.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400, "key.pem mode in {}", dir.display());
        let chain = read(dir, "certChain.pem");
        assert_eq!(certs(&chain).len(), 2, "leaf + intermediate");
        chain_verifies(&chain, &read(dir, "mesh-ca.pem")).unwrap();
        chain_verifies(&chain, &read(dir, "coordinator-root-ca.pem")).unwrap();
        assert_eq!(read(dir, "coordinator-root-ca.pem"), std::fs::read_to_string(cl.root_ca_path()).unwrap());
    }
    // No mesh configured in these pods: the daemon removed the deny table itself.
    // (The files come first, then the log line, then the removal: wait for the last.)
    for (pod, att) in [(&cl.pods.a, &att_a), (&cl.pods.b, &att_b)] {
        wait_for("deny table removal", Duration::from_secs(5), || {
            (!deny_installed(pod) && att.log_text().contains("deny table removed")).then_some(())
        })
        .unwrap();
    }
    let log_a = att_a.log_text();
    assert!(log_a.contains("mesh certificate written") && log_a.contains("deny table removed"), "{log_a}");
    assert!(!log_a.contains("PRIVATE KEY"), "the key must never be logged");

    // mTLS between the pods with the attested identities only.
    let _server = mtls_server(&cl.pods.a, 9443, &dir_a, "pod-a").unwrap();
    let target = addr(PodPair::V4_A, 9443);
    let mesh_ca_b = read(&dir_b, "mesh-ca.pem");
    assert_eq!(mtls_request(&cl.pods.b, target, "pod-a", &mesh_ca_b, Some(&dir_b)).as_deref(), Ok("hello from pod-a"));
    // Without a client certificate the server refuses (the handshake ends in an alert).
    let anon = mtls_request(&cl.pods.b, target, "pod-a", &mesh_ca_b, None);
    assert!(anon.is_err(), "request without a client certificate was served: {anon:?}");
    // The server's identity is pod-a, not pod-b.
    assert!(mtls_request(&cl.pods.b, target, "pod-b", &mesh_ca_b, Some(&dir_b)).is_err());

    // Renewal at half the 8 s lifetime: a new key and certificate replace the files.
    let first_leaf = certs(&read(&dir_a, "certChain.pem"))[0].clone();
    let first_key = read(&dir_a, "key.pem");
    wait_for("a renewed certificate in tls-a", Duration::from_secs(20), || {
        let now = certs(&std::fs::read_to_string(dir_a.join("certChain.pem")).ok()?).first()?.clone();
        (now != first_leaf).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(read(&dir_a, "key.pem"), first_key, "renewal must use a fresh key");
    chain_verifies(&read(&dir_a, "certChain.pem"), &read(&dir_a, "mesh-ca.pem")).unwrap();
    let log = att_a.log_text();
    assert!(log.contains("renewing in"), "{log}");
    assert_eq!(count(&log, "mesh certificate written"), 2, "renewal at half the validity, not in a loop: {log}");

    // SIGTERM: clean exit 0, files stay.
    att_a.stop(Duration::from_secs(5)).unwrap();
    assert!(dir_a.join("certChain.pem").exists());
    att_b.stop(Duration::from_secs(5)).unwrap();
}

#[test]
fn attest_without_tee_provider_exits_with_enxio_and_keeps_deny_table() {
    let t = podmesh_tests::skip_unless_root!();
    // The TEE is checked before the coordinator is asked, so the failure is about the TEE.
    let (cl, _coord) = Cluster::with_coordinator(&t, &[]).unwrap();
    let tsm = cl.boot(&cl.pods.a, "a", HOSTDATA_A, &["--inject", "enxio"]).unwrap();
    let dir = cl.path("tls-a");
    let mut att = cl.start_attest(&cl.pods.a, 1, &tsm.root, &dir, "a", &[]).unwrap();
    let st = wait_for("attest to exit", Duration::from_secs(20), || att.exited()).unwrap();
    let log = att.log_text();
    assert_eq!(st.code(), Some(69), "exit code for no TEE; log: {log}");
    assert!(log.contains("ENXIO") && log.contains("not a confidential VM"), "{log}");
    assert!(log.contains("deny table stays"), "{log}");
    assert!(!dir.join("certChain.pem").exists());
    assert!(deny_installed(&cl.pods.a));
}

/// A plain TCP app in `pod` on `port` answering `hello from app:<port>` to every connection.
fn plain_app(pod: &podmesh_tests::netns::Pod, port: u16) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let listener = pod.in_netns(|| std::net::TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = writeln!(s, "hello from app:{port}");
        }
    })
}

#[test]
fn attest_then_mesh_proxy_serves_mtls_between_two_pods() {
    let t = podmesh_tests::skip_unless_root!();
    let (cl, _coord) = Cluster::with_coordinator(&t, &[]).unwrap();
    let tsm_a = cl.boot(&cl.pods.a, "a", HOSTDATA_A, &[]).unwrap();
    let tsm_b = cl.mount_tsm("b", HOSTDATA_B, MEASUREMENT, &[]).unwrap();
    let (dir_a, dir_b) = (cl.path("tls-a"), cl.path("tls-b"));
    // Pod a has a mesh: ingress port 8081 plaintext, 8080 mTLS for pod-b's SPIFFE ID (which
    // the coordinator adds to every certificate), every other port mTLS.
    let ingress = "plain#8081#true##app#8080#mtls#spiffe://podmesh/pod-b";
    let mut cmd_a = cl.attest_command(&cl.pods.a, 1, &tsm_a.root, &dir_a, &[]).unwrap();
    let mut att_a = cl.spawn_attest(cmd_a.arg("--no-dbus").env("CONTRAST_INGRESS_PROXY_CONFIG", ingress), "a").unwrap();
    let mut att_b = cl.start_attest(&cl.pods.b, 2, &tsm_b.root, &dir_b, "b", &[]).unwrap();
    wait_for_certificate(&mut att_a, &dir_a, Duration::from_secs(30)).unwrap();
    wait_for_certificate(&mut att_b, &dir_b, Duration::from_secs(30)).unwrap();
    // With a mesh configured the daemon leaves the deny table to the proxy.
    std::thread::sleep(Duration::from_millis(300));
    assert!(deny_installed(&cl.pods.a), "attest must not open a pod that has a mesh: {}", att_a.log_text());

    let _app = plain_app(&cl.pods.a, 8080);
    let mut proxy_cmd = cl.pods.a.command(bin("podmesh").to_str().unwrap());
    proxy_cmd.args(["proxy", "--cmdline", "/dev/null", "--reload-interval", "200ms", "--tls-dir"]).arg(&dir_a);
    clean_podmesh_env(&mut proxy_cmd).env("CONTRAST_INGRESS_PROXY_CONFIG", ingress);
    let mut proxy = Proc::logged("podmesh proxy a", &mut proxy_cmd, &cl.path("proxy-a.log")).unwrap();
    wait_for("the proxy to remove the deny table", Duration::from_secs(20), || {
        if let Some(st) = proxy.exited() {
            panic!("podmesh proxy exited ({st}): {}", proxy.log_text());
        }
        (!deny_installed(&cl.pods.a)).then_some(())
    })
    .unwrap();

    let target = addr(PodPair::V4_A, 8080);
    let mesh_ca_b = read(&dir_b, "mesh-ca.pem");
    let reply = mtls_request(&cl.pods.b, target, "pod-a", &mesh_ca_b, Some(&dir_b));
    assert_eq!(reply.as_deref(), Ok("hello from app:8080"), "proxy log: {}", proxy.log_text());
    let anon = mtls_request(&cl.pods.b, target, "pod-a", &mesh_ca_b, None);
    assert!(anon.is_err(), "the proxy served a client without a mesh certificate: {anon:?}");
    // Another attested workload of the same mesh is not on 8080's list.
    let other = mtls_request(&cl.pods.b, target, "pod-a", &mesh_ca_b, Some(&dir_a));
    assert!(other.is_err(), "the proxy served pod-a's identity on a port for pod-b only: {other:?}");
    proxy.terminate(Duration::from_secs(5));
}
