//! The default-deny table in real network namespaces, IPv4 and IPv6.
//!
//! Pod `a` listens; pod `b` is "another pod" on the same veth link. Every test installs the
//! table inside `a` only (never in the host namespace).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use firewall::{
    deny,
    nft::{Nft, NftError},
};
use nftables::schema::{NfListObject, NfObject};
use podmesh_tests::{
    harness::Test,
    netns::{addr, Pod, PodPair},
};
use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

const PORT: u16 = 8080;
const SHORT: Duration = Duration::from_millis(700);
const LONG: Duration = Duration::from_secs(3);

fn families() -> [(&'static str, IpAddr); 2] {
    [("ipv4", PodPair::V4_A.into()), ("ipv6", PodPair::V6_A.into())]
}

/// Pod pair with a dual-stack listener on PORT in pod `a`.
fn setup(t: &Test) -> (PodPair, TcpListener) {
    let pods = PodPair::new(t).expect("create pods");
    let listener = pods.a.in_netns(|| TcpListener::bind(("::", PORT))).expect("enter netns").expect("bind");
    listener.set_nonblocking(false).expect("blocking listener");
    (pods, listener)
}

/// Connects from inside `pod`, returning the io error kind on failure.
fn connect(pod: &Pod, target: SocketAddr, timeout: Duration) -> Result<TcpStream, ErrorKind> {
    pod.in_netns(|| TcpStream::connect_timeout(&target, timeout)).expect("enter netns").map_err(|e| e.kind())
}

fn echo_once(listener: &TcpListener, client: &mut TcpStream, server: Option<&mut TcpStream>) {
    let mut accepted;
    let server = match server {
        Some(s) => s,
        None => {
            accepted = listener.accept().expect("accept").0;
            &mut accepted
        }
    };
    for s in [&mut *client, &mut *server] {
        s.set_read_timeout(Some(LONG)).expect("timeout");
    }
    client.write_all(b"ping").expect("client write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).expect("server read");
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").expect("server write");
    client.read_exact(&mut buf).expect("client read");
    assert_eq!(&buf, b"pong");
}

fn deny_tables(pod: &Pod) -> usize {
    let ruleset = Nft::new(Some(pod.name())).expect("nft").list_ruleset().expect("list");
    ruleset
        .objects
        .iter()
        .filter(|o| matches!(o, NfObject::ListObject(NfListObject::Table(t)) if t.name == deny::TABLE))
        .count()
}

fn deny_rules(pod: &Pod) -> usize {
    let table = Nft::new(Some(pod.name())).expect("nft").list_table(deny::FAMILY, deny::TABLE).expect("list");
    table.map_or(0, |t| t.objects.iter().filter(|o| matches!(o, NfObject::ListObject(NfListObject::Rule(_)))).count())
}

#[test]
fn new_connection_from_another_pod_is_dropped_until_removal() {
    let t = podmesh_tests::skip_unless_root!();
    let (pods, listener) = setup(&t);
    deny::install(Some(pods.a.name())).expect("install");
    assert!(deny::is_installed(Some(pods.a.name())).unwrap());
    for (family, ip) in families() {
        // Dropped, not refused: the SYN vanishes, so the client times out.
        assert_eq!(connect(&pods.b, addr(ip, PORT), SHORT).err(), Some(ErrorKind::TimedOut), "{family}");
    }
    assert!(deny::remove(Some(pods.a.name())).expect("remove"), "remove reports it was present");
    assert!(!deny::is_installed(Some(pods.a.name())).unwrap());
    for (family, ip) in families() {
        let mut client = connect(&pods.b, addr(ip, PORT), LONG).unwrap_or_else(|e| panic!("{family}: {e:?}"));
        echo_once(&listener, &mut client, None);
    }
}

#[test]
fn loopback_inside_the_pod_keeps_working() {
    let t = podmesh_tests::skip_unless_root!();
    let (pods, listener) = setup(&t);
    deny::install(Some(pods.a.name())).expect("install");
    // Loopback addresses and the pod's own addresses (routed over lo) both stay reachable.
    let targets: [IpAddr; 4] =
        ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap(), PodPair::V4_A.into(), PodPair::V6_A.into()];
    for ip in targets {
        let mut client = connect(&pods.a, addr(ip, PORT), LONG).unwrap_or_else(|e| panic!("{ip}: {e:?}"));
        echo_once(&listener, &mut client, None);
    }
}

#[test]
fn established_connection_survives_install() {
    let t = podmesh_tests::skip_unless_root!();
    let (pods, listener) = setup(&t);
    let mut conns = Vec::new();
    for (family, ip) in families() {
        let mut client = connect(&pods.b, addr(ip, PORT), LONG).unwrap_or_else(|e| panic!("{family}: {e:?}"));
        let mut server = listener.accept().expect("accept").0;
        echo_once(&listener, &mut client, Some(&mut server));
        conns.push((family, ip, client, server));
    }
    deny::install(Some(pods.a.name())).expect("install");
    for (family, ip, client, server) in &mut conns {
        echo_once(&listener, client, Some(server));
        // ... while a new one from the same pod is dropped.
        assert_eq!(connect(&pods.b, addr(*ip, PORT), SHORT).err(), Some(ErrorKind::TimedOut), "{family}");
    }
}

#[test]
fn install_twice_leaves_one_table_and_remove_when_absent_succeeds() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).expect("pod");
    let ns = Some(pod.name());
    assert!(!deny::remove(ns).expect("remove when absent"), "absent: remove returns false");
    deny::install(ns).expect("first install");
    let rules = deny_rules(&pod);
    assert_eq!(rules, 5);
    deny::install(ns).expect("second install");
    assert_eq!(deny_tables(&pod), 1);
    assert_eq!(deny_rules(&pod), rules, "rules not duplicated");
    assert!(deny::remove(ns).expect("remove"));
    assert_eq!(deny_tables(&pod), 0);
    assert!(!deny::remove(ns).expect("second remove"));
}

#[test]
fn failed_install_leaves_the_table_in_place() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).expect("pod");
    let ns = Some(pod.name());
    deny::install(ns).expect("install");
    let before = Nft::new(ns).unwrap().list_table(deny::FAMILY, deny::TABLE).unwrap();

    // A replacement batch whose last rule the kernel rejects (jump to a missing chain):
    // the whole transaction is refused, the installed table is untouched.
    let mut batch = serde_json::to_value(deny::install_batch()).unwrap();
    let bad_rule = serde_json::json!({"add": {"rule": {"family": "inet", "table": deny::TABLE, "chain": deny::CHAIN,
        "expr": [{"jump": {"target": "no_such_chain"}}]}}});
    batch["nftables"].as_array_mut().unwrap().push(bad_rule);
    let batch: nftables::schema::Nftables = serde_json::from_value(batch).unwrap();
    let err = Nft::new(ns).unwrap().apply(&batch).unwrap_err();
    assert!(matches!(err, NftError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("applying a JSON batch"), "{err}");
    assert_eq!(Nft::new(ns).unwrap().list_table(deny::FAMILY, deny::TABLE).unwrap(), before);

    // Bad namespace names and missing namespaces fail before touching anything.
    for bad in ["", "../x", "pmfw-no-such-ns"] {
        let err = deny::install(Some(bad)).unwrap_err().to_string();
        assert!(err.contains("podmesh_deny"), "{err}");
    }
    assert_eq!(Nft::new(ns).unwrap().list_table(deny::FAMILY, deny::TABLE).unwrap(), before);
}

#[test]
fn missing_nft_and_kernel_without_nf_tables_are_clear_errors() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).expect("pod");
    let err = Nft::with_nft(Some(pod.name()), "/nonexistent/nft".as_ref()).unwrap_err();
    assert!(matches!(err, NftError::NftMissing { .. }), "{err}");
    assert!(err.to_string().contains("install the nftables package"), "{err}");

    // An nft whose netlink socket fails the way it does on a kernel without nf_tables.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nft");
    let script = dir.path().join("nft.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'netlink: Error: cannot open netlink socket: Protocol not supported' >&2\nexit 1\n",
    )
    .unwrap();
    // Copied into place by a child: had this process opened the executable for writing, a
    // parallel test forking at that moment would hold the fd and exec would fail (ETXTBSY).
    assert!(Command::new("install").arg("-m755").arg(&script).arg(&fake).status().unwrap().success());
    let err = Nft::with_nft(Some(pod.name()), &fake).unwrap().table_exists(deny::FAMILY, deny::TABLE).unwrap_err();
    assert!(matches!(err, NftError::KernelUnsupported { .. }), "{err}");
    assert!(err.to_string().contains("lacks nf_tables"), "{err}");
}
