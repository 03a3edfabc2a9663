//! The mesh proxy end to end: two pods (network namespaces), real nft TPROXY, real TLS.
//!
//! Pod `a` runs the proxy with egress entries only; pod `b` runs the proxy with ingress
//! interception and a plaintext app on several ports. Certificates come from the real `pki`
//! hierarchy. Every test runs as root and skips visibly otherwise.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use mesh::{
    config::EgressIdentity,
    proxy::{EgressPlan, IngressPlan, Plan},
};
use podmesh_tests::{
    harness::Test,
    netns::{Pod, PodPair},
    proxy_certs::{write_atomic, Identity, TestMesh},
    proxy_pods::*,
};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

const MTLS_APP: u16 = 8080;
const TLS_ONLY_APP: u16 = 8443;
const PLAIN_APP: u16 = 9090;
const ADMIN: u16 = 9901;
const DAY: Duration = Duration::from_secs(24 * 3600);

fn v4b() -> IpAddr {
    PodPair::V4_B.into()
}
fn v6b() -> IpAddr {
    PodPair::V6_B.into()
}

fn server_plan() -> Plan {
    Plan {
        ingress: Some(IngressPlan {
            plaintext: vec![("plain".into(), PLAIN_APP)],
            tls_only: vec![("web".into(), TLS_ONLY_APP)],
            ..IngressPlan::default()
        }),
        egress: vec![],
        admin_port: Some(ADMIN),
    }
}

fn egress(name: &str, listen: &str, host: IpAddr, port: u16, identity: EgressIdentity) -> EgressPlan {
    EgressPlan {
        name: name.into(),
        listen: listen.parse().unwrap(),
        remote_host: host.to_string(),
        remote_port: port,
        identity,
    }
}

const HOST: EgressIdentity = EgressIdentity::TargetHost;

fn client_plan() -> Plan {
    Plan {
        ingress: None,
        egress: vec![
            egress("app-v4", "127.0.0.2:7000", v4b(), MTLS_APP, HOST),
            egress("app-v6", "127.0.0.3:7000", v6b(), MTLS_APP, HOST),
            egress("sink-v4", "127.0.0.2:7090", v4b(), App::SINK_PORT, HOST),
            egress("sink-v6", "127.0.0.3:7090", v6b(), App::SINK_PORT, HOST),
            egress("named-v4", "127.0.0.4:7000", v4b(), MTLS_APP, EgressIdentity::OneOf(vec!["server.mesh".into()])),
        ],
        admin_port: None,
    }
}

/// Both pods with their proxies running, the app in `b`.
struct Mesh {
    pods: PodPair,
    ca: TestMesh,
    server_id: Identity,
    client_id: Identity,
    app: App,
    server: Option<Proxy>,
    _client: Proxy,
    server_dir: tempfile::TempDir,
}

fn start_mesh(t: &Test) -> Mesh {
    start_mesh_with(t, mesh::tls::TlsPolicy::default())
}

/// Both proxies with the TLS knobs `tls`.
fn start_mesh_with(t: &Test, tls: mesh::tls::TlsPolicy) -> Mesh {
    start_mesh_tuned(t, |o| mesh::proxy::Options { tls: tls.clone(), ..o }, |o| o)
}

/// Both proxies, their test options adjusted by `server` and `client`.
fn start_mesh_tuned(
    t: &Test,
    server: impl Fn(mesh::proxy::Options) -> mesh::proxy::Options,
    client: impl Fn(mesh::proxy::Options) -> mesh::proxy::Options,
) -> Mesh {
    let pods = PodPair::new(t).unwrap();
    let ca = TestMesh::new().unwrap();
    let server_id = ca.issue("server", &["10.99.0.2", "fd99::2", "server.mesh"], DAY).unwrap();
    let client_id = ca.issue("client", &["10.99.0.1", "fd99::1"], DAY).unwrap();
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    server_id.write_tls_dir(server_dir.path()).unwrap();
    client_id.write_tls_dir(client_dir.path()).unwrap();
    let app = App::start(&pods.b, &[MTLS_APP, TLS_ONLY_APP, PLAIN_APP, App::SINK_PORT]).unwrap();

    firewall::deny::install(Some(pods.b.name())).unwrap();
    let server = Proxy::start(&pods.b, server_plan(), server(test_options(server_dir.path()))).unwrap();
    assert!(!firewall::deny::is_installed(Some(pods.b.name())).unwrap(), "deny table must be gone once ready");
    assert!(firewall::tproxy::is_installed(Some(pods.b.name())).unwrap());
    let routes = firewall::routes::RouteSpec { mark: 1, table: 100 };
    assert!(firewall::routes::is_installed(routes, Some(pods.b.name())).unwrap());
    let client = Proxy::start(&pods.a, client_plan(), client(test_options(client_dir.path()))).unwrap();
    assert!(!firewall::tproxy::is_installed(Some(pods.a.name())).unwrap(), "egress-only pod: no interception table");
    Mesh { pods, ca, server_id, client_id, app, server: Some(server), _client: client, server_dir }
}

fn addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Through the egress listener `listen`: greeting line, then an echo of `msg`.
fn egress_echo(pod: &Pod, listen: &str, msg: &'static [u8]) -> (String, Vec<u8>) {
    let listen: SocketAddr = listen.parse().unwrap();
    pod.in_netns(move || {
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        s.write_all(msg).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        (line.trim_end().to_string(), back)
    })
    .unwrap()
}

#[test]
fn egress_to_ingress_mtls_round_trip_v4_and_v6() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh(&t);
    for listen in ["127.0.0.2:7000", "127.0.0.3:7000"] {
        let (greeting, echo) = egress_echo(&m.pods.a, listen, b"hello through the mesh");
        assert_eq!(greeting, "port=8080", "the app must see the original destination port ({listen})");
        assert_eq!(echo, b"hello through the mesh", "echo after half-close ({listen})");
    }
    assert_eq!(m.app.count(), 2);
    // An entry naming the server's identity (a DNS SAN it carries) instead of its address.
    let (greeting, _) = egress_echo(&m.pods.a, "127.0.0.4:7000", b"x");
    assert_eq!(greeting, "port=8080");

    // The admin port is exempt from interception and reports the traffic.
    let metrics = http_get(&m.pods.a, addr(v4b(), ADMIN), "/metrics");
    assert!(metrics.contains("podmesh_connections_proxied_total{route=\"mtls\",kind=\"ingress_mtls\"} 3"), "{metrics}");
    assert!(http_get(&m.pods.a, addr(v6b(), ADMIN), "/ready").starts_with("HTTP/1.1 200"));
    assert!(http_get(&m.pods.a, addr(v4b(), ADMIN), "/config").contains("\"tls_only\":[[\"web\",8443]]"));
}

#[test]
fn one_gib_crosses_byte_exact() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh(&t);
    for (listen, total) in [("127.0.0.2:7090", 1u64 << 30), ("127.0.0.3:7090", 1 << 30)] {
        let listen: SocketAddr = listen.parse().unwrap();
        let started = Instant::now();
        let verdict = m
            .pods
            .a
            .in_netns(move || {
                let mut s = TcpStream::connect(listen).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                send_pattern(&mut s, total, |s| s.shutdown(Shutdown::Write)).unwrap()
            })
            .unwrap();
        assert_eq!(verdict, format!("port={}\nOK {total}\n", App::SINK_PORT), "via {listen}");
        eprintln!("{total} bytes via {listen} in {:?}", started.elapsed());
    }
}

#[test]
fn mtls_port_rejects_clients_without_a_valid_mesh_certificate() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh(&t);
    let other = TestMesh::new().unwrap();
    let stranger = other.issue("stranger", &["10.99.0.1"], DAY).unwrap();
    let short = m.ca.issue("short-lived", &["10.99.0.1"], Duration::from_secs(1)).unwrap();
    std::thread::sleep(Duration::from_secs(2)); // `short` is now expired
    let ca = &m.server_id.mesh_ca_pem;
    let cases = [
        ("no client certificate", client_config(ca, None).unwrap()),
        ("certificate of another CA", client_config(ca, Some((&stranger.chain_pem, &stranger.key_pem))).unwrap()),
        ("expired certificate", client_config(ca, Some((&short.chain_pem, &short.key_pem))).unwrap()),
    ];
    let before = m.app.count();
    for ip in [v4b(), v6b()] {
        for (what, config) in &cases {
            let out = tls_exchange(&m.pods.a, addr(ip, MTLS_APP), config.clone()).unwrap();
            assert!(out.first_line.is_err(), "{what} via {ip}: got {:?}", out.first_line);
        }
        let plain = plain_exchange(&m.pods.a, addr(ip, MTLS_APP), b"GET / HTTP/1.0\r\n\r\n").unwrap();
        // The proxy answers a TLS alert at most; the app's greeting must never come back.
        assert!(
            !plain.as_deref().unwrap_or_default().starts_with("port="),
            "plaintext to an mTLS port via {ip} got {plain:?}"
        );
        // The valid client works on the same port.
        let good = client_config(ca, Some((&m.client_id.chain_pem, &m.client_id.key_pem))).unwrap();
        let out = tls_exchange(&m.pods.a, addr(ip, MTLS_APP), good).unwrap();
        assert_eq!(out.first_line.as_deref(), Ok("port=8080"));
        assert_eq!(out.server_chain_len, 2, "server presents leaf + intermediate");
    }
    assert_eq!(m.app.count(), before + 2, "rejected clients must never reach the app");
    let metrics = http_get(&m.pods.a, addr(v4b(), ADMIN), "/metrics");
    let failures = |reason: &str| -> u64 {
        let key =
            format!("podmesh_connection_failures_total{{route=\"mtls\",kind=\"ingress_mtls\",reason=\"{reason}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert_eq!(failures("no_client_cert"), 2, "{metrics}");
    assert_eq!(failures("bad_certificate"), 4, "{metrics}");
    assert!(failures("protocol") >= 2, "{metrics}");
}

#[test]
fn tls_only_and_plaintext_ports_and_no_direct_listener_access() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh(&t);
    let no_cert = client_config(&m.server_id.mesh_ca_pem, None).unwrap();
    for ip in [v4b(), v6b()] {
        let out = tls_exchange(&m.pods.a, addr(ip, TLS_ONLY_APP), no_cert.clone()).unwrap();
        assert_eq!(out.first_line.as_deref(), Ok("port=8443"), "#false port via {ip}");
        assert_eq!(out.server_chain_len, 2, "#false port presents leaf + intermediate");
        let plain = plain_exchange(&m.pods.a, addr(ip, PLAIN_APP), b"").unwrap();
        assert_eq!(plain.as_deref(), Ok("port=9090"), "#true port is plain TCP to the app via {ip}");
        for port in [15006, 15007] {
            let direct = plain_exchange(&m.pods.a, addr(ip, port), b"").unwrap();
            assert!(direct.is_err(), "direct connection to listener port {port} via {ip} got {direct:?}");
        }
    }
}

#[test]
fn egress_checks_the_server_identity_by_default_and_refuses_servers_outside_the_mesh() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let ca = TestMesh::new().unwrap();
    let other = TestMesh::new().unwrap();
    let client_id = ca.issue("client", &["10.99.0.1"], DAY).unwrap();
    let stranger = other.issue("stranger", &["10.99.0.2", "fd99::2"], DAY).unwrap();
    // A genuine mesh server, but not the one at the entry's address: its SANs lack 10.99.0.2.
    let misnamed = ca.issue("misnamed", &["other.example", "spiffe://mesh/other"], DAY).unwrap();
    start_tls_server(&pods.b, 8080, &stranger.chain_pem, &stranger.key_pem).unwrap();
    start_tls_server(&pods.b, 8081, &misnamed.chain_pem, &misnamed.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    client_id.write_tls_dir(dir.path()).unwrap();
    let ids = |ids: &[&str]| EgressIdentity::OneOf(ids.iter().map(|i| i.to_string()).collect());
    let plan = Plan {
        ingress: None,
        egress: vec![
            egress("stranger-v4", "127.0.0.2:7000", v4b(), 8080, EgressIdentity::Any),
            egress("stranger-v6", "127.0.0.3:7000", v6b(), 8080, HOST),
            egress("default", "127.0.0.2:7001", v4b(), 8081, HOST),
            egress("any", "127.0.0.2:7002", v4b(), 8081, EgressIdentity::Any),
            egress("named", "127.0.0.2:7003", v4b(), 8081, ids(&["spiffe://mesh/other"])),
            egress("named-dns", "127.0.0.2:7004", v4b(), 8081, ids(&["nope", "OTHER.example"])),
            egress("wrong-name", "127.0.0.2:7005", v4b(), 8081, ids(&["spiffe://mesh/billing", "other"])),
        ],
        admin_port: Some(ADMIN),
    };
    let _proxy = Proxy::start(&pods.a, plan, test_options(dir.path())).unwrap();
    for listen in ["127.0.0.2:7000", "127.0.0.3:7000", "127.0.0.2:7001", "127.0.0.2:7005"] {
        let got = read_line_from(&pods.a, listen.parse().unwrap()).unwrap();
        assert!(got.is_err(), "egress via {listen} must refuse the server, got {got:?}");
    }
    for listen in ["127.0.0.2:7002", "127.0.0.2:7003", "127.0.0.2:7004"] {
        let got = read_line_from(&pods.a, listen.parse().unwrap()).unwrap();
        assert_eq!(got.as_deref(), Ok("hello-from-tls"), "egress via {listen} accepts the server");
    }
    let metrics = http_get(&pods.a, addr("127.0.0.1".parse().unwrap(), ADMIN), "/metrics");
    for (route, reason) in [
        ("default", "identity_refused"),
        ("wrong-name", "identity_refused"),
        ("stranger-v4", "bad_certificate"),
        ("stranger-v6", "bad_certificate"),
    ] {
        let line =
            format!("podmesh_connection_failures_total{{route=\"{route}\",kind=\"egress\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    let config = http_get(&pods.a, addr("127.0.0.1".parse().unwrap(), ADMIN), "/config");
    assert!(config.contains("\"check\":\"any\""), "/config shows the rules: {config}");
}

#[test]
fn startup_failures_keep_the_deny_table() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).unwrap();
    let ns = Some(pod.name());
    let ca = TestMesh::new().unwrap();
    let good = ca.issue("server", &["server.mesh"], DAY).unwrap();
    let other = ca.issue("other", &["other.mesh"], DAY).unwrap();
    let stranger = TestMesh::new().unwrap().issue("stranger", &["x.mesh"], DAY).unwrap();
    firewall::deny::install(ns).unwrap();

    let check = |what: &str, id: Option<&Identity>, opts: Option<mesh::proxy::Options>, needle: &str| {
        let dir = tempfile::tempdir().unwrap();
        if let Some(id) = id {
            id.write_tls_dir(dir.path()).unwrap();
        }
        let opts = opts
            .map(|o| mesh::proxy::Options { tls_dir: dir.path().to_path_buf(), ..o })
            .unwrap_or_else(|| test_options(dir.path()));
        let err = Proxy::start(&pod, server_plan(), opts).err().unwrap_or_else(|| panic!("{what}: proxy started"));
        assert!(err.to_string().contains(needle), "{what}: {err:#}");
        assert!(firewall::deny::is_installed(ns).unwrap(), "{what}: deny table must stay");
    };
    let mismatched = Identity { key_pem: other.key_pem.clone(), ..good.clone() };
    check("key of another certificate", Some(&mismatched), None, "does not match");
    let foreign_ca = Identity { mesh_ca_pem: stranger.mesh_ca_pem.clone(), ..good.clone() };
    check("chain not under the mesh CA", Some(&foreign_ca), None, "does not verify");
    check("missing tls dir files", None, None, "mesh-ca.pem");
    let garbage = Identity {
        chain_pem: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into(),
        ..good.clone()
    };
    check("corrupt certificate PEM", Some(&garbage), None, "certChain.pem");
    let same_marks = mesh::proxy::Options { upstream_mark: 1, tproxy_mark: 1, ..mesh::proxy::Options::default() };
    check("upstream mark equal to the TPROXY mark", Some(&good), Some(same_marks), "upstream-mark");
    for threads in [0, mesh::proxy::MAX_THREADS + 1] {
        let o = mesh::proxy::Options { threads, ..mesh::proxy::Options::default() };
        check("event loop count out of range", Some(&good), Some(o), "--worker-threads must be between 1 and 256");
    }
    let squatter = pod.in_netns(|| std::net::TcpListener::bind("[::]:15006")).unwrap().unwrap();
    check("listener port in use", Some(&good), None, "15006");
    drop(squatter);
    pod.wait_for_port_free(15006, Duration::from_secs(5)).unwrap();

    // And with everything in order the deny table goes.
    let dir = tempfile::tempdir().unwrap();
    good.write_tls_dir(dir.path()).unwrap();
    let proxy = Proxy::start(&pod, server_plan(), test_options(dir.path())).unwrap();
    assert!(!firewall::deny::is_installed(ns).unwrap());
    drop(proxy);
}

#[test]
fn stopped_proxy_leaves_ports_closed_never_plaintext() {
    let t = podmesh_tests::skip_unless_root!();
    let mut m = start_mesh(&t);
    let before = m.app.count();
    if let Some(mut server) = m.server.take() {
        server.join().unwrap();
    }
    assert!(firewall::tproxy::is_installed(Some(m.pods.b.name())).unwrap(), "interception table stays after stop");
    for ip in [v4b(), v6b()] {
        for port in [MTLS_APP, TLS_ONLY_APP, App::SINK_PORT] {
            let got = plain_exchange(&m.pods.a, addr(ip, port), b"hello").unwrap();
            assert!(got.is_err(), "port {port} via {ip} after the proxy stopped: {got:?}");
        }
        let via_egress = read_line_from(&m.pods.a, "127.0.0.2:7000".parse().unwrap()).unwrap();
        assert!(via_egress.is_err(), "egress to a stopped ingress: {via_egress:?}");
    }
    assert_eq!(m.app.count(), before, "nothing may reach the app in plaintext");
    // #true ports are plaintext by configuration and keep working.
    assert_eq!(plain_exchange(&m.pods.a, addr(v4b(), PLAIN_APP), b"").unwrap().as_deref(), Ok("port=9090"));
}

#[test]
fn certificates_hot_reload_without_dropping_connections() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh(&t);
    let no_cert = client_config(&m.server_id.mesh_ca_pem, None).unwrap();
    let target = addr(v4b(), TLS_ONLY_APP);
    assert_eq!(server_leaf(&m.pods.a, target, no_cert.clone()).unwrap(), leaf_der(&m.server_id.chain_pem).unwrap());

    // An established connection through egress → ingress, kept open across the reload.
    let listen: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    let mut kept = m.pods.a.in_netns(move || TcpStream::connect(listen)).unwrap().unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(kept.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "port=8080\n");

    let renewed = m.ca.issue("server-gen2", &["10.99.0.2", "fd99::2"], DAY).unwrap();
    renewed.write_tls_dir(m.server_dir.path()).unwrap();
    let want = leaf_der(&renewed.chain_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_leaf(&m.pods.a, target, no_cert.clone()).unwrap() != want {
        assert!(Instant::now() < deadline, "new handshakes did not pick up the renewed certificate");
        std::thread::sleep(Duration::from_millis(100));
    }
    kept.write_all(b"still here\n").unwrap();
    let mut echo = String::new();
    reader.read_line(&mut echo).unwrap();
    assert_eq!(echo, "still here\n", "the established connection survives the reload");

    // Bad material is rejected; the renewed certificate stays in use.
    write_atomic(
        &m.server_dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        0o400,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(server_leaf(&m.pods.a, target, no_cert.clone()).unwrap(), want);
    let (greeting, echo) = egress_echo(&m.pods.a, "127.0.0.2:7000", b"after bad key");
    assert_eq!((greeting.as_str(), echo.as_slice()), ("port=8080", &b"after bad key"[..]));
    let mismatched =
        Identity { key_pem: m.client_id.key_pem.clone(), ..m.ca.issue("gen3", &["10.99.0.2"], DAY).unwrap() };
    mismatched.write_tls_dir(m.server_dir.path()).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(server_leaf(&m.pods.a, target, no_cert).unwrap(), want, "a key that does not match is rejected");
}

/// The server pod's `podmesh_tls_handshakes_total` for `route` and `handshake` (full/resumed).
fn handshakes(m: &Mesh, route: &str, kind: &str, handshake: &str) -> u64 {
    let metrics = http_get(&m.pods.a, addr(v4b(), ADMIN), "/metrics");
    let key = format!("podmesh_tls_handshakes_total{{route=\"{route}\",kind=\"{kind}\",handshake=\"{handshake}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {metrics}"))
}

#[test]
fn session_resumption_on_resumes_and_off_forces_full_handshakes() {
    let t = podmesh_tests::skip_unless_root!();
    for resumption in [true, false] {
        let m = start_mesh_with(&t, mesh::tls::TlsPolicy { resumption, ..Default::default() });
        // Egress → ingress (both podmesh): two consecutive connections.
        for _ in 0..2 {
            let (greeting, echo) = egress_echo(&m.pods.a, "127.0.0.2:7000", b"again");
            assert_eq!((greeting.as_str(), echo.as_slice()), ("port=8080", &b"again"[..]));
        }
        let (full, resumed) = (1 + u64::from(!resumption), u64::from(resumption));
        assert_eq!(
            (handshakes(&m, "mtls", "ingress_mtls", "full"), handshakes(&m, "mtls", "ingress_mtls", "resumed")),
            (full, resumed),
            "egress → ingress with resumption {resumption}"
        );
        // The server side on its own: a client that would resume gets no ticket when off.
        let resuming_client = client_config(&m.server_id.mesh_ca_pem, None).unwrap();
        for _ in 0..2 {
            let out = tls_exchange(&m.pods.a, addr(v4b(), TLS_ONLY_APP), resuming_client.clone()).unwrap();
            assert_eq!(out.first_line.as_deref(), Ok("port=8443"));
        }
        assert_eq!(
            (handshakes(&m, "web", "ingress_tls", "full"), handshakes(&m, "web", "ingress_tls", "resumed")),
            (full, resumed),
            "rustls client → TLS-only port with resumption {resumption}"
        );
    }
}

#[test]
fn resumed_session_of_an_expired_client_certificate_is_rejected() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh(&t);
    let short = m.ca.issue("short-lived", &["10.99.0.1"], Duration::from_secs(2)).unwrap();
    let config = client_config(&m.server_id.mesh_ca_pem, Some((&short.chain_pem, &short.key_pem))).unwrap();
    let target = addr(v4b(), MTLS_APP);
    let first = tls_exchange(&m.pods.a, target, config.clone()).unwrap();
    assert_eq!(first.first_line.as_deref(), Ok("port=8080"), "full handshake while the certificate is valid");
    std::thread::sleep(Duration::from_millis(3500));
    // The client still holds a ticket (1 h) and resumes; the proxy re-checks the chain.
    let second = tls_exchange(&m.pods.a, target, config).unwrap();
    assert!(second.first_line.is_err(), "a resumed session must not outlive its certificate: {second:?}");
    assert_eq!(handshakes(&m, "mtls", "ingress_mtls", "resumed"), 1, "the second connection did resume");
    let metrics = http_get(&m.pods.a, addr(v4b(), ADMIN), "/metrics");
    assert!(
        metrics.contains(
            "podmesh_connection_failures_total{route=\"mtls\",kind=\"ingress_mtls\",reason=\"bad_certificate\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn admin_endpoints_report_liveness_readiness_metrics_and_config() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh(&t);
    let admin = addr(v4b(), ADMIN);
    let live = http_get(&m.pods.a, admin, "/live");
    assert!(live.starts_with("HTTP/1.1 200") && live.ends_with("live\n"), "{live}");
    assert!(http_get(&m.pods.a, admin, "/ready").starts_with("HTTP/1.1 200"));
    assert!(http_get(&m.pods.a, admin, "/nope").starts_with("HTTP/1.1 404"));

    // One connection on the TLS-only entry: its own route counts it, bytes included.
    let out =
        tls_exchange(&m.pods.a, addr(v4b(), TLS_ONLY_APP), client_config(&m.server_id.mesh_ca_pem, None).unwrap())
            .unwrap();
    assert_eq!(out.first_line.as_deref(), Ok("port=8443"));
    let metrics = http_get(&m.pods.a, admin, "/metrics");
    let value = |key: &str| metrics.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
    assert_eq!(
        value("podmesh_connections_total{route=\"web\",kind=\"ingress_tls\"}").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        value("podmesh_connections_proxied_total{route=\"web\",kind=\"ingress_tls\"}").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        value("podmesh_connections_total{route=\"mtls\",kind=\"ingress_mtls\"}").as_deref(),
        Some("0"),
        "{metrics}"
    );
    let down: u64 = value("podmesh_bytes_downstream_total{route=\"web\",kind=\"ingress_tls\"}")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(down >= "port=8443\n".len() as u64, "{metrics}");
    assert!(metrics.contains("# TYPE podmesh_connection_failures_total counter"));

    // /config is JSON describing the running plan.
    let config = http_get(&m.pods.a, admin, "/config");
    let body = config.split_once("\r\n\r\n").map(|(_, b)| b).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("/config is not JSON ({e}): {body}"));
    assert_eq!(json["admin_port"], ADMIN, "{json}");
    assert_eq!(json["ingress"]["plaintext"][0], serde_json::json!(["plain", PLAIN_APP]), "{json}");
}

#[test]
fn connections_over_the_limit_are_closed_and_counted() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start_mesh_tuned(&t, |o| mesh::proxy::Options { max_connections: 2, ..o }, |o| o);
    let listen: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    let open = |pod: &Pod| -> (TcpStream, Result<String, String>) {
        let s = pod.in_netns(move || TcpStream::connect(listen)).unwrap().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        let r = match BufReader::new(s.try_clone().unwrap()).read_line(&mut line) {
            Ok(0) => Err("EOF".to_string()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(e.to_string()),
        };
        (s, r)
    };
    let (first, r1) = open(&m.pods.a);
    let (_second, r2) = open(&m.pods.a);
    assert_eq!((r1.as_deref(), r2.as_deref()), (Ok("port=8080"), Ok("port=8080")));
    let (_third, r3) = open(&m.pods.a);
    assert!(r3.is_err(), "connection 3 with --max-connections 2 must be closed, got {r3:?}");
    let metrics = http_get(&m.pods.a, addr(v4b(), ADMIN), "/metrics");
    assert!(
        metrics.contains("podmesh_connection_failures_total{route=\"mtls\",kind=\"ingress_mtls\",reason=\"limit\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("podmesh_connections_active{route=\"mtls\",kind=\"ingress_mtls\"} 2"), "{metrics}");

    // A freed slot is usable again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_s, r) = open(&m.pods.a);
        if r.as_deref() == Ok("port=8080") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot of a closed connection was not released: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn egress_rejects_a_resumed_session_whose_server_certificate_expired() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let ca = TestMesh::new().unwrap();
    let client_id = ca.issue("client", &["10.99.0.1"], DAY).unwrap();
    let short = ca.issue("short-lived-server", &["10.99.0.2"], Duration::from_secs(2)).unwrap();
    // A plain rustls server (default config: it issues session tickets).
    start_tls_server(&pods.b, 8080, &short.chain_pem, &short.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    client_id.write_tls_dir(dir.path()).unwrap();
    let plan = Plan {
        ingress: None,
        egress: vec![egress("short", "127.0.0.2:7000", v4b(), 8080, HOST)],
        admin_port: Some(ADMIN),
    };
    let _proxy = Proxy::start(&pods.a, plan, test_options(dir.path())).unwrap();
    let listen: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    assert_eq!(read_line_from(&pods.a, listen).unwrap().as_deref(), Ok("hello-from-tls"), "full handshake while valid");
    std::thread::sleep(Duration::from_millis(3500));
    let got = read_line_from(&pods.a, listen).unwrap();
    assert!(got.is_err(), "a resumed session must not outlive the server's certificate, got {got:?}");
    let metrics = http_get(&pods.a, addr("127.0.0.1".parse().unwrap(), ADMIN), "/metrics");
    let resumed = "podmesh_tls_handshakes_total{route=\"short\",kind=\"egress\",handshake=\"resumed\"} 1";
    assert!(
        metrics.contains(resumed),
        "the second connection must have resumed (else the test proves nothing): {metrics}"
    );
}

#[test]
fn ingress_allow_list_admits_only_the_identities_it_names() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let ca = TestMesh::new().unwrap();
    let server_id = ca.issue("server", &["10.99.0.2", "fd99::2"], DAY).unwrap();
    let frontend = ca.issue("frontend", &["10.99.0.1", "frontend.mesh"], DAY).unwrap();
    let backend = ca.issue("backend", &["10.99.0.1", "spiffe://mesh/backend"], DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    server_id.write_tls_dir(dir.path()).unwrap();
    const OPEN: u16 = 8081;
    let app = App::start(&pods.b, &[MTLS_APP, OPEN]).unwrap();
    let allow = vec!["frontend.mesh".to_string(), "spiffe://mesh/ops".to_string()];
    let plan = Plan {
        ingress: Some(IngressPlan { mtls: vec![("web".into(), MTLS_APP, allow)], ..IngressPlan::default() }),
        egress: vec![],
        admin_port: Some(ADMIN),
    };
    firewall::deny::install(Some(pods.b.name())).unwrap();
    let _proxy = Proxy::start(&pods.b, plan, test_options(dir.path())).unwrap();
    let config = |id: &Identity| client_config(&server_id.mesh_ca_pem, Some((&id.chain_pem, &id.key_pem))).unwrap();
    let (front, back) = (config(&frontend), config(&backend));
    // A port without a list takes any mesh certificate. (Each client now holds a session
    // ticket for the pod's addresses, which it offers to the listed port below.)
    for (who, c) in [("backend", &back), ("frontend", &front)] {
        for ip in [v4b(), v6b()] {
            let o = tls_exchange(&pods.a, addr(ip, OPEN), c.clone()).unwrap();
            assert_eq!(o.first_line.as_deref(), Ok("port=8081"), "{who} to the port without a list via {ip}");
        }
    }
    assert_eq!(app.count(), 4);
    // The listed identity gets the app's answer, the last time on a resumed session.
    for ip in [v4b(), v6b(), v4b()] {
        let o = tls_exchange(&pods.a, addr(ip, MTLS_APP), front.clone()).unwrap();
        assert_eq!(o.first_line.as_deref(), Ok("port=8080"), "frontend to the listed port via {ip}");
    }
    assert_eq!(app.count(), 7);
    // Another mesh identity (with a ticket from the open port): an alert, and the app sees nothing.
    for ip in [v4b(), v6b()] {
        let o = tls_exchange(&pods.a, addr(ip, MTLS_APP), back.clone()).unwrap();
        let err = o.first_line.expect_err("backend must be refused");
        assert!(err.contains("CertificateUnknown"), "backend via {ip}: want an alert, got {err}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.count(), 7, "the app saw a refused client");
    let metrics = http_get(&pods.a, addr(v4b(), ADMIN), "/metrics");
    for line in [
        "podmesh_connection_failures_total{route=\"web\",kind=\"ingress_mtls\",reason=\"identity_refused\"} 2",
        "podmesh_connection_failures_total{route=\"mtls\",kind=\"ingress_mtls\",reason=\"identity_refused\"} 0",
        "podmesh_connections_proxied_total{route=\"web\",kind=\"ingress_mtls\"} 3",
        "podmesh_tls_handshakes_total{route=\"web\",kind=\"ingress_mtls\",handshake=\"resumed\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    let config = http_get(&pods.a, addr(v4b(), ADMIN), "/config");
    assert!(config.contains("\"mtls\":[[\"web\",8080,[\"frontend.mesh\",\"spiffe://mesh/ops\"]]]"), "{config}");
}
