//! End to end: a manifest update reaches a running mesh in seconds, without restarts. Two pods
//! (`podmesh attest` + `podmesh proxy`, real binaries) are attested under M1; a third pod, `x`,
//! is admitted only by M1. The owner sets M2 over the API: a and b notice the new generation
//! (long poll), re-attest, and their proxies switch to the new mesh CA; x's renewal is refused
//! and a and b refuse x once the grace period is over; a connection opened before the update
//! is closed after the grace.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::cluster::*;
use podmesh_tests::harness::{bin, clean_podmesh_env, wait_for, Proc};
use podmesh_tests::netns::{Pod, PodPair};
use podmesh_tests::proxy_pods::{http_get, read_line_from, App};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Short enough for a test, long enough to see the connection survive part of it.
const GRACE_SECS: u64 = 6;
const APP_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9901;
/// The egress listener of each pod towards the other one.
const EGRESS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11)), 7000);

/// The mesh of a pod: every port mTLS, one egress entry to `peer`'s app, the admin port.
fn mesh_env(cmd: &mut Command, peer: std::net::Ipv4Addr) -> &mut Command {
    cmd.env("CONTRAST_INGRESS_PROXY_CONFIG", "")
        .env("CONTRAST_EGRESS_PROXY_CONFIG", format!("peer#{EGRESS}#{peer}:{APP_PORT}"))
        .env("CONTRAST_ADMIN_PORT", ADMIN_PORT.to_string())
}

/// `podmesh proxy` in `pod` with [`mesh_env`].
fn start_proxy(cl: &Cluster, pod: &Pod, peer: std::net::Ipv4Addr, tls_dir: &Path, tag: &str) -> Proc {
    let mut cmd = pod.command(bin("podmesh").to_str().unwrap());
    cmd.arg("proxy").arg("--tls-dir").arg(tls_dir).args(["--cmdline", "/dev/null", "--reload-interval", "200ms"]);
    clean_podmesh_env(&mut cmd);
    mesh_env(&mut cmd, peer)
        // The environment, not the flag: the same test runs against a proxy without the flag.
        .env("PODMESH_ROTATION_GRACE", format!("{GRACE_SECS}s"))
        .env("PODMESH_LOG", "info,mesh=debug");
    let mut p = Proc::logged(&format!("podmesh proxy {tag}"), &mut cmd, &cl.path(&format!("proxy-{tag}.log"))).unwrap();
    p.wait_for_log("proxy ready", Duration::from_secs(20)).unwrap();
    p
}

/// From `pod`, through its egress listener to the peer's app: the app's greeting.
fn talk(pod: &Pod) -> Result<String, String> {
    read_line_from(pod, EGRESS).map_err(|e| e.to_string())?
}

/// `podmesh_connection_failures_total{reason="superseded"}` over all routes of `pod`'s proxy.
fn superseded(pod: &Pod) -> u64 {
    let metrics = http_get(pod, SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT)), "/metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with("podmesh_connection_failures_total{") && l.contains("reason=\"superseded\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// One echo round trip on an open connection.
fn echo(conn: &mut BufReader<TcpStream>, word: &str) -> Result<(), String> {
    conn.get_mut().write_all(format!("{word}\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => Err("closed".into()),
        Ok(_) if line.trim_end() == word => Ok(()),
        Ok(_) => Err(format!("unexpected {line:?}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn attest_manifest_update_rotates_the_running_mesh_without_restarts() {
    let t = podmesh_tests::skip_unless_root!();
    let cl = Cluster::new(&t).unwrap();
    let (a, b) = (&cl.pods.a, &cl.pods.b);

    // M1 admits a, b and x; M2 (a new SAN for pod-b) admits only a and b.
    let mut m1 = Manifest::standard();
    m1.policies.push((HOSTDATA_UNKNOWN, "pod-x", vec!["pod-x"]));
    let mut m2 = Manifest::standard();
    m2.policies[1].2.push("pod-b.v2");
    let m2_path = cl.path("manifest-m2.json");
    std::fs::write(&m2_path, m2.json()).unwrap();

    let (hash, token) = (cl.path("owner.sha256"), cl.path("owner.token"));
    let out = std::process::Command::new(bin("podmesh-coordinator"))
        .args(["owner-token", "--hash-out"])
        .arg(&hash)
        .output()
        .unwrap();
    assert!(out.status.success(), "owner-token: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&token, &out.stdout).unwrap();
    let _coord = cl.start_coordinator(&m1, &["--owner-token-file", hash.to_str().unwrap()], "1").unwrap();

    // a and b: attested, proxied, talking. x: attested from the coordinator's pod.
    let (tsm_a, tsm_b) = (cl.boot(a, "a", HOSTDATA_A, &[]).unwrap(), cl.boot(b, "b", HOSTDATA_B, &[]).unwrap());
    let tsm_x = cl.mount_tsm("x", HOSTDATA_UNKNOWN, MEASUREMENT, &[]).unwrap();
    let (dir_a, dir_b, dir_x) = (cl.path("tls-a"), cl.path("tls-b"), cl.path("tls-x"));
    // a and b know their mesh (the proxy opens the pod, as in the image); a publishes on a bus.
    let bus = Bus::start(cl.work.path()).unwrap();
    let mut cmd_a = cl.attest_command(a, 1, &tsm_a.root, &dir_a, &[]).unwrap();
    let mut att_a =
        cl.spawn_attest(mesh_env(cmd_a.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address), PodPair::V4_B), "a").unwrap();
    let mut cmd_b = cl.attest_command(b, 2, &tsm_b.root, &dir_b, &["--no-dbus"]).unwrap();
    let mut att_b = cl.spawn_attest(mesh_env(&mut cmd_b, PodPair::V4_A), "b").unwrap();
    let mut att_x = cl.start_attest(&cl.c, 1, &tsm_x.root, &dir_x, "x", &[]).unwrap();
    for (att, dir) in [(&mut att_a, &dir_a), (&mut att_b, &dir_b), (&mut att_x, &dir_x)] {
        wait_for_certificate(att, dir, Duration::from_secs(30)).unwrap();
    }
    let old_ca = read(&dir_a, "mesh-ca.pem");
    let _apps = (App::start(a, &[APP_PORT]).unwrap(), App::start(b, &[APP_PORT]).unwrap());
    let mut proxy_a = start_proxy(&cl, a, PodPair::V4_B, &dir_a, "a");
    let mut proxy_b = start_proxy(&cl, b, PodPair::V4_A, &dir_b, "b");
    assert_eq!(talk(a).as_deref(), Ok("port=8080"), "a -> b under M1");
    assert_eq!(talk(b).as_deref(), Ok("port=8080"), "b -> a under M1");
    let root = read(&dir_a, "coordinator-root-ca.pem");
    let (a_addr, b_addr) = (SocketAddr::from(([10, 98, 1, 2], APP_PORT)), SocketAddr::from(([10, 98, 2, 2], APP_PORT)));
    for (to, name) in [(a_addr, "pod-a"), (b_addr, "pod-b")] {
        assert_eq!(
            mtls_request(&cl.c, to, name, &root, Some(&dir_x)).as_deref(),
            Ok("port=8080"),
            "x -> {name} under M1"
        );
    }

    // A connection from a to b that stays open across the update.
    let stream = a.tcp_connect(EGRESS, Duration::from_secs(3)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut open = BufReader::new(stream);
    let mut greeting = String::new();
    open.read_line(&mut greeting).unwrap();
    assert_eq!(greeting.trim_end(), "port=8080");
    echo(&mut open, "before").unwrap();

    // The owner sets M2 on the running coordinator.
    let mut set = cl.c.command(bin("podmesh-coordinator").to_str().unwrap());
    set.args(["manifest", "set", "--coordinator", &format!("https://{}", Cluster::coord_addr(1)), "--root-ca"]);
    set.arg(cl.root_ca_path()).arg("--token-file").arg(&token).arg(&m2_path);
    let out = set.output().unwrap();
    let put_at = Instant::now();
    assert!(out.status.success(), "manifest set: {}", String::from_utf8_lossy(&out.stderr));
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set["generation"], 2, "{set}");
    let new_ca = set["mesh_ca_pem"].as_str().unwrap().to_owned();
    assert_ne!(new_ca, old_ca);

    // Within 10 s, without restarting anything: both pods hold a certificate under the new mesh
    // CA, their proxies present it (a client trusting only the new CA gets through, with the
    // other pod's new certificate) and a and b talk through their proxies again.
    let rotated = |from: &Pod, to: SocketAddr, name: &str, client: &Path| {
        read(client, "mesh-ca.pem") == new_ca
            && mtls_request(from, to, name, &new_ca, Some(client)).as_deref() == Ok("port=8080")
    };
    let new_ca_in_use = wait_for("a and b to talk under the new mesh CA", Duration::from_secs(10), || {
        (read(&dir_a, "mesh-ca.pem") == new_ca
            && read(&dir_b, "mesh-ca.pem") == new_ca
            && rotated(&cl.c, b_addr, "pod-b", &dir_a)
            && rotated(&cl.c, a_addr, "pod-a", &dir_b)
            && talk(a).as_deref() == Ok("port=8080")
            && talk(b).as_deref() == Ok("port=8080"))
        .then_some(())
    });
    if let Err(e) = new_ca_in_use {
        panic!(
            "{e}\nattest a: {}\nattest b: {}\nproxy a: {}\nproxy b: {}",
            att_a.log_text(),
            att_b.log_text(),
            proxy_a.log_text(),
            proxy_b.log_text()
        );
    }
    let switched = put_at.elapsed();
    for (p, what) in [(&mut proxy_a, "proxy a"), (&mut proxy_b, "proxy b"), (&mut att_a, "attest a")] {
        assert!(p.exited().is_none(), "{what} restarted or died: {}", p.log_text());
    }
    assert!(att_a.log_text().contains("mesh_ca_rotated") || att_a.log_text().contains("mesh CA rotated"));
    let metrics = http_get(a, SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT)), "/metrics");
    assert!(metrics.contains("podmesh_mesh_ca_rotations_total 1"), "{metrics}");
    let (dest, path) = ("org.podmesh.Attestation1", "/org/podmesh/Attestation1");
    let (ok, generation) = bus.busctl(true, &["get-property", dest, path, dest, "MeshGeneration"]);
    assert!(ok && generation.trim() == "t 2", "MeshGeneration on the bus: {generation}");

    // x: its renewal is refused with the coordinator's reason; its old certificate stays.
    att_x.wait_for_log("unknown_host_data", Duration::from_secs(15)).unwrap();
    assert_eq!(read(&dir_x, "mesh-ca.pem"), old_ca, "x got nothing under the new mesh CA");

    // The connection opened under M1 is closed once the grace is over (not before half of it).
    let mut closed_at = None;
    let deadline = put_at + Duration::from_secs(GRACE_SECS + 8);
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        if let Err(e) = echo(&mut open, &format!("ping{n}")) {
            closed_at = Some((put_at.elapsed(), e));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (closed_after, why) = closed_at.unwrap_or_else(|| {
        panic!("the connection opened under M1 is still open {GRACE_SECS}+8 s after the update: {}", proxy_a.log_text())
    });
    assert!(
        closed_after >= Duration::from_secs(GRACE_SECS / 2),
        "closed after {closed_after:?} ({why}), before the grace could have run"
    );

    // After the grace: a and b refuse x (and x cannot reach them with its M1 certificate),
    // while a and b still talk.
    let refused = wait_for("a and b to refuse x", Duration::from_secs(GRACE_SECS + 8), || {
        [(a_addr, "pod-a"), (b_addr, "pod-b")]
            .iter()
            .all(|(to, name)| mtls_request(&cl.c, *to, name, &root, Some(&dir_x)).is_err())
            .then_some(())
    });
    refused.unwrap_or_else(|e| panic!("{e}: {}", proxy_a.log_text()));
    assert_eq!(talk(a).as_deref(), Ok("port=8080"));
    assert_eq!(talk(b).as_deref(), Ok("port=8080"));
    // Either end may cut it first; the one that did counts it.
    assert!(superseded(a) + superseded(b) >= 1, "no connection counted as superseded");
    eprintln!("new mesh CA in use {switched:?} after the update; old connection closed after {closed_after:?}");
}
