//! `firewall::tproxy` and `firewall::routes` against the real `nft` and `ip` in a pod:
//! install is idempotent (one table, one rule per family after repeated installs), the
//! ruleset is what the proxy relies on, and removal leaves nothing behind.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use firewall::{
    routes::{self, RouteSpec},
    tproxy::{self, Spec},
};
use podmesh_tests::netns::Pod;

fn spec() -> Spec {
    Spec {
        mtls_port: 15006,
        tls_port: 15007,
        passthrough_ports: vec![9090, 9901],
        tls_only_ports: vec![8443],
        udp_ports: vec![5353],
        mark: 0x1,
    }
}

#[test]
fn tproxy_table_and_routes_install_idempotently_and_remove_cleanly() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).unwrap();
    let ns = Some(pod.name());
    let r = RouteSpec { mark: 0x1, table: 100 };
    assert!(!tproxy::is_installed(ns).unwrap());
    for _ in 0..3 {
        tproxy::install(&spec(), ns).unwrap();
        routes::install(r, ns).unwrap();
    }
    let listing =
        String::from_utf8(pod.exec(&["nft", "list", "table", "inet", "podmesh_tproxy"]).unwrap().stdout).unwrap();
    for needle in [
        "type filter hook prerouting priority mangle; policy accept;",
        "iifname \"lo\" return",
        "ct direction reply return",
        "tcp dport { 15006, 15007 } counter packets 0 bytes 0 reject with tcp reset",
        "tcp dport { 9090, 9901 } return",
        "fib daddr type != local counter packets 0 bytes 0 drop",
        "tcp flags != syn / syn,ack socket transparent 1 meta mark set 0x00000001 accept",
        "tcp dport 8443 tproxy to :15007 meta mark set 0x00000001 accept",
        "meta l4proto tcp tproxy to :15006 meta mark set 0x00000001 accept",
        "type filter hook input priority filter; policy accept;",
        "ct state established,related accept",
        "icmp type { destination-unreachable, time-exceeded, parameter-problem } accept",
        "nd-neighbor-solicit, nd-neighbor-advert } accept",
        "udp dport 5353 accept",
        "counter packets 0 bytes 0 drop comment \"podmesh: no new inbound flow but TCP and the listed UDP ports\"",
    ] {
        assert!(listing.contains(needle), "missing {needle:?} in\n{listing}");
    }
    assert_eq!(listing.matches("chain prerouting").count(), 1, "one chain after three installs:\n{listing}");
    assert_eq!(listing.matches("chain input").count(), 1, "one input chain after three installs:\n{listing}");
    for family in ["-4", "-6"] {
        let rules = String::from_utf8(pod.exec(&["ip", family, "rule", "show"]).unwrap().stdout).unwrap();
        assert_eq!(
            rules.matches("fwmark 0x1 lookup 100").count(),
            1,
            "ip {family} rule after three installs:\n{rules}"
        );
        let table =
            String::from_utf8(pod.exec(&["ip", family, "route", "show", "table", "100"]).unwrap().stdout).unwrap();
        assert!(table.contains("local default dev lo"), "ip {family} route table 100:\n{table}");
    }
    assert!(routes::is_installed(r, ns).unwrap());

    assert!(routes::remove(r, ns).unwrap());
    assert!(tproxy::remove(ns).unwrap());
    assert!(!routes::is_installed(r, ns).unwrap());
    assert!(!tproxy::is_installed(ns).unwrap());
    assert!(!routes::remove(r, ns).unwrap(), "second removal finds nothing");
    assert!(!tproxy::remove(ns).unwrap());
}

#[test]
fn invalid_specs_change_nothing() {
    let t = podmesh_tests::skip_unless_root!();
    let pod = Pod::new(&t).unwrap();
    let ns = Some(pod.name());
    let bad = Spec { passthrough_ports: vec![15006], ..spec() };
    assert!(tproxy::install(&bad, ns).is_err());
    assert!(!tproxy::is_installed(ns).unwrap());
    assert!(routes::install(RouteSpec { mark: 0, table: 100 }, ns).is_err());
    assert!(routes::install(RouteSpec { mark: 1, table: 254 }, ns).is_err());
    let rules = String::from_utf8(pod.exec(&["ip", "rule", "show"]).unwrap().stdout).unwrap();
    assert!(!rules.contains("fwmark"), "{rules}");
}
