//! The host is the adversary (issue #12, data plane): a `host` namespace routes between a
//! `peer` pod (podmesh egress), the `pod` under test (podmesh ingress + app) and a `sink`,
//! and tries to make the pod forward mesh traffic to the sink in plaintext. Also: non-TCP
//! protocols stay closed after readiness, and a SYN that reuses a 4-tuple in TIME_WAIT goes
//! through the proxy, never straight to the app.
//!
//! ```text
//!  peer 10.98.1.1 ─ h1 ┐                 ┌ h2 ─ pod 10.98.2.1   (proxy; app on 8080 #false, 8081 mTLS)
//!  fd98:1::1           host (routes) ────┤      fd98:2::1
//!                                        └ h3 ─ sink 10.98.3.1, and 192.0.2.1 / 2001:db8::1 on lo
//!  host: 192.0.2.1 and 2001:db8::1 via the pod; from the pod (iif h2, table 200) via the sink
//! ```

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use mesh::proxy::{EgressPlan, IngressPlan, Plan};
use podmesh_tests::{
    harness::Test,
    netns::{Pod, PodPair},
    proxy_certs::{Identity, TestMesh},
    proxy_pods::{client_config, test_options, App, Proxy},
};
use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

const DAY: Duration = Duration::from_secs(24 * 3600);
const TLS_ONLY: u16 = 8080;
const MTLS: u16 = 8081;
const ADMIN: u16 = 9901;
const SECRET: &[u8] = b"SECRET-PLAINTEXT";
const FOREIGN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const FOREIGN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const POD_V4: Ipv4Addr = Ipv4Addr::new(10, 98, 2, 1);
const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd98, 2, 0, 0, 0, 0, 0, 1);

/// The four namespaces, wired as in the module picture.
struct Net {
    peer: Pod,
    host: Pod,
    pod: Pod,
    sink: Pod,
}

impl Net {
    fn new(t: &Test) -> Self {
        let net = Net {
            peer: Pod::new(t).unwrap(),
            host: Pod::new(t).unwrap(),
            pod: Pod::new(t).unwrap(),
            sink: Pod::new(t).unwrap(),
        };
        let h = |args: &[&str]| net.host.exec(args).unwrap();
        for (i, p) in [(1, &net.peer), (2, &net.pod), (3, &net.sink)] {
            let dev = format!("h{i}");
            h(&["ip", "link", "add", &dev, "type", "veth", "peer", "name", "eth0", "netns", p.name()]);
            h(&["ip", "addr", "add", &format!("10.98.{i}.254/24"), "dev", &dev]);
            h(&["ip", "-6", "addr", "add", &format!("fd98:{i}::fe/64"), "dev", &dev, "nodad"]);
            h(&["ip", "link", "set", &dev, "up"]);
            for args in [
                vec![
                    "ip".to_string(),
                    "addr".into(),
                    "add".into(),
                    format!("10.98.{i}.1/24"),
                    "dev".into(),
                    "eth0".into(),
                ],
                vec![
                    "ip".into(),
                    "-6".into(),
                    "addr".into(),
                    "add".into(),
                    format!("fd98:{i}::1/64"),
                    "dev".into(),
                    "eth0".into(),
                    "nodad".into(),
                ],
                vec!["ip".into(), "link".into(), "set".into(), "eth0".into(), "up".into()],
                vec![
                    "ip".into(),
                    "route".into(),
                    "add".into(),
                    "default".into(),
                    "via".into(),
                    format!("10.98.{i}.254"),
                ],
                vec![
                    "ip".into(),
                    "-6".into(),
                    "route".into(),
                    "add".into(),
                    "default".into(),
                    "via".into(),
                    format!("fd98:{i}::fe"),
                ],
            ] {
                p.exec(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            }
        }
        h(&["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        net.sink.exec(&["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]).unwrap();
        net.sink.exec(&["ip", "-6", "addr", "add", "2001:db8::1/128", "dev", "lo"]).unwrap();
        // The host's lie: the foreign address lives "in the pod" for everyone but the pod,
        // whose packets to it go to the sink.
        h(&["ip", "route", "add", "192.0.2.1", "via", "10.98.2.1"]);
        h(&["ip", "-6", "route", "add", "2001:db8::1", "via", "fd98:2::1"]);
        h(&["ip", "rule", "add", "iif", "h2", "lookup", "200"]);
        h(&["ip", "-6", "rule", "add", "iif", "h2", "lookup", "200"]);
        h(&["ip", "route", "add", "192.0.2.1", "via", "10.98.3.1", "table", "200"]);
        h(&["ip", "-6", "route", "add", "2001:db8::1", "via", "fd98:3::1", "table", "200"]);
        net
    }

    /// The host rewrites the destination of the peer's SYNs for the pod's mTLS port.
    fn dnat_peer_to_foreign(&self) {
        self.dnat_peer_to(FOREIGN_V4, FOREIGN_V6);
    }

    /// The host rewrites the destination of the peer's SYNs for the pod's mTLS port to `v4`/`v6`.
    fn dnat_peer_to(&self, v4: Ipv4Addr, v6: Ipv6Addr) {
        let rules = format!(
            "table inet hostnat {{ chain pre {{ type nat hook prerouting priority dstnat; \
             iifname \"h1\" ip daddr {POD_V4} tcp dport {MTLS} dnat ip to {v4}; \
             iifname \"h1\" ip6 daddr {POD_V6} tcp dport {MTLS} dnat ip6 to [{v6}]; }}; }}"
        );
        self.host.exec(&["nft", &rules]).unwrap();
    }
}

/// Everything the sink ever receives, over all connections.
struct Sink {
    bytes: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

impl Sink {
    fn start(pod: &Pod, ports: &[u16]) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        for &port in ports {
            let listener = pod.in_netns(move || TcpListener::bind(("::", port))).unwrap().unwrap();
            let (bytes, connections) = (bytes.clone(), connections.clone());
            std::thread::spawn(move || {
                for mut s in listener.incoming().flatten() {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let bytes = bytes.clone();
                    std::thread::spawn(move || {
                        let _ = s.write_all(b"sink says hello\n");
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = s.read(&mut buf) {
                            bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    });
                }
            });
        }
        Self { bytes, connections }
    }

    fn assert_empty(&self, what: &str) {
        std::thread::sleep(Duration::from_millis(300));
        let got = self.bytes.lock().unwrap().clone();
        assert!(
            self.connections.load(Ordering::SeqCst) == 0 && got.is_empty(),
            "{what}: the sink got {} connection(s) and {:?}",
            self.connections.load(Ordering::SeqCst),
            String::from_utf8_lossy(&got)
        );
    }
}

/// The proxied pod: certificates, app, deny table, proxy; and the peer with its egress.
struct Mesh {
    net: Net,
    pod_id: Identity,
    app: App,
    sink: Sink,
    _proxies: (Proxy, Proxy),
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn egress(name: &str, listen: &str, host: IpAddr) -> EgressPlan {
    EgressPlan {
        name: name.into(),
        listen: listen.parse().unwrap(),
        remote_host: host.to_string(),
        remote_port: MTLS,
        identity: Default::default(),
    }
}

/// The peer's plan: egress to the pod's mTLS port over IPv4 and IPv6, default identity check.
fn peer_plan() -> Plan {
    Plan {
        ingress: None,
        egress: vec![
            egress("pod-v4", "127.0.0.2:7081", POD_V4.into()),
            egress("pod-v6", "127.0.0.3:7081", POD_V6.into()),
        ],
        admin_port: None,
    }
}

fn start(t: &Test) -> Mesh {
    let net = Net::new(t);
    let ca = TestMesh::new().unwrap();
    let pod_id = ca.issue("pod", &["10.98.2.1", "fd98:2::1"], DAY).unwrap();
    let peer_id = ca.issue("peer", &["10.98.1.1", "fd98:1::1"], DAY).unwrap();
    let (pod_dir, peer_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    pod_id.write_tls_dir(pod_dir.path()).unwrap();
    peer_id.write_tls_dir(peer_dir.path()).unwrap();
    let app = App::start(&net.pod, &[TLS_ONLY, MTLS]).unwrap();
    let sink = Sink::start(&net.sink, &[TLS_ONLY, MTLS]);
    firewall::deny::install(Some(net.pod.name())).unwrap();
    let plan = Plan {
        ingress: Some(IngressPlan {
            plaintext: vec![],
            tls_only: vec![("web".into(), TLS_ONLY)],
            udp: vec![],
            mtls: vec![],
        }),
        egress: vec![],
        admin_port: Some(ADMIN),
    };
    let pod_proxy = Proxy::start(&net.pod, plan, test_options(pod_dir.path())).unwrap();
    let peer_proxy = Proxy::start(&net.peer, peer_plan(), test_options(peer_dir.path())).unwrap();
    Mesh { net, pod_id, app, sink, _proxies: (pod_proxy, peer_proxy), _dirs: (pod_dir, peer_dir) }
}

/// From the host: TLS to `to` (verifying the pod's real certificate by the name `name`),
/// then [`SECRET`], then whatever comes back. `Err` is the first failure, with its kind.
fn host_sends_secret(m: &Mesh, to: SocketAddr, name: IpAddr) -> Result<String, (ErrorKind, String)> {
    let config = client_config(&m.pod_id.mesh_ca_pem, None).unwrap();
    m.net
        .host
        .in_netns(move || {
            let fail = |e: std::io::Error| (e.kind(), e.to_string());
            let tcp = TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(fail)?;
            tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let conn =
                rustls::ClientConnection::new(config, rustls_pki_types::ServerName::IpAddress(name.into())).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(SECRET).map_err(fail)?;
            tls.flush().map_err(fail)?;
            let mut line = String::new();
            BufReader::new(&mut tls).read_line(&mut line).map_err(fail)?;
            Ok(line.trim_end().to_string())
        })
        .unwrap()
}

/// From the peer, through its egress listener `listen`: the first line back, after sending
/// [`SECRET`] (or the error).
fn peer_sends_secret(m: &Mesh, listen: &str) -> Result<String, String> {
    sends_secret(&m.net.peer, listen)
}

/// From `from`, through its egress listener `listen`: as [`peer_sends_secret`].
fn sends_secret(from: &Pod, listen: &str) -> Result<String, String> {
    let listen: SocketAddr = listen.parse().unwrap();
    from.in_netns(move || {
        let mut s = TcpStream::connect(listen).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(SECRET);
        let mut line = String::new();
        match BufReader::new(&mut s).read_line(&mut line) {
            Ok(0) => Err("EOF".to_string()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .unwrap()
}

fn metrics(m: &Mesh) -> String {
    let to = SocketAddr::new(POD_V4.into(), ADMIN);
    m.net
        .host
        .in_netns(move || {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}

/// The genuine paths work through the host's routing: otherwise the attacks prove nothing.
fn genuine_paths_work(m: &Mesh) {
    for ip in [IpAddr::from(POD_V4), POD_V6.into()] {
        assert_eq!(
            host_sends_secret(m, SocketAddr::new(ip, TLS_ONLY), ip).as_deref(),
            Ok("port=8080"),
            "#false port via {ip}"
        );
    }
    for listen in ["127.0.0.2:7081", "127.0.0.3:7081"] {
        assert_eq!(peer_sends_secret(m, listen).as_deref(), Ok("port=8081"), "peer's egress via {listen}");
    }
    assert_eq!(m.app.count(), 4);
}

#[test]
fn foreign_destinations_are_never_proxied_v4_and_v6() {
    let t = podmesh_tests::skip_unless_root!();
    let m = start(&t);
    genuine_paths_work(&m);
    // The issue's scenario: the host aims the pod's #false port at a foreign address.
    for (foreign, real) in [(IpAddr::from(FOREIGN_V4), IpAddr::from(POD_V4)), (FOREIGN_V6.into(), POD_V6.into())] {
        let got = host_sends_secret(&m, SocketAddr::new(foreign, TLS_ONLY), real);
        assert!(got.is_err(), "#false port via foreign {foreign}: {got:?}");
    }
    // A genuine peer whose SYN the host rewrites to the foreign address, on the mTLS port.
    m.net.dnat_peer_to_foreign();
    for listen in ["127.0.0.2:7081", "127.0.0.3:7081"] {
        let got = peer_sends_secret(&m, listen);
        assert!(got.is_err(), "peer via {listen}, DNATed to the foreign address: {got:?}");
    }
    m.sink.assert_empty("after the host's attempts");
    assert_eq!(m.app.count(), 4, "nothing else reached the app");
    let table = String::from_utf8(
        m.net.pod.exec(&["nft", "list", "chain", "inet", "podmesh_tproxy", "prerouting"]).unwrap().stdout,
    )
    .unwrap();
    let dropped = table
        .lines()
        .find(|l| l.contains("fib daddr type != local"))
        .unwrap_or_else(|| panic!("no fib rule:\n{table}"));
    assert!(!dropped.contains("packets 0 "), "the foreign SYNs were dropped by the fib rule: {dropped}");
}

/// Captured log lines of the in-process proxies (one subscriber for this test binary).
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl Write for Capture {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt().with_ansi(false).with_writer(move || Capture(w.clone())).try_init();
        buf
    })
    .clone()
}

#[test]
fn ingress_refuses_a_foreign_destination_even_without_the_fib_rule() {
    let t = podmesh_tests::skip_unless_root!();
    let log = captured_log();
    let m = start(&t);
    genuine_paths_work(&m);
    // Defence in depth: take the interception table's fib rule away.
    let chain = String::from_utf8(
        m.net.pod.exec(&["nft", "-a", "list", "chain", "inet", "podmesh_tproxy", "prerouting"]).unwrap().stdout,
    )
    .unwrap();
    let handle = chain
        .lines()
        .find(|l| l.contains("fib daddr type"))
        .and_then(|l| l.rsplit("handle ").next())
        .unwrap()
        .trim()
        .to_string();
    m.net.pod.exec(&["nft", "delete", "rule", "inet", "podmesh_tproxy", "prerouting", "handle", &handle]).unwrap();

    for (foreign, real) in [(IpAddr::from(FOREIGN_V4), IpAddr::from(POD_V4)), (FOREIGN_V6.into(), POD_V6.into())] {
        let got = host_sends_secret(&m, SocketAddr::new(foreign, TLS_ONLY), real);
        assert!(
            matches!(&got, Err((ErrorKind::ConnectionReset, _))),
            "#false port via foreign {foreign}: want a reset, got {got:?}"
        );
    }
    m.net.dnat_peer_to_foreign();
    for listen in ["127.0.0.2:7081", "127.0.0.3:7081"] {
        let got = peer_sends_secret(&m, listen);
        assert!(got.is_err(), "peer via {listen}, DNATed to the foreign address: {got:?}");
    }
    m.sink.assert_empty("without the fib rule");
    assert_eq!(m.app.count(), 4, "nothing else reached the app");
    let metrics = metrics(&m);
    for (route, kind, dest) in [
        ("web", "ingress_tls", "192.0.2.1:8080"),
        ("web", "ingress_tls", "[2001:db8::1]:8080"),
        ("mtls", "ingress_mtls", "192.0.2.1:8081"),
        ("mtls", "ingress_mtls", "[2001:db8::1]:8081"),
    ] {
        let line =
            format!("podmesh_ingress_refused_total{{route=\"{route}\",kind=\"{kind}\",destination=\"{dest}\"}} ");
        assert!(metrics.lines().any(|l| l.starts_with(&line)), "no {line} in\n{metrics}");
    }
    assert!(
        metrics
            .contains("podmesh_connection_failures_total{route=\"web\",kind=\"ingress_tls\",reason=\"not_local\"} 2"),
        "{metrics}"
    );
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    for dest in ["192.0.2.1:8080", "[2001:db8::1]:8080", "192.0.2.1:8081"] {
        assert!(
            log.lines().any(|l| l.contains("ingress_refused") && l.contains(&format!("destination={dest}"))),
            "no ingress_refused line for {dest} in\n{log}"
        );
    }
}

// ---- the host redirects egress to another mesh pod (issue #14) ----

const SINK_V4: Ipv4Addr = Ipv4Addr::new(10, 98, 3, 1);
const SINK_V6: Ipv6Addr = Ipv6Addr::new(0xfd98, 3, 0, 0, 0, 0, 0, 1);

/// The host DNATs the peer's (A's) egress for the pod (B) to the sink (C), which runs
/// podmesh with a genuine mesh certificate of another identity. A must refuse C in the
/// handshake: C's app never sees a connection, let alone A's bytes.
#[test]
fn egress_refuses_a_mesh_pod_the_host_redirects_to() {
    let t = podmesh_tests::skip_unless_root!();
    let net = Net::new(&t);
    let ca = TestMesh::new().unwrap();
    let ids = [
        ("peer", ["10.98.1.1", "fd98:1::1"]),
        ("pod", ["10.98.2.1", "fd98:2::1"]),
        ("sink", ["10.98.3.1", "fd98:3::1"]),
    ];
    let dirs: Vec<tempfile::TempDir> = ids
        .iter()
        .map(|(cn, sans)| {
            let dir = tempfile::tempdir().unwrap();
            ca.issue(cn, sans, DAY).unwrap().write_tls_dir(dir.path()).unwrap();
            dir
        })
        .collect();
    let b_app = App::start(&net.pod, &[MTLS]).unwrap();
    let c_app = App::start(&net.sink, &[MTLS]).unwrap();
    let ingress_only = || Plan { ingress: Some(IngressPlan::default()), egress: vec![], admin_port: None };
    let _b = Proxy::start(&net.pod, ingress_only(), test_options(dirs[1].path())).unwrap();
    let _c = Proxy::start(&net.sink, ingress_only(), test_options(dirs[2].path())).unwrap();
    let _a = Proxy::start(&net.peer, peer_plan(), test_options(dirs[0].path())).unwrap();
    for listen in ["127.0.0.2:7081", "127.0.0.3:7081"] {
        assert_eq!(sends_secret(&net.peer, listen).as_deref(), Ok("port=8081"), "A to B via {listen}");
    }
    assert_eq!(b_app.count(), 2);
    // C is reachable and a mesh member: the refusal below is about identity, nothing else.
    net.dnat_peer_to(SINK_V4, SINK_V6);
    for listen in ["127.0.0.2:7081", "127.0.0.3:7081"] {
        let got = sends_secret(&net.peer, listen);
        assert!(got.is_err(), "A's egress for B, redirected to C via {listen}: {got:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c_app.count(), 0, "C's app saw a connection meant for B");
    assert_eq!(b_app.count(), 2);
}

// ---- no protocol but TCP ----

const UDP_ECHO: u16 = 5353;
const UDP_OTHER: u16 = 5354;
/// An unassigned IP protocol number: stands for any raw-IP service.
const RAW_PROTO: i32 = 253;

/// UDP echo servers on `[::]:port` (dual-stack) in `pod`.
fn udp_echo(pod: &Pod, port: u16) {
    let sock = pod.in_netns(move || UdpSocket::bind(("::", port))).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
}

/// Whether a datagram from `from` to `to` is echoed within 500 ms (three tries).
fn udp_answers(from: &Pod, to: SocketAddr) -> bool {
    from.in_netns(move || {
        let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        (0..3).any(|_| {
            sock.send_to(b"ping", to).unwrap();
            let mut buf = [0u8; 16];
            matches!(sock.recv_from(&mut buf), Ok((4, _)))
        })
    })
    .unwrap()
}

/// Whether a raw IP packet of [`RAW_PROTO`] from `from` reaches a raw socket in `to_pod`.
fn raw_ip_arrives(from: &Pod, to_pod: &Pod, to: Ipv4Addr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let rx =
        to_pod.in_netns(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(RAW_PROTO)))).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let tx = from.in_netns(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(RAW_PROTO)))).unwrap().unwrap();
    tx.send_to(b"raw service", &SocketAddr::new(to.into(), 0).into()).unwrap();
    let mut buf = [std::mem::MaybeUninit::new(0u8); 256];
    rx.recv(&mut buf).is_ok()
}

#[test]
fn non_tcp_flows_stay_closed_after_readiness_unless_listed() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let id = TestMesh::new().unwrap().issue("b", &["10.99.0.2"], DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    id.write_tls_dir(dir.path()).unwrap();
    for port in [UDP_ECHO, UDP_OTHER] {
        udp_echo(&pods.b, port);
    }
    udp_echo(&pods.a, UDP_ECHO);
    let targets = |port| [SocketAddr::new(PodPair::V4_B.into(), port), SocketAddr::new(PodPair::V6_B.into(), port)];
    // Without podmesh the services answer: the closed cases below are the rules' doing.
    for to in targets(UDP_ECHO) {
        assert!(udp_answers(&pods.a, to), "control: UDP echo at {to} without podmesh");
    }
    assert!(raw_ip_arrives(&pods.a, &pods.b, PodPair::V4_B), "control: raw IP without podmesh");

    let plan = |udp: Vec<(String, u16)>| Plan {
        ingress: Some(IngressPlan { udp, ..IngressPlan::default() }),
        egress: vec![],
        admin_port: None,
    };
    firewall::deny::install(Some(pods.b.name())).unwrap();
    let proxy = Proxy::start(&pods.b, plan(vec![]), test_options(dir.path())).unwrap();
    assert!(!firewall::deny::is_installed(Some(pods.b.name())).unwrap());
    for to in targets(UDP_ECHO) {
        assert!(!udp_answers(&pods.a, to), "UDP echo at {to} answered after proxy_ready with no UDP port listed");
    }
    assert!(!raw_ip_arrives(&pods.a, &pods.b, PodPair::V4_B), "a raw IP service got a packet after proxy_ready");
    // Replies to the pod's own flows still come back (conntrack), IPv6 neighbours included.
    for to in [SocketAddr::new(PodPair::V4_A.into(), UDP_ECHO), SocketAddr::new(PodPair::V6_A.into(), UDP_ECHO)] {
        assert!(udp_answers(&pods.b, to), "reply from {to} to the pod's own query");
    }
    drop(proxy);

    let proxy = Proxy::start(&pods.b, plan(vec![("echo".into(), UDP_ECHO)]), test_options(dir.path())).unwrap();
    for to in targets(UDP_ECHO) {
        assert!(udp_answers(&pods.a, to), "UDP echo at {to} listed in PODMESH_INGRESS_UDP must answer");
    }
    for to in targets(UDP_OTHER) {
        assert!(!udp_answers(&pods.a, to), "UDP port {to} is not listed");
    }
    drop(proxy);
}

// ---- TIME_WAIT reuse ----

/// An app on `port` that greets with `port=N` and closes at once (so the proxy closes first
/// towards the client, and its side of the client connection ends in TIME_WAIT). Records the
/// peer address of every connection.
fn closing_app(pod: &Pod, port: u16) -> Arc<Mutex<Vec<SocketAddr>>> {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let listener = pod.in_netns(move || TcpListener::bind(("::", port))).unwrap().unwrap();
    let seen = peers.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            if let Ok(peer) = s.peer_addr() {
                seen.lock().unwrap().push(SocketAddr::new(peer.ip().to_canonical(), peer.port()));
            }
            let _ = s.write_all(format!("port={port}\n").as_bytes());
        }
    });
    peers
}

/// One mTLS connection from `from`'s `src` to `to`: everything read until the proxy's
/// close_notify, or the error.
fn mtls_from_port(
    from: &Pod,
    src: SocketAddr,
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    use socket2::{Domain, Socket, Type};
    from.in_netns(move || -> Result<String, String> {
        let s = Socket::new(Domain::for_address(src), Type::STREAM, None).map_err(|e| e.to_string())?;
        s.set_reuse_address(true).map_err(|e| e.to_string())?;
        s.bind(&src.into()).map_err(|e| format!("bind {src}: {e}"))?;
        s.connect_timeout(&to.into(), Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
        let tcp: TcpStream = s.into();
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let conn =
            rustls::ClientConnection::new(config, rustls_pki_types::ServerName::IpAddress(to.ip().into())).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut got = String::new();
        tls.read_to_string(&mut got).map_err(|e| format!("read: {e}"))?;
        // close_notify is in; wait for the proxy's FIN too, so that we close second.
        let mut rest = Vec::new();
        tls.sock.read_to_end(&mut rest).map_err(|e| format!("waiting for the FIN: {e}"))?;
        tls.sock.shutdown(Shutdown::Both).ok();
        Ok(got)
    })
    .unwrap()
}

#[test]
fn syn_reusing_a_time_wait_tuple_goes_through_the_proxy_never_to_the_app() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let ca = TestMesh::new().unwrap();
    let server = ca.issue("b", &["10.99.0.2", "fd99::2"], DAY).unwrap();
    let client = ca.issue("a", &["10.99.0.1", "fd99::1"], DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.write_tls_dir(dir.path()).unwrap();
    let app_port = 8080;
    let peers = closing_app(&pods.b, app_port);
    let plan = Plan { ingress: Some(IngressPlan::default()), egress: vec![], admin_port: None };
    let _proxy = Proxy::start(&pods.b, plan, test_options(dir.path())).unwrap();
    let config = client_config(&server.mesh_ca_pem, Some((&client.chain_pem, &client.key_pem))).unwrap();

    let mut outcomes = Vec::new();
    for (a, b, base) in [
        (IpAddr::from(PodPair::V4_A), IpAddr::from(PodPair::V4_B), 41000),
        (PodPair::V6_A.into(), PodPair::V6_B.into(), 41010),
    ] {
        for src_port in base + 1..=base + 3 {
            let (src, to) = (SocketAddr::new(a, src_port), SocketAddr::new(b, app_port));
            for attempt in 0..2 {
                let got = mtls_from_port(&pods.a, src, to, config.clone());
                if attempt == 0 {
                    // Not vacuous: the pod's side of the first connection waits in TIME_WAIT.
                    let filter = format!("sport = :{app_port} and dport = :{src_port}");
                    let in_time_wait = || {
                        !pods
                            .b
                            .exec(&["ss", "-Htan", "state", "time-wait", &filter])
                            .unwrap()
                            .stdout
                            .trim_ascii()
                            .is_empty()
                    };
                    let deadline = std::time::Instant::now() + Duration::from_secs(1);
                    while !in_time_wait() {
                        let all = pods.b.exec(&["ss", "-Htanoi"]).unwrap().stdout;
                        assert!(
                            std::time::Instant::now() < deadline,
                            "no TIME_WAIT socket in the pod for {src} after the first connection ({got:?}):\n{}",
                            String::from_utf8_lossy(&all)
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                outcomes.push((src, attempt, got));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let bad: Vec<_> = outcomes.iter().filter(|(_, _, got)| got.as_deref() != Ok("port=8080\n")).collect();
    let peers = peers.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "connections that did not reach the app through the proxy: {bad:?} (the app saw {peers:?})"
    );
    assert_eq!(peers.len(), 12, "{peers:?}");
    let bypassed: Vec<_> =
        peers.iter().filter(|p| [IpAddr::from(PodPair::V4_A), PodPair::V6_A.into()].contains(&p.ip())).collect();
    assert!(bypassed.is_empty(), "the app saw connections straight from the client, bypassing the proxy: {bypassed:?}");
}
