//! `podmesh proxy` as a process in a pod: configuration from the environment, startup
//! failures keep the deny table, SIGTERM exits 0, `kill -9` fails closed, and stock tools
//! (openssl s_client, curl, openssl s_server) interoperate with it.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::{
    harness::{bin, clean_podmesh_env, Proc, Test},
    netns::{Pod, PodPair},
    proxy_certs::{Identity, TestMesh},
    proxy_pods::{start_tls_server, App},
};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

const DAY: Duration = Duration::from_secs(24 * 3600);
const INGRESS: &str = "web#8443#false##plain#9090#true";

/// `podmesh proxy` inside a pod, logging to `log`; SIGKILLed on drop if still running.
/// (`ip netns exec` execs podmesh in place, so the child pid is the proxy itself.)
fn spawn_proxy(pod: &Pod, tls_dir: &Path, env: &[(&str, &str)], log: &Path) -> Proc {
    spawn_proxy_with(pod, &[], tls_dir, env, log)
}

/// `podmesh proxy ARGS...` inside `pod`.
fn spawn_proxy_with(pod: &Pod, args: &[&str], tls_dir: &Path, env: &[(&str, &str)], log: &Path) -> Proc {
    let mut cmd = pod.command(bin("podmesh").to_str().unwrap());
    cmd.arg("proxy").args(args).arg("--tls-dir").arg(tls_dir);
    // An empty kernel command line: only the environment configures this test.
    let cmdline = log.with_extension("cmdline");
    std::fs::write(&cmdline, "").unwrap();
    cmd.arg("--cmdline").arg(&cmdline);
    cmd.args(["--drain-timeout", "2s"]);
    clean_podmesh_env(&mut cmd);
    cmd.env("PODMESH_LOG", "info,mesh=debug").envs(env.iter().copied());
    Proc::logged("podmesh proxy", &mut cmd, log).unwrap()
}

const READY: &str = "proxy ready";

struct Setup {
    pods: PodPair,
    app: App,
    server: Identity,
    client: Identity,
    dir: tempfile::TempDir,
}

fn setup(t: &Test) -> Setup {
    let pods = PodPair::new(t).unwrap();
    let ca = TestMesh::new().unwrap();
    let server = ca.issue("server", &["10.99.0.2", "fd99::2"], DAY).unwrap();
    let client = ca.issue("client", &["10.99.0.1", "fd99::1"], DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.write_tls_dir(&dir.path().join("server")).unwrap();
    client.write_tls_dir(&dir.path().join("client")).unwrap();
    let app = App::start(&pods.b, &[8080, 8443, 9090]).unwrap();
    firewall::deny::install(Some(pods.b.name())).unwrap();
    Setup { pods, app, server, client, dir }
}

fn read_line(pod: &Pod, to: SocketAddr) -> Result<String, String> {
    pod.in_netns(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => Err("EOF".to_string()),
            Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .unwrap()
}

/// `curl` in `pod` to `url`, trusting `ca`, with a client certificate when `cert` names a chain
/// and key (the app speaks no HTTP, so its raw answer is accepted as HTTP/0.9).
fn curl(pod: &Pod, ca: &Path, cert: Option<(&Path, &Path)>, url: &str) -> Output {
    let mut cmd = pod.command("curl");
    cmd.args(["-sS", "--http0.9", "--max-time", "5", "--cacert"]).arg(ca);
    if let Some((chain, key)) = cert {
        cmd.arg("--cert").arg(chain).arg("--key").arg(key);
    }
    cmd.arg(url).output().unwrap()
}

/// `client`'s output starts with the app's answer `want`.
fn assert_answer(client: &str, out: &Output, want: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(want), "{client} got {text:?}; stderr {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_configuration_exits_nonzero_and_keeps_the_deny_table() {
    let t = podmesh_tests::skip_unless_root!();
    let s = setup(&t);
    let tls = s.dir.path().join("server");
    for (what, ingress, needle) in [
        ("port out of range", "web#99999#false", "web#99999#false"),
        ("bad bool", "web#8443#maybe", "web#8443#maybe"),
        ("duplicate port", "a#80#true##b#80#false", "duplicate"),
    ] {
        let log = s.dir.path().join("bad.log");
        let mut p = spawn_proxy(&s.pods.b, &tls, &[("CONTRAST_INGRESS_PROXY_CONFIG", ingress)], &log);
        let status = p.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(!status.success(), "{what}: must fail");
        assert!(p.log_text().contains(needle), "{what}: log must name the entry: {}", p.log_text());
        assert!(firewall::deny::is_installed(Some(s.pods.b.name())).unwrap(), "{what}: deny table must stay");
    }
    // Bad TLS knobs (environment of the unit): rejected before anything starts.
    for (var, value, needle) in [
        ("PODMESH_TLS13_CIPHERS", "TLS13_AES_256_GCM_SHA384,TLS13_BOGUS", "unknown TLS 1.3 suite \"TLS13_BOGUS\""),
        ("PODMESH_TLS13_CIPHERS", "", "empty suite name"),
        ("PODMESH_TLS_RESUMPTION", "maybe", "neither on nor off"),
    ] {
        let log = s.dir.path().join("knob.log");
        let mut p = spawn_proxy(&s.pods.b, &tls, &[("CONTRAST_INGRESS_PROXY_CONFIG", INGRESS), (var, value)], &log);
        assert!(!p.wait_exit(Duration::from_secs(10)).unwrap().success(), "{var}={value:?} must fail");
        assert!(p.log_text().contains(needle), "{var}={value:?}: {}", p.log_text());
        assert!(firewall::deny::is_installed(Some(s.pods.b.name())).unwrap(), "{var}: deny table must stay");
    }
    // Broken TLS material, through the binary: also non-zero, deny stays.
    let broken = s.dir.path().join("broken");
    Identity { key_pem: s.client.key_pem.clone(), ..s.server.clone() }.write_tls_dir(&broken).unwrap();
    let mut p = spawn_proxy(
        &s.pods.b,
        &broken,
        &[("CONTRAST_INGRESS_PROXY_CONFIG", INGRESS)],
        &s.dir.path().join("broken.log"),
    );
    assert!(!p.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(p.log_text().contains("does not match"), "{}", p.log_text());
    assert!(firewall::deny::is_installed(Some(s.pods.b.name())).unwrap());
    assert_eq!(s.app.count(), 0);
}

#[test]
fn sigterm_drains_and_kill_9_fails_closed() {
    let t = podmesh_tests::skip_unless_root!();
    let s = setup(&t);
    let tls = s.dir.path().join("server");
    let env = [("CONTRAST_INGRESS_PROXY_CONFIG", INGRESS), ("CONTRAST_ADMIN_PORT", "9901")];
    // A pod whose ephemeral range covers our listener ports gets told so.
    let sysctl = |kv: &str| assert!(s.pods.b.exec(&["sysctl", "-qw", kv]).unwrap().status.success(), "sysctl {kv}");
    sysctl("net.ipv4.ip_local_port_range=10240 65000");
    let mut p = spawn_proxy(&s.pods.b, &tls, &env, &s.dir.path().join("p1.log"));
    p.wait_for_log(READY, Duration::from_secs(20)).unwrap();
    assert!(
        p.log_text().contains("ports_ephemeral") && p.log_text().contains("port(s) 15006,15007 lie in"),
        "{}",
        p.log_text()
    );
    assert!(!firewall::deny::is_installed(Some(s.pods.b.name())).unwrap());
    assert!(
        !p.log_text().contains('\x1b'),
        "a log redirected to a file must carry no ANSI colours: {:?}",
        p.log_text()
    );
    assert!(p.log_text().contains("PODMESH_EVENT") || p.log_text().contains("proxy ready"), "{}", p.log_text());
    p.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(p.wait_exit(Duration::from_secs(10)).unwrap().success(), "SIGTERM must exit 0: {}", p.log_text());

    // Restart (idempotent rules) and then die hard; reserved ports draw no warning.
    sysctl("net.ipv4.ip_local_reserved_ports=15006-15007");
    let mut p = spawn_proxy(&s.pods.b, &tls, &env, &s.dir.path().join("p2.log"));
    p.wait_for_log(READY, Duration::from_secs(20)).unwrap();
    assert!(!p.log_text().contains("ports_ephemeral"), "{}", p.log_text());
    let rules = s.pods.b.exec(&["ip", "rule", "show"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rules.stdout).matches("fwmark 0x1 lookup 100").count(),
        1,
        "one rule after a restart"
    );
    p.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    p.wait_exit(Duration::from_secs(5)).unwrap();
    let before = s.app.count();
    for ip in [PodPair::V4_B.into(), std::net::IpAddr::from(PodPair::V6_B)] {
        for port in [8080u16, 8443] {
            let got = read_line(&s.pods.a, SocketAddr::new(ip, port));
            assert!(got.is_err(), "after kill -9, port {port} via {ip} answered {got:?}");
        }
        assert_eq!(
            read_line(&s.pods.a, SocketAddr::new(ip, 9090)).as_deref(),
            Ok("port=9090\n"),
            "#true stays plaintext"
        );
    }
    assert_eq!(s.app.count(), before + 2, "only the #true connections reached the app");
}

#[test]
fn openssl_and_curl_interoperate() {
    let t = podmesh_tests::skip_unless_root!();
    for tool in ["openssl", "curl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIP openssl_and_curl_interoperate: {tool} not installed");
            return;
        }
    }
    let s = setup(&t);
    let files = |name: &str, id: &Identity| -> (PathBuf, PathBuf, PathBuf) {
        let d = s.dir.path().join(name);
        id.write_tls_dir(&d).unwrap();
        (d.join("mesh-ca.pem"), d.join("certChain.pem"), d.join("key.pem"))
    };
    let (ca, chain, key) = files("client-files", &s.client);
    let mut server = spawn_proxy(
        &s.pods.b,
        &s.dir.path().join("server"),
        &[("CONTRAST_INGRESS_PROXY_CONFIG", INGRESS)],
        &s.dir.path().join("srv.log"),
    );
    server.wait_for_log(READY, Duration::from_secs(20)).unwrap();

    // Ingress client: openssl s_client with the mesh certificate (mTLS port).
    let mut sc = s.pods.a.command("openssl");
    sc.args(["s_client", "-connect", "10.99.0.2:8080", "-quiet", "-no_ign_eof", "-verify_return_error"])
        .arg("-CAfile")
        .arg(&ca)
        .arg("-cert")
        .arg(&chain)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = sc.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    assert_answer("s_client", &child.wait_with_output().unwrap(), "port=8080\nping\n");

    // Ingress client: curl.
    let out = curl(&s.pods.a, &ca, Some((&chain, &key)), "https://[fd99::2]:8080/");
    assert_answer("curl", &out, "port=8080\nGET / HTTP/1.1");
    // curl without a client certificate is refused on the mTLS port ...
    let out = curl(&s.pods.a, &ca, None, "https://10.99.0.2:8080/");
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "curl without certificate: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ... and accepted on the #false port.
    let out = curl(&s.pods.a, &ca, None, "https://10.99.0.2:8443/");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("port=8443\n"), "curl on #false: {:?}", out);
    drop(server);

    // Egress server: openssl s_server requiring a client certificate from the mesh CA, in pod b
    // (no proxy there now); the proxy in pod a originates mTLS to it.
    let (sca, schain, skey) = files("server-files", &s.server);
    let _ = firewall::tproxy::remove(Some(s.pods.b.name()));
    let _ = firewall::deny::remove(Some(s.pods.b.name()));
    // One s_server per family (OpenSSL binds IPv6 sockets v6-only).
    let mut servers = Vec::new();
    for (accept, port) in [("10.99.0.2:4443", 4443), ("[fd99::2]:4444", 4444)] {
        servers.push(
            s.pods
                .b
                .spawn(&[
                    "openssl",
                    "s_server",
                    "-accept",
                    accept,
                    "-www",
                    "-Verify",
                    "1",
                    "-verify_return_error",
                    "-CAfile",
                    sca.to_str().unwrap(),
                    "-cert",
                    schain.to_str().unwrap(),
                    "-cert_chain",
                    schain.to_str().unwrap(),
                    "-key",
                    skey.to_str().unwrap(),
                ])
                .unwrap(),
        );
        s.pods.b.wait_for_port(port, Duration::from_secs(5)).unwrap();
    }
    let egress = "srv#127.0.0.2:7443#10.99.0.2:4443##srv6#127.0.0.3:7443#[fd99::2]:4444#strict";
    let mut client = spawn_proxy(
        &s.pods.a,
        &s.dir.path().join("client"),
        &[("CONTRAST_INGRESS_PROXY_CONFIG", "DISABLED"), ("CONTRAST_EGRESS_PROXY_CONFIG", egress)],
        &s.dir.path().join("cli.log"),
    );
    client.wait_for_log(READY, Duration::from_secs(20)).unwrap();
    for listen in ["127.0.0.2:7443", "127.0.0.3:7443"] {
        let to: SocketAddr = listen.parse().unwrap();
        let page = s
            .pods
            .a
            .in_netns(move || {
                let mut c = TcpStream::connect(to).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut page = String::new();
                let _ = c.read_to_string(&mut page);
                page
            })
            .unwrap();
        assert!(
            page.starts_with("HTTP/1.0 200 ok"),
            "s_server via {listen} answered {:?}; proxy log: {}",
            &page[..page.len().min(200)],
            client.log_text()
        );
        assert!(page.contains("TLSv1.3"), "{listen}: TLS 1.3 expected");
    }
}

/// The effective capabilities of every thread of `pid` (from /proc/PID/task/*/status).
fn thread_cap_eff(pid: u32) -> Vec<String> {
    let mut caps = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        caps.extend(status.lines().filter_map(|l| l.strip_prefix("CapEff:")).map(|v| v.trim().to_string()));
    }
    caps
}

/// `--netns` (here through PODMESH_NETNS, as the peer-pods drop-in sets it): the proxy is
/// started in another namespace (`outer`, standing in for the VM's own) and must do all of its
/// work in the pod's: listeners, interception, routes, the deny table. It keeps only
/// CAP_NET_ADMIN on every thread, which is still enough to remove its routes at SIGTERM.
#[test]
fn netns_moves_the_whole_proxy_into_the_pod_and_it_keeps_only_cap_net_admin() {
    let t = podmesh_tests::skip_unless_root!();
    let s = setup(&t);
    let outer = Pod::new(&t).unwrap();
    let pod = s.pods.b.name();
    let routes = firewall::routes::RouteSpec { mark: 0x1, table: 100 };
    let env = [("CONTRAST_INGRESS_PROXY_CONFIG", INGRESS), ("PODMESH_NETNS", pod)];
    let mut p = spawn_proxy_with(&outer, &[], &s.dir.path().join("server"), &env, &s.dir.path().join("netns.log"));
    p.wait_for_log(READY, Duration::from_secs(20)).unwrap();
    assert!(
        p.log_text().contains("netns_entered") || p.log_text().contains("running inside network namespace"),
        "{}",
        p.log_text()
    );
    assert!(!firewall::deny::is_installed(Some(pod)).unwrap(), "the pod's deny table is the one removed");
    assert!(
        firewall::tproxy::is_installed(Some(pod)).unwrap()
            && firewall::routes::is_installed(routes, Some(pod)).unwrap()
    );
    assert!(!firewall::tproxy::is_installed(Some(outer.name())).unwrap(), "interception in the wrong namespace");
    assert!(!firewall::routes::is_installed(routes, Some(outer.name())).unwrap(), "routes in the wrong namespace");
    // Served from inside the pod: TLS on the #false port, plaintext passthrough.
    assert_eq!(read_line(&s.pods.a, SocketAddr::new(PodPair::V4_B.into(), 9090)).as_deref(), Ok("port=9090\n"));
    let ca = s.dir.path().join("server/mesh-ca.pem");
    let out = curl(&s.pods.a, &ca, None, "https://10.99.0.2:8443/");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("port=8443\n"), "curl on #false: {out:?}");

    let caps = thread_cap_eff(p.id());
    assert!(caps.len() >= 2, "the proxy runs event loops on more threads: {caps:?}");
    assert!(caps.iter().all(|c| c == "0000000000001000"), "every thread: CAP_NET_ADMIN only, got {caps:?}");
    let status = Command::new(bin("podmesh")).args(["status", "--json", "--no-dbus", "--netns", pod]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let me = json["proxies"].as_array().unwrap().iter().find(|x| x["pid"] == p.id()).cloned().unwrap_or_default();
    assert_eq!(me["effective"], serde_json::json!(["CAP_NET_ADMIN"]), "{json}");
    assert_eq!(me["unexpected"], serde_json::json!([]), "{json}");
    assert!(me["expected"][0]["reason"].as_str().unwrap_or("").contains("SO_MARK"), "{json}");

    p.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(p.wait_exit(Duration::from_secs(10)).unwrap().success(), "SIGTERM must exit 0: {}", p.log_text());
    assert!(
        !firewall::routes::is_installed(routes, Some(pod)).unwrap(),
        "routes removed with the kept capability: {}",
        p.log_text()
    );
    assert!(!p.log_text().contains("routes_remove_failed"), "{}", p.log_text());
}

/// A netns that does not exist: one clear line, exit 1, nothing touched.
#[test]
fn a_missing_netns_is_refused_not_ignored() {
    let out = Command::new(bin("podmesh"))
        .args(["proxy", "--netns", "pm-no-such-ns", "--cmdline", "/dev/null"])
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pm-no-such-ns") && err.contains("does not exist"), "{err}");
}

/// The host configures the mesh only through the env-file the proxy reads (PODMESH_ENV_FILE,
/// or --env-file). `podmesh attest --open-without-coordinator` must see the same mesh and leave
/// the pod closed for the proxy; before, it read no env-file, found "no mesh" and removed the
/// deny table before anything intercepted.
#[test]
fn attest_does_not_open_the_pod_when_the_env_file_configures_the_mesh() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).unwrap();
    let dir = t.tempdir().unwrap();
    let (env_file, cmdline) = (dir.path().join("podmesh.env"), dir.path().join("cmdline"));
    std::fs::write(&env_file, "CONTRAST_INGRESS_PROXY_CONFIG=web#8080#false\n").unwrap();
    std::fs::write(&cmdline, "").unwrap();
    let attest = |extra: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        let mut cmd = Command::new(bin("podmesh"));
        cmd.args(["attest", "--open-without-coordinator", "--no-dbus", "--netns", pod.name(), "--cmdline"])
            .arg(&cmdline)
            .args(extra);
        clean_podmesh_env(&mut cmd);
        cmd.envs(env.iter().copied()).output().unwrap()
    };
    let proxy_sees = Command::new(bin("podmesh"))
        .args(["config", "check", "--cmdline"])
        .arg(&cmdline)
        .env("PODMESH_ENV_FILE", &env_file)
        .env_remove("CONTRAST_INGRESS_PROXY_CONFIG")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&proxy_sees.stdout).contains("\"enabled\": true"), "the loader must see the mesh");
    let flag = ["--env-file", env_file.to_str().unwrap()];
    let var = [("PODMESH_ENV_FILE", env_file.as_os_str())];
    for (how, extra, env) in [("PODMESH_ENV_FILE", &[][..], &var[..]), ("--env-file", &flag[..], &[][..])] {
        firewall::deny::install(Some(pod.name())).unwrap();
        let out = attest(extra, env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            firewall::deny::is_installed(Some(pod.name())).unwrap(),
            "{how}: attest opened the pod although the proxy will intercept: {err}"
        );
        assert_eq!(out.status.code(), Some(78), "{how}: no coordinator and a mesh is a configuration error: {err}");
        assert!(err.contains("no coordinator configured") && !err.contains("deny_removed"), "{how}: {err}");
    }
    // The control: without a mesh anywhere, the same command does open the pod.
    firewall::deny::install(Some(pod.name())).unwrap();
    let out = attest(&[], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!firewall::deny::is_installed(Some(pod.name())).unwrap());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deny_removed")
            || String::from_utf8_lossy(&out.stderr).contains("deny table removed")
    );
}

/// `/etc/netns/<pod>/hosts`: what `ip netns exec` shows the pod's processes as /etc/hosts.
struct NetnsHosts(PathBuf);

impl NetnsHosts {
    fn new(pod: &Pod, hosts: &str) -> Self {
        let dir = Path::new("/etc/netns").join(pod.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        Self(dir)
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn egress_to_a_dns_name_is_checked_against_the_name_not_the_address() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let ca = TestMesh::new().unwrap();
    // The server at 10.99.0.2 is db.mesh.test, and its certificate says only that.
    let db = ca.issue("db", &["db.mesh.test"], DAY).unwrap();
    start_tls_server(&pods.b, 8443, &db.chain_pem, &db.key_pem).unwrap();
    let _hosts = NetnsHosts::new(&pods.a, "10.99.0.2 db.mesh.test other.mesh.test\n");
    let dir = tempfile::tempdir().unwrap();
    ca.issue("client", &["10.99.0.1"], DAY).unwrap().write_tls_dir(dir.path()).unwrap();
    let egress = [
        "db#127.0.0.2:7000#db.mesh.test:8443",
        "other#127.0.0.2:7001#other.mesh.test:8443",
        "ip#127.0.0.2:7002#10.99.0.2:8443#strict",
        "lax#127.0.0.2:7003#other.mesh.test:8443#any",
        "named#127.0.0.2:7004#10.99.0.2:8443#db.mesh.test",
    ]
    .join("##");
    let mut proxy = spawn_proxy(
        &pods.a,
        dir.path(),
        &[("CONTRAST_INGRESS_PROXY_CONFIG", "DISABLED"), ("CONTRAST_EGRESS_PROXY_CONFIG", &egress)],
        &dir.path().join("proxy.log"),
    );
    proxy.wait_for_log(READY, Duration::from_secs(20)).unwrap();
    let at = |listen: &str| read_line(&pods.a, listen.parse().unwrap());
    for listen in ["127.0.0.2:7000", "127.0.0.2:7003", "127.0.0.2:7004"] {
        assert_eq!(at(listen).as_deref(), Ok("hello-from-tls\n"), "{listen}: {}", proxy.log_text());
    }
    for listen in ["127.0.0.2:7001", "127.0.0.2:7002"] {
        assert!(at(listen).is_err(), "{listen} must refuse the server: {}", proxy.log_text());
    }
    proxy.wait_for_log("egress entry ip: peer certificate", Duration::from_secs(5)).unwrap();
    let log = proxy.log_text();
    for needle in [
        "egress entry other: peer certificate with SANs [db.mesh.test] does not satisfy the rule (other.mesh.test as a SAN); add other.mesh.test to the server's manifest policy sans",
        "egress entry ip: peer certificate with SANs [db.mesh.test] does not satisfy the rule (10.99.0.2 as a SAN)",
        "egress entry lax: #any accepts any server of the mesh at other.mesh.test",
        "egress entry db: server certificate of the mesh CA with db.mesh.test as a SAN",
    ] {
        assert!(log.contains(needle), "no {needle:?} in\n{log}");
    }
    assert_eq!(log.matches("identity_refused").count(), 2, "one line per refusal:\n{log}");
}
