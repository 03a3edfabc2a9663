//! The data plane under a hostile host (issue 12): the host cuts TLS streams, floods the
//! pod with silent connections, and records traffic for later decryption.
//!
//! Pod `a` (10.99.0.1) plays the clients and the host; pod `b` (10.99.0.2) runs the proxy
//! in front of small apps that record how their connections end. Real nft TPROXY, real TLS.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use mesh::{
    config::EgressIdentity,
    proxy::{EgressPlan, IngressPlan, Plan},
};
use podmesh_tests::{
    netns::{Pod, PodPair},
    proxy_certs::{Identity, TestMesh},
    proxy_pods::*,
};
use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

const DAY: Duration = Duration::from_secs(24 * 3600);
const ADMIN: u16 = 9901;
/// An intercepted (mTLS) port in pod b whose app records how each connection ended.
const RECORDING_APP: u16 = 8085;
/// Plain TLS servers in pod b (no proxy in front): one ends with close_notify, one without.
const REMOTE_CLEAN: u16 = 8181;
const REMOTE_TRUNCATING: u16 = 8182;

fn v4b() -> IpAddr {
    PodPair::V4_B.into()
}

/// How a reader's stream ended: the bytes it got, then `Ok` for an orderly end (read 0) or
/// the error kind.
type Ending = (Vec<u8>, Result<(), ErrorKind>);

fn read_to_end_or_error(r: &mut impl Read) -> Ending {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e.kind())),
        }
    }
}

/// A plaintext app on `port` in `pod` (IPv4): reads each connection to its end and reports
/// the [`Ending`]; after an orderly end it answers `ok\n` and closes.
fn start_recording_app(pod: &Pod, port: u16) -> mpsc::Receiver<Ending> {
    let listener = pod.in_netns(move || TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let ending = read_to_end_or_error(&mut s);
                if ending.1.is_ok() {
                    let _ = s.write_all(b"ok\n");
                }
                let _ = tx.send(ending);
            });
        }
    });
    rx
}

/// A rustls server (not podmesh) on `port` in `pod`, presenting `id`: writes `hello\n`, then
/// either ends with close_notify after reading the client's stream to its end (reporting
/// the [`Ending`]), or (`truncate`) cuts the TCP stream without close_notify.
fn start_remote(pod: &Pod, port: u16, id: &Identity, truncate: bool) -> mpsc::Receiver<Ending> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(id.chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(mesh::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = pod.in_netns(move || TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, tx) = (config.clone(), tx.clone());
            std::thread::spawn(move || {
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
                if tls.write_all(b"hello\n").and_then(|()| tls.flush()).is_err() {
                    return;
                }
                if truncate {
                    let _ = tls.sock.shutdown(Shutdown::Write);
                    std::thread::sleep(Duration::from_secs(3));
                    return;
                }
                let ending = read_to_end_or_error(&mut tls);
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let _ = tx.send(ending);
            });
        }
    });
    rx
}

/// `podmesh_connection_failures_total` of `route` for `reason`, from the admin port `admin`.
fn failures(pod: &Pod, admin: SocketAddr, route: &str, reason: &str) -> u64 {
    let metrics = http_get(pod, admin, "/metrics");
    let prefix = format!("podmesh_connection_failures_total{{route=\"{route}\",");
    let suffix = format!(",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .find_map(|l| l.split_once(&suffix).map(|(_, v)| v))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}..{suffix} in {metrics}"))
}

struct Certs {
    server: Identity,
    client: Identity,
}

fn certs() -> Certs {
    let ca = TestMesh::new().unwrap();
    let server = ca.issue("server", &["10.99.0.2", "fd99::2"], DAY).unwrap();
    let client = ca.issue("client", &["10.99.0.1", "fd99::1", "client.mesh"], DAY).unwrap();
    Certs { server, client }
}

fn tls_dir(id: &Identity) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    id.write_tls_dir(dir.path()).unwrap();
    dir
}

/// From pod a: an mTLS connection to the recording app that sends `hello`, then ends with
/// close_notify (`clean`) or with a bare TCP FIN. Returns what the client read back.
fn send_and_end(pod: &Pod, to: SocketAddr, config: Arc<rustls::ClientConfig>, clean: bool) -> Ending {
    pod.in_netns(move || {
        let tcp = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(to.ip().into());
        let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), tcp);
        tls.write_all(b"hello").unwrap();
        tls.flush().unwrap();
        if clean {
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        } else {
            // What a host that cuts the stream produces: a FIN, no close_notify.
            tls.sock.shutdown(Shutdown::Write).unwrap();
        }
        read_to_end_or_error(&mut tls)
    })
    .unwrap()
}

#[test]
fn ingress_truncation_resets_the_app_and_close_notify_ends_cleanly() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let c = certs();
    let app = start_recording_app(&pods.b, RECORDING_APP);
    let dir = tls_dir(&c.server);
    let plan = Plan { ingress: Some(IngressPlan::default()), egress: vec![], admin_port: Some(ADMIN) };
    let _proxy = Proxy::start(&pods.b, plan, test_options(dir.path())).unwrap();
    let config = client_config(&c.server.mesh_ca_pem, Some((&c.client.chain_pem, &c.client.key_pem))).unwrap();
    let to = SocketAddr::new(v4b(), RECORDING_APP);

    // close_notify: the app reads everything, then an orderly end; its answer comes back
    // with the proxy's close_notify (rustls reports a bare FIN as UnexpectedEof).
    let back = send_and_end(&pods.a, to, config.clone(), true);
    let seen = app.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen, (b"hello".to_vec(), Ok(())), "with close_notify the app must see an orderly end");
    assert_eq!(back, (b"ok\n".to_vec(), Ok(())), "the app's close must reach the client as close_notify");

    // A bare FIN: the app's read must end in a reset, never in an orderly 0.
    let _ = send_and_end(&pods.a, to, config, false);
    let seen = app.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.1, Err(ErrorKind::ConnectionReset), "a truncated TLS stream reached the app as {seen:?}");
    let admin = SocketAddr::new(v4b(), ADMIN);
    assert_eq!(failures(&pods.a, admin, "mtls", "truncated"), 1);
}

#[test]
fn egress_truncation_by_the_remote_resets_the_app() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let c = certs();
    let clean_remote = start_remote(&pods.b, REMOTE_CLEAN, &c.server, false);
    let _ = start_remote(&pods.b, REMOTE_TRUNCATING, &c.server, true);
    let dir = tls_dir(&c.client);
    let egress = |name: &str, listen: &str, port| EgressPlan {
        name: name.into(),
        listen: listen.parse().unwrap(),
        remote_host: v4b().to_string(),
        remote_port: port,
        identity: EgressIdentity::TargetHost,
    };
    let plan = Plan {
        ingress: None,
        egress: vec![
            egress("clean", "127.0.0.2:7000", REMOTE_CLEAN),
            egress("cut", "127.0.0.2:7001", REMOTE_TRUNCATING),
        ],
        admin_port: Some(ADMIN),
    };
    let _proxy = Proxy::start(&pods.a, plan, test_options(dir.path())).unwrap();
    let app_session = |listen: &'static str| -> Ending {
        pods.a
            .in_netns(move || {
                let mut s = TcpStream::connect(listen).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // A cut stream may reset the app while it is still sending (a busy host runs
                // the proxy first): the reset is the ending then, as it would be on a read.
                if let Err(e) = s.write_all(b"bye").and_then(|()| s.shutdown(Shutdown::Write)) {
                    return (Vec::new(), Err(e.kind()));
                }
                read_to_end_or_error(&mut s)
            })
            .unwrap()
    };

    // The app's close reaches the remote as close_notify; the remote's close_notify
    // reaches the app as an orderly end.
    assert_eq!(app_session("127.0.0.2:7000"), (b"hello\n".to_vec(), Ok(())));
    let remote_saw = clean_remote.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(remote_saw, (b"bye".to_vec(), Ok(())), "the proxy must send close_notify when the app closes");

    // The remote (or the host in between) cuts the stream: the app sees a reset.
    let (_, end) = app_session("127.0.0.2:7001");
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "a truncated TLS stream from the remote reached the app as {end:?}"
    );
    let admin = SocketAddr::new("127.0.0.1".parse().unwrap(), ADMIN);
    assert_eq!(failures(&pods.a, admin, "cut", "truncated"), 1);
    assert_eq!(failures(&pods.a, admin, "clean", "truncated"), 0);
}

/// Opens a TCP connection from `from` (an address of pod `pod`) to `to` and sends nothing.
fn silent_connection(pod: &Pod, from: IpAddr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    pod.in_netns(move || -> std::io::Result<TcpStream> {
        let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        s.bind(&SocketAddr::new(from, 0).into())?;
        s.connect_timeout(&to.into(), Duration::from_secs(3))?;
        Ok(s.into())
    })
    .unwrap()
    .unwrap()
}

/// Whether the proxy closed `s` (EOF or reset) within `wait`.
fn closed_by_peer(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut one = [0u8; 1];
    match s.read(&mut one) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn silent_connections_from_one_source_starve_neither_authenticated_clients_nor_egress() {
    let t = podmesh_tests::skip_unless_root!();
    const PER_SOURCE: u32 = 8;
    const FLOOD: u32 = 10 * PER_SOURCE;
    let pods = PodPair::new(&t).unwrap();
    // The flooding host's own address, beside the authenticated client's 10.99.0.1.
    let attacker: IpAddr = "10.99.0.11".parse().unwrap();
    pods.a.exec(&["ip", "addr", "add", "10.99.0.11/24", "dev", "eth0"]).unwrap();
    let c = certs();
    let _app = App::start(&pods.b, &[8080]).unwrap();
    // The remote that pod b's egress reaches: a TLS server in pod a with a mesh certificate.
    start_tls_server(&pods.a, 8443, &c.client.chain_pem, &c.client.key_pem).unwrap();
    let dir = tls_dir(&c.server);
    let plan = Plan {
        ingress: Some(IngressPlan::default()),
        egress: vec![EgressPlan {
            name: "out".into(),
            listen: "127.0.0.2:7000".parse().unwrap(),
            remote_host: "10.99.0.1".into(),
            remote_port: 8443,
            identity: EgressIdentity::TargetHost,
        }],
        admin_port: Some(ADMIN),
    };
    // A connection limit below the flood: before the handshake budget, silent connections
    // took connection permits, so this flood alone filled the limit.
    let opts =
        mesh::proxy::Options { max_connections: 64, max_handshakes_per_source: PER_SOURCE, ..test_options(dir.path()) };
    let _proxy = Proxy::start(&pods.b, plan, opts).unwrap();

    let target = SocketAddr::new(v4b(), 8080);
    let mut flood: Vec<TcpStream> = (0..FLOOD).map(|_| silent_connection(&pods.a, attacker, target)).collect();
    std::thread::sleep(Duration::from_millis(300));

    let config = client_config(&c.server.mesh_ca_pem, Some((&c.client.chain_pem, &c.client.key_pem))).unwrap();
    let started = Instant::now();
    let out = tls_exchange(&pods.a, target, config).unwrap();
    let took = started.elapsed();
    assert_eq!(out.first_line.as_deref(), Ok("port=8080"), "authenticated client during the flood");
    assert!(took < Duration::from_secs(2), "authenticated client answered after {took:?}");
    let egress = read_line_from(&pods.b, "127.0.0.2:7000".parse().unwrap()).unwrap();
    assert_eq!(egress.as_deref(), Ok("hello-from-tls"), "egress through the flooded proxy");

    let closed =
        flood.iter_mut().filter_map(|s| closed_by_peer(s, Duration::from_millis(100)).then_some(())).count() as u32;
    assert_eq!(closed, FLOOD - PER_SOURCE, "connections over the per-source cap are closed at once, the rest wait");
    let admin = SocketAddr::new(v4b(), ADMIN);
    assert_eq!(failures(&pods.a, admin, "mtls", "handshake_limit"), u64::from(FLOOD - PER_SOURCE));
    assert_eq!(failures(&pods.a, admin, "mtls", "limit"), 0);
}

/// The key_share group of the first record `bytes` (a ServerHello), and whether it is a
/// HelloRetryRequest. Parses just enough of TLS 1.3 (RFC 8446 §4.1.3, §4.2.8).
fn server_hello_group(bytes: &[u8]) -> Result<(u16, bool), String> {
    const HRR_RANDOM: [u8; 8] = [0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11];
    let take =
        |at: usize, n: usize| bytes.get(at..at + n).ok_or_else(|| format!("short record ({} bytes)", bytes.len()));
    let u16_at = |at: usize| take(at, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if take(0, 1)?[0] != 0x16 || take(5, 1)?[0] != 0x02 {
        return Err(format!("not a ServerHello record: {:02x?}", take(0, 6)?));
    }
    let random = take(11, 32)?;
    let hrr = random[..8] == HRR_RANDOM;
    let sid_len = take(43, 1)?[0] as usize;
    let mut at = 44 + sid_len + 2 + 1; // session id, cipher suite, compression
    let end = at + 2 + u16_at(at)? as usize;
    at += 2;
    while at + 4 <= end {
        let (ty, len) = (u16_at(at)?, u16_at(at + 2)? as usize);
        if ty == 0x0033 {
            return Ok((u16_at(at + 4)?, hrr));
        }
        at += 4 + len;
    }
    Err("no key_share extension".into())
}

/// The host in the middle: relays `listen` (in `pod`) to `upstream` and reports the first
/// 16 KiB the server sent on each connection.
fn start_recording_relay(pod: &Pod, listen: SocketAddr, upstream: SocketAddr) -> mpsc::Receiver<Vec<u8>> {
    let listener = pod.in_netns(move || TcpListener::bind(listen)).unwrap().unwrap();
    let pod_ns = pod.name().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let tx = tx.clone();
            // Connected from inside the pod (the listener's namespace, not this thread's).
            let Ok(server) = connect_in(&pod_ns, upstream) else { continue };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut s_in, mut c_out) = (server, client);
                let mut seen = Vec::new();
                let mut buf = [0u8; 16384];
                loop {
                    match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if seen.len() < 16384 {
                                seen.extend_from_slice(&buf[..n]);
                            }
                            if c_out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c_out.shutdown(Shutdown::Write);
                let _ = tx.send(seen);
            });
        }
    });
    rx
}

fn connect_in(netns: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let ns = std::fs::File::open(format!("/run/netns/{netns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            TcpStream::connect_timeout(&to, Duration::from_secs(3))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("connect thread panicked")))
    })
}

#[test]
fn server_hello_parser_reads_the_group_and_rejects_garbage() {
    // A ServerHello as rustls sends it (no session id echo here), key_share X25519MLKEM768.
    let mut hello = vec![0x16, 0x03, 0x03, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x03];
    hello.extend_from_slice(&[0xab; 32]);
    hello.extend_from_slice(&[0x00, 0x13, 0x01, 0x00]);
    let exts =
        [&[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04][..], &[0x00, 0x33, 0x00, 0x06, 0x11, 0xec, 0x00, 0x02, 0xaa, 0xbb]]
            .concat();
    hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    hello.extend_from_slice(&exts);
    assert_eq!(server_hello_group(&hello), Ok((0x11ec, false)));
    assert!(server_hello_group(&hello[..20]).is_err());
    assert!(server_hello_group(b"\x15\x03\x03\x00\x02\x02\x28").is_err(), "an alert is not a ServerHello");
}

#[test]
fn podmesh_pods_negotiate_hybrid_post_quantum_key_exchange_on_the_wire() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let c = certs();
    let _app = App::start(&pods.b, &[8080]).unwrap();
    let server_dir = tls_dir(&c.server);
    let client_dir = tls_dir(&c.client);
    // Pod a's egress goes to the host's relay, which forwards to pod b and records.
    let relay = SocketAddr::new("127.0.0.9".parse().unwrap(), 9000);
    let wire = start_recording_relay(&pods.a, relay, SocketAddr::new(v4b(), 8080));
    let client_plan = Plan {
        ingress: None,
        egress: vec![EgressPlan {
            name: "via-host".into(),
            listen: "127.0.0.2:7000".parse().unwrap(),
            remote_host: "127.0.0.9".into(),
            remote_port: 9000,
            // The relay's address is no SAN of the server; this test is about key exchange.
            identity: EgressIdentity::Any,
        }],
        admin_port: None,
    };
    let server_plan = || Plan { ingress: Some(IngressPlan::default()), egress: vec![], admin_port: None };
    let kx = |k| mesh::tls::TlsPolicy { resumption: false, key_exchange: k, ..Default::default() };
    // No resumption: a client remembers the group of its last session and would offer only
    // that share next time (costing a HelloRetryRequest when the server setting changes).
    let client_opts =
        mesh::proxy::Options { tls: kx(mesh::tls::KeyExchange::default()), ..test_options(client_dir.path()) };
    let _client = Proxy::start(&pods.a, client_plan, client_opts).unwrap();

    use mesh::tls::KeyExchange::*;
    // (server setting, the group the host must see in the ServerHello)
    for (server_kx, want) in [(Hybrid, 0x11ec), (Classical, 0x001d), (PqOnly, 0x11ec)] {
        let opts = mesh::proxy::Options { tls: kx(server_kx), ..test_options(server_dir.path()) };
        let server = Proxy::start(&pods.b, server_plan(), opts).unwrap();
        let got = read_line_from(&pods.a, "127.0.0.2:7000".parse().unwrap()).unwrap();
        assert_eq!(got.as_deref(), Ok("port=8080"), "default egress → {server_kx:?} ingress");
        let seen = wire.recv_timeout(Duration::from_secs(5)).unwrap();
        let (group, hrr) = server_hello_group(&seen).unwrap();
        assert_eq!((group, hrr), (want, false), "{server_kx:?} ingress: ServerHello key_share {group:#06x}");
        drop(server);
    }
}

/// `openssl s_client` (OpenSSL 3.0: no ML-KEM) from pod a to the `#false` port 8443 in pod b.
/// Returns (whether the app's greeting came back, s_client's stderr).
fn openssl_client(pod: &Pod, ca: &std::path::Path) -> (bool, String) {
    use std::process::Stdio;
    let mut child = pod
        .command("openssl")
        .args(["s_client", "-connect", "10.99.0.2:8443", "-brief", "-no_ign_eof", "-verify_return_error", "-CAfile"])
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"ping\n");
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (String::from_utf8_lossy(&out.stdout).starts_with("port=8443\n"), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn classical_openssl_client_connects_by_default_and_is_refused_in_pq_only_mode() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let c = certs();
    let _app = App::start(&pods.b, &[8443]).unwrap();
    let dir = tls_dir(&c.server);
    let ca = dir.path().join("mesh-ca.pem");
    let plan = || Plan {
        ingress: Some(IngressPlan {
            plaintext: vec![],
            tls_only: vec![("web".into(), 8443)],
            udp: vec![],
            mtls: vec![],
        }),
        egress: vec![],
        admin_port: None,
    };
    let server = Proxy::start(&pods.b, plan(), test_options(dir.path())).unwrap();
    let (ok, stderr) = openssl_client(&pods.a, &ca);
    assert!(ok, "OpenSSL 3.0 client against the default (hybrid) proxy: {stderr}");
    assert!(stderr.contains("X25519"), "a classical client falls back to X25519: {stderr}");
    drop(server);

    let opts = mesh::proxy::Options {
        tls: mesh::tls::TlsPolicy { key_exchange: mesh::tls::KeyExchange::PqOnly, ..Default::default() },
        ..test_options(dir.path())
    };
    let _server = Proxy::start(&pods.b, plan(), opts).unwrap();
    let (ok, stderr) = openssl_client(&pods.a, &ca);
    assert!(!ok, "pq-only must refuse a client without ML-KEM: {stderr}");
    assert!(stderr.contains("handshake failure") || stderr.contains("alert"), "{stderr}");
}

#[test]
fn a_zero_handshake_budget_fails_startup_and_keeps_the_deny_table() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).unwrap();
    firewall::deny::install(Some(pod.name())).unwrap();
    let dir = tls_dir(&certs().server);
    for (total, per_source) in [(0, 8), (8, 0)] {
        let opts = mesh::proxy::Options {
            max_handshakes: total,
            max_handshakes_per_source: per_source,
            ..test_options(dir.path())
        };
        let plan = Plan { ingress: Some(IngressPlan::default()), egress: vec![], admin_port: None };
        let err = Proxy::start(&pod, plan, opts).err().expect("a zero handshake budget must not start");
        assert!(
            err.to_string().contains("--max-handshakes and --max-handshakes-per-source must be at least 1"),
            "{err:#}"
        );
        assert!(firewall::deny::is_installed(Some(pod.name())).unwrap());
    }
}
