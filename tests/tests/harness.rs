//! The pod harness itself: connectivity over both families, cleanup on drop and on panic.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::netns::{addr, Pod, PodPair};
use std::{net::TcpListener, path::Path, time::Duration};

#[test]
fn pair_connects_over_ipv4_and_ipv6_and_cleans_up() {
    let t = podmesh_tests::skip_unless_root!();
    let pods = PodPair::new(&t).unwrap();
    let names = [pods.a.name().to_string(), pods.b.name().to_string()];
    // Derived from this test, unique, and short enough for an interface name (IFNAMSIZ).
    assert!(names.iter().all(|n| n.starts_with(&format!("{}-", t.tag())) && n.len() <= 15), "{names:?}");
    assert_ne!(names[0], names[1]);
    let listener = pods.a.in_netns(|| TcpListener::bind("[::]:7001")).unwrap().unwrap();
    pods.a.wait_for_port(7001, Duration::from_secs(5)).unwrap();
    for ip in [std::net::IpAddr::from(PodPair::V4_A), PodPair::V6_A.into()] {
        let target = addr(ip, 7001);
        assert!(pods.b.tcp_connects(target, Duration::from_secs(2)).unwrap(), "{target}");
        listener.accept().unwrap();
    }
    // The listener lives in pod a: nothing listens on 7001 in pod b.
    assert!(pods.b.wait_for_port(7001, Duration::from_millis(100)).is_err());
    let sleeper = pods.b.spawn(&["sleep", "60"]).unwrap();
    drop(listener);
    std::mem::forget(sleeper); // Pod's Drop must kill it anyway.
    drop(pods);
    for n in names {
        assert!(!Path::new("/run/netns").join(&n).exists(), "{n} left behind");
    }
}

#[test]
fn pod_is_removed_when_a_test_panics() {
    let t = podmesh_tests::skip_unless_root!();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let pod = Pod::new(&t).unwrap();
        tx.send(pod.name().to_string()).unwrap();
        panic!("deliberate");
    })
    .join();
    assert!(result.is_err());
    let name = rx.recv().unwrap();
    assert!(!Path::new("/run/netns").join(&name).exists(), "{name} left behind");
}

#[test]
fn exec_reports_failures_with_stderr() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).unwrap();
    let err = pod.exec(&["ip", "link", "show", "no-such-dev"]).unwrap_err().to_string();
    assert!(err.contains("no-such-dev"), "{err}");
    let out = pod.exec(&["ip", "-o", "link"]).unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(links.contains("lo") && links.contains("UP"), "{links}");
}
