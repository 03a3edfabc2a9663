//! Table tests for every grammar rule and source, and a render -> parse round trip.

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const CTX: Ctx<'static> = Ctx { setting: "TEST", origin: "test" };

fn env(vars: &[(&str, &str)]) -> Sources {
    Sources { env: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Sources::default() }
}

fn input(path: &str, text: &str) -> Option<Input> {
    Some(Input { path: path.into(), text: text.into() })
}

fn ingress_entry(name: &str, port: u16, mode: IngressMode) -> IngressEntry {
    IngressEntry { name: name.into(), port, mode, allow: vec![] }
}

fn mtls_entry(name: &str, port: u16, allow: &[&str]) -> IngressEntry {
    IngressEntry {
        name: name.into(),
        port,
        mode: IngressMode::MutualTls,
        allow: allow.iter().map(|a| a.to_string()).collect(),
    }
}

fn egress_entry(name: &str, listen: &str, host: RemoteHost, port: u16, identity: EgressIdentity) -> EgressEntry {
    EgressEntry { name: name.into(), listen: listen.parse().unwrap(), remote_host: host, remote_port: port, identity }
}

const HOST: EgressIdentity = EgressIdentity::TargetHost;

// ---- ingress ----

#[test]
fn ingress_accepts() {
    use IngressMode::*;
    let cases: &[(&str, Ingress)] = &[
        ("DISABLED", Ingress::Disabled),
        (" DISABLED\n", Ingress::Disabled),
        ("", Ingress::Intercept(vec![])),
        ("web#80#true", Ingress::Intercept(vec![ingress_entry("web", 80, Plaintext)])),
        ("web#80#false", Ingress::Intercept(vec![ingress_entry("web", 80, TlsOnly)])),
        (
            "web#80#TRUE##api#8443#False",
            Ingress::Intercept(vec![ingress_entry("web", 80, Plaintext), ingress_entry("api", 8443, TlsOnly)]),
        ),
        ("####web#80#true####", Ingress::Intercept(vec![ingress_entry("web", 80, Plaintext)])),
        (
            "a#1#true##b#65535#false",
            Ingress::Intercept(vec![ingress_entry("a", 1, Plaintext), ingress_entry("b", 65535, TlsOnly)]),
        ),
        (" web # 080 # true ", Ingress::Intercept(vec![ingress_entry("web", 80, Plaintext)])),
        ("web#80#mtls", Ingress::Intercept(vec![mtls_entry("web", 80, &[])])),
        (
            "web#8080#MTLS#frontend|spiffe://mesh/ops##db#5432#mtls# billing ",
            Ingress::Intercept(vec![
                mtls_entry("web", 8080, &["frontend", "spiffe://mesh/ops"]),
                mtls_entry("db", 5432, &["billing"]),
            ]),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&parse_ingress(text, &CTX).unwrap_or_else(|e| panic!("{text:?}: {e}")), want, "{text:?}");
    }
}

#[test]
fn ingress_rejects_naming_entry_and_field() {
    let cases: &[(&str, &str)] = &[
        ("web#80#yes", "field bool: expected true or false (or 1, t, 0, f; or mtls), got \"yes\""),
        ("web#80#2", "field bool"),
        ("web#80#on", "field bool"),
        ("web#80#true#frontend", "field allow: an identity list needs an mtls port"),
        ("web#80#false#frontend", "field allow"),
        ("web#80#0#frontend", "field allow"),
        ("web#80#mtls#", "field identities: \"\" has an empty identity"),
        ("web#80#mtls#a||b", "empty identity"),
        ("web#80#mtls#a|a", "\"a\" is listed twice"),
        ("web#80#mtls#a b", "contains ' '"),
        ("web#80#mtls#a|b\"c", "contains '\"'"),
        ("web#80#mtls#a#b", "got 5"),
        ("web#80#", "field bool"),
        ("web#0#true", "field port: port 0 is out of range"),
        ("web#65536#true", "field port: port 65536 is out of range"),
        ("web#4294967376#true", "out of range"),
        ("web#-1#true", "field port: \"-1\" is not a port number"),
        ("web#+80#true", "not a port number"),
        ("web#eighty#true", "not a port number"),
        ("web# #true", "field port: port is empty"),
        ("web##true", "entry \"web\": expected 3 (name#port#bool)"),
        ("we\"b#80#true", "field name: contains '\"'"),
        ("#80#true", "field name: must not be empty"),
        ("my web#80#true", "field name: contains ' '"),
        ("web#80", "expected 3 (name#port#bool) or, for mtls, 4 (name#port#mtls#id1|id2), got 2"),
        ("web#80#true#x#y", "expected 3 (name#port#bool) or, for mtls, 4 (name#port#mtls#id1|id2), got 5"),
        ("disabled", "expected 3"),
        ("web#80#true##web#81#true", "duplicate name"),
        ("web#80#true##api#80#false", "duplicate port"),
    ];
    for (text, want) in cases {
        let err = parse_ingress(text, &CTX).expect_err(text).to_string();
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.starts_with("TEST (test): entr"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    let err = parse_ingress("a#1#true##web#80#yes", &CTX).unwrap_err().to_string();
    assert!(err.contains("entry \"web#80#yes\""), "names the entry text: {err}");
    let long = format!("{}#80#true", "n".repeat(254));
    assert!(parse_ingress(&long, &CTX).unwrap_err().to_string().contains("longer than 253"));
}

// ---- ingress UDP (podmesh extension) ----

#[test]
fn ingress_udp_accepts() {
    let udp = |name: &str, port| UdpEntry { name: name.into(), port };
    let cases: &[(&str, Vec<UdpEntry>)] = &[
        ("", vec![]),
        ("dns#53", vec![udp("dns", 53)]),
        ("##dns#53####syslog# 0514 ##", vec![udp("dns", 53), udp("syslog", 514)]),
        ("a#1##b#65535", vec![udp("a", 1), udp("b", 65535)]),
    ];
    for (text, want) in cases {
        assert_eq!(&parse_ingress_udp(text, &CTX).unwrap_or_else(|e| panic!("{text:?}: {e}")), want, "{text:?}");
    }
}

#[test]
fn ingress_udp_rejects_naming_entry_and_field() {
    let cases: &[(&str, &str)] = &[
        ("dns#0", "entry \"dns#0\": field port: port 0 is out of range"),
        ("dns#65536", "field port: port 65536 is out of range"),
        ("dns#-53", "field port: \"-53\" is not a port number"),
        ("dns#", "field port: port is empty"),
        ("53", "entry \"53\": expected 2 (name#port), got 1"),
        ("dns#53#true", "expected 2 (name#port), got 3"),
        ("#53", "field name: must not be empty"),
        ("d s#53", "field name: contains ' '"),
        ("dns#53##dns#54", "entries \"dns#53\" and \"dns#54\": duplicate name"),
        ("dns#53##other#53", "entries \"dns#53\" and \"other#53\": duplicate port"),
    ];
    for (text, want) in cases {
        let err = parse_ingress_udp(text, &CTX).expect_err(text).to_string();
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.starts_with("TEST (test): entr"), "{err}");
    }
}

#[test]
fn ingress_udp_from_every_source_and_its_limits() {
    let s = Sources {
        env: vec![("CONTRAST_INGRESS_PROXY_CONFIG".into(), "".into())],
        cmdline: input("/proc/cmdline", "podmesh.ingress_udp=dns#53##dns#54"),
        ..Sources::default()
    };
    let err = parse(&s.resolve().unwrap()).unwrap_err().to_string();
    assert_eq!(
        err,
        "podmesh.ingress_udp (kernel command line /proc/cmdline): entries \"dns#53\" and \"dns#54\": duplicate name"
    );
    let s = Sources {
        env_file: input("/etc/podmesh.env", "CONTRAST_ADMIN_PORT=9901\nPODMESH_INGRESS_UDP=dns#53\n"),
        ..Sources::default()
    };
    let cfg = parse(&s.resolve().unwrap()).unwrap().unwrap();
    assert_eq!(cfg.ingress_udp, vec![UdpEntry { name: "dns".into(), port: 53 }]);
    // The same port number as a TCP ingress entry or the admin port is a different protocol: fine.
    let cfg = parse(&env(&[("CONTRAST_ADMIN_PORT", "53"), ("PODMESH_INGRESS_UDP", "dns#53")]).resolve().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(cfg.admin_port, Some(53));
    // Alone it configures no mesh, and says so.
    let r = env(&[("PODMESH_INGRESS_UDP", "dns#53")]).resolve().unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("PODMESH_INGRESS_UDP from environment is ignored: no mesh is configured")),
        "{:?}",
        r.warnings
    );
    assert_eq!(parse(&r).unwrap(), None);
    // With ingress DISABLED nothing is filtered: a list would be a lie.
    let err = parse(
        &env(&[("CONTRAST_INGRESS_PROXY_CONFIG", "DISABLED"), ("PODMESH_INGRESS_UDP", "dns#53")]).resolve().unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("PODMESH_INGRESS_UDP (environment): ingress is DISABLED"), "{err}");
    let cfg =
        parse(&env(&[("CONTRAST_INGRESS_PROXY_CONFIG", "DISABLED"), ("PODMESH_INGRESS_UDP", "")]).resolve().unwrap())
            .unwrap()
            .unwrap();
    assert!(cfg.ingress_udp.is_empty(), "an empty list with DISABLED is no contradiction");
}

// ---- egress ----

#[test]
fn egress_accepts() {
    let v4 = |a, b, c, d| RemoteHost::Ip(Ipv4Addr::new(a, b, c, d).into());
    let cases: Vec<(&str, Vec<EgressEntry>)> = vec![
        ("", vec![]),
        (
            "db#127.0.0.2:5432#db.default.svc:5432",
            vec![egress_entry("db", "127.0.0.2:5432", RemoteHost::Name("db.default.svc".into()), 5432, HOST)],
        ),
        ("db#127.1.2.3:5432#10.0.0.5:5432", vec![egress_entry("db", "127.1.2.3:5432", v4(10, 0, 0, 5), 5432, HOST)]),
        (
            "v6#127.0.0.1:8080#[fd00::1]:443#strict",
            vec![egress_entry(
                "v6",
                "127.0.0.1:8080",
                RemoteHost::Ip("fd00::1".parse::<Ipv6Addr>().unwrap().into()),
                443,
                HOST,
            )],
        ),
        ("s#127.0.0.1:1#svc:1#STRICT", vec![egress_entry("s", "127.0.0.1:1", RemoteHost::Name("svc".into()), 1, HOST)]),
        ("s#127.0.0.1:1#svc.:1", vec![egress_entry("s", "127.0.0.1:1", RemoteHost::Name("svc.".into()), 1, HOST)]),
        (
            "s#127.0.0.1:1#svc:1#Any",
            vec![egress_entry("s", "127.0.0.1:1", RemoteHost::Name("svc".into()), 1, EgressIdentity::Any)],
        ),
        (
            "billing#127.137.0.1:8081#10.0.0.7:8080#spiffe://mesh/billing|billing.svc",
            vec![egress_entry(
                "billing",
                "127.137.0.1:8081",
                v4(10, 0, 0, 7),
                8080,
                EgressIdentity::OneOf(vec!["spiffe://mesh/billing".into(), "billing.svc".into()]),
            )],
        ),
        (
            "a#127.0.0.1:80#a:80####b#127.0.0.1:81#b_1-x.ns:81",
            vec![
                egress_entry("a", "127.0.0.1:80", RemoteHost::Name("a".into()), 80, HOST),
                egress_entry("b", "127.0.0.1:81", RemoteHost::Name("b_1-x.ns".into()), 81, HOST),
            ],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_egress(text, &CTX).unwrap_or_else(|e| panic!("{text:?}: {e}")), want, "{text:?}");
    }
}

#[test]
fn egress_rejects_naming_entry_and_field() {
    let cases: &[(&str, &str)] = &[
        ("db#10.0.0.1:5432#db:5432", "field listen: 10.0.0.1 is outside 127.0.0.0/8"),
        ("db#[::1]:5432#db:5432", "field listen: \"[::1]\" is not an IPv4 address"),
        ("db#localhost:5432#db:5432", "field listen"),
        ("db#127.0.0.1#db:5432", "field listen: \"127.0.0.1\" is not <ip>:<port>"),
        ("db#127.0.0.1:0#db:5432", "field listen port: port 0 is out of range"),
        ("db#127.0.0.1:70000#db:5432", "field listen port"),
        ("db#127.0.0.1:5432#db", "field remote: \"db\" is not <host>:<port>"),
        ("db#127.0.0.1:5432#db:0", "field remote port"),
        ("db#127.0.0.1:5432#db:99999", "field remote port"),
        ("db#127.0.0.1:5432#fd00::1:443", "must be in brackets"),
        ("db#127.0.0.1:5432#[fd00::1:443", "is not [<ipv6>]:<port>"),
        ("db#127.0.0.1:5432#[nothex]:443", "is not an IPv6 address"),
        ("db#127.0.0.1:5432#:443", "field remote: host is empty"),
        ("db#127.0.0.1:5432#bad host:443", "not a valid host name"),
        ("db#127.0.0.1:5432#-bad:443", "not a valid host name"),
        ("db#127.0.0.1:5432#a..b:443", "not a valid host name"),
        ("db#127.0.0.1:5432#999.1.1.1:443", "last label is numeric"),
        ("db#127.0.0.1:5432#db:5432#", "field identities: \"\" has an empty identity"),
        ("db#127.0.0.1:5432#db:5432#a||b", "field identities: \"a||b\" has an empty identity"),
        ("db#127.0.0.1:5432#db:5432#a|a", "is listed twice"),
        ("db#127.0.0.1:5432#db:5432#a b", "contains ' '"),
        ("db#127.0.0.1:5432#db:5432#a|any", "\"any\" is a keyword"),
        ("db#127.0.0.1:5432#db:5432#Strict|b", "is a keyword"),
        ("db#127.0.0.1:5432", "expected 3 or 4"),
        ("db#127.0.0.1:5432#db:5432#strict#x", "expected 3 or 4"),
        ("#127.0.0.1:5432#db:5432", "field name: must not be empty"),
        ("a#127.0.0.1:80#a:80##a#127.0.0.1:81#b:80", "duplicate name"),
        ("a#127.0.0.1:80#a:80##b#127.0.0.1:80#b:80", "duplicate listen address"),
    ];
    for (text, want) in cases {
        let err = parse_egress(text, &CTX).expect_err(text).to_string();
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.contains(text.split("##").last().unwrap()), "names the entry: {err}");
    }
    // Same port on different loopback addresses is fine.
    assert_eq!(parse_egress("a#127.0.0.1:80#a:80##b#127.0.0.2:80#b:80", &CTX).unwrap().len(), 2);
}

// ---- admin port and collisions ----

#[test]
fn admin_port() {
    assert_eq!(parse_admin_port("9901", &CTX).unwrap(), Some(9901));
    assert_eq!(parse_admin_port(" ", &CTX).unwrap(), None);
    for bad in ["0", "65536", "x", "-5", "99999999999999999999"] {
        let err = parse_admin_port(bad, &CTX).unwrap_err().to_string();
        assert!(err.starts_with(&format!("TEST (test): \"{bad}\"")), "{err}");
    }
}

#[test]
fn admin_port_may_not_collide() {
    let load_env = |vars: &[(&str, &str)]| parse(&env(vars).resolve().unwrap());
    let err =
        load_env(&[("CONTRAST_INGRESS_PROXY_CONFIG", "web#9901#true"), ("CONTRAST_ADMIN_PORT", "9901")]).unwrap_err();
    assert!(err.to_string().contains("admin port 9901 collides with ingress entry \"web#9901#true\""), "{err}");
    let err =
        load_env(&[("CONTRAST_EGRESS_PROXY_CONFIG", "db#127.0.0.2:9901#db:5432"), ("CONTRAST_ADMIN_PORT", "9901")])
            .unwrap_err();
    assert!(err.to_string().contains("collides with egress entry"), "{err}");
    // The remote port of an egress entry is someone else's port: no collision.
    assert!(load_env(&[
        ("CONTRAST_EGRESS_PROXY_CONFIG", "db#127.0.0.2:5432#db:9901"),
        ("CONTRAST_ADMIN_PORT", "9901")
    ])
    .is_ok());
}

// ---- sources and precedence ----

#[test]
fn no_setting_anywhere_means_mesh_disabled() {
    assert_eq!(parse(&Sources::default().resolve().unwrap()).unwrap(), None);
    let s = Sources { cmdline: input("/proc/cmdline", "console=ttyS0 quiet"), ..env(&[("PATH", "/bin")]) };
    assert_eq!(parse(&s.resolve().unwrap()).unwrap(), None);
    // An empty admin port counts as absent.
    assert_eq!(parse(&env(&[("CONTRAST_ADMIN_PORT", "")]).resolve().unwrap()).unwrap(), None);
}

#[test]
fn any_one_setting_enables_the_mesh_with_defaults() {
    let cfg = parse(&env(&[("CONTRAST_ADMIN_PORT", "9901")]).resolve().unwrap()).unwrap().unwrap();
    assert_eq!(
        cfg,
        MeshConfig { ingress: Ingress::Intercept(vec![]), egress: vec![], admin_port: Some(9901), ingress_udp: vec![] }
    );
    assert_eq!(cfg.port_policy(443), PortPolicy::MutualTls);
    let cfg = parse(&env(&[("CONTRAST_INGRESS_PROXY_CONFIG", "")]).resolve().unwrap()).unwrap().unwrap();
    assert_eq!(cfg.ingress, Ingress::Intercept(vec![]));
}

#[test]
fn contrast_wins_over_legacy_with_a_warning() {
    let r = env(&[("EDG_INGRESS_PROXY_CONFIG", "old#1#true"), ("CONTRAST_INGRESS_PROXY_CONFIG", "new#2#true")])
        .resolve()
        .unwrap();
    let s = r.settings[0].as_ref().unwrap();
    assert_eq!((s.name, s.value.as_str()), ("CONTRAST_INGRESS_PROXY_CONFIG", "new#2#true"));
    assert!(r.warnings.iter().any(|w| w.contains("legacy EDG_INGRESS_PROXY_CONFIG")), "{:?}", r.warnings);
    // Legacy alone is used, and errors name the legacy variable.
    let r = env(&[("EDG_EGRESS_PROXY_CONFIG", "x#1.2.3.4:1#y:1")]).resolve().unwrap();
    let err = parse(&r).unwrap_err().to_string();
    assert!(err.starts_with("EDG_EGRESS_PROXY_CONFIG (environment): entry \"x#1.2.3.4:1#y:1\": field listen"), "{err}");
    assert!(r.warnings.is_empty());
}

#[test]
fn precedence_is_environment_then_env_file_then_cmdline_per_setting() {
    let s = Sources {
        env: vec![("CONTRAST_ADMIN_PORT".into(), "1000".into())],
        env_file: input(
            "/etc/podmesh/podmesh.env",
            "CONTRAST_ADMIN_PORT=2000\nCONTRAST_EGRESS_PROXY_CONFIG=f#127.0.0.1:80#f:80\n",
        ),
        cmdline: input(
            "/proc/cmdline",
            "podmesh.admin_port=3000 podmesh.egress=c#127.0.0.1:81#c:81 podmesh.ingress=DISABLED",
        ),
        attested: None,
    };
    let r = s.resolve().unwrap();
    let [ingress, egress, admin, udp] = &r.settings;
    assert!(udp.is_none());
    assert_eq!(admin.as_ref().unwrap().value, "1000");
    assert_eq!(admin.as_ref().unwrap().source, "environment");
    assert_eq!(egress.as_ref().unwrap().source, "env-file /etc/podmesh/podmesh.env");
    assert_eq!(ingress.as_ref().unwrap().source, "kernel command line /proc/cmdline");
    assert_eq!(ingress.as_ref().unwrap().name, "podmesh.ingress");
    assert_eq!(r.warnings.len(), 3, "two shadowed admin ports and one egress: {:?}", r.warnings);
    let cfg = parse(&r).unwrap().unwrap();
    assert_eq!((cfg.ingress, cfg.admin_port, cfg.egress[0].name.as_str()), (Ingress::Disabled, Some(1000), "f"));
}

#[test]
fn errors_name_the_source() {
    let s = Sources { cmdline: input("/tmp/cmdline", "podmesh.ingress=web#80#maybe"), ..Sources::default() };
    let err = parse(&s.resolve().unwrap()).unwrap_err().to_string();
    assert_eq!(err, "podmesh.ingress (kernel command line /tmp/cmdline): entry \"web#80#maybe\": field bool: expected true or false (or 1, t, 0, f; or mtls), got \"maybe\"");
}

#[test]
fn cmdline_grammar() {
    let p = parse_cmdline("BOOT_IMAGE=/vmlinuz ro  podmesh.egress=\"a#127.0.0.1:1#b:1\" quiet\n\"podmesh.ingress=x#1#true\" -- podmesh.admin_port=5");
    assert_eq!(
        p,
        vec![
            ("BOOT_IMAGE".into(), "/vmlinuz".into()),
            ("ro".into(), "".into()),
            ("podmesh.egress".into(), "a#127.0.0.1:1#b:1".into()),
            ("quiet".into(), "".into()),
            ("podmesh.ingress".into(), "x#1#true".into()),
        ]
    );
    let r = Sources { cmdline: input("c", "podmesh.admin_port=1 podmesh.admin_port=2"), ..Sources::default() }
        .resolve()
        .unwrap();
    assert_eq!(r.settings[2].as_ref().unwrap().value, "2");
    assert!(r.warnings[0].contains("appears 2 times"), "{:?}", r.warnings);
}

#[test]
fn env_file_grammar() {
    let text = "# comment\n; also comment\n\n  CONTRAST_ADMIN_PORT = \"9901\"\nEDG_INGRESS_PROXY_CONFIG='w#80#true'\nCONTRAST_EGRESS_PROXY_CONFIG=a#127.0.0.1:1#b:1##c#127.0.0.1:2#d:2\n";
    let vars = parse_env_file(text, "/f".as_ref()).unwrap();
    assert_eq!(vars[0], ("CONTRAST_ADMIN_PORT".into(), "9901".into()));
    assert_eq!(vars[1], ("EDG_INGRESS_PROXY_CONFIG".into(), "w#80#true".into()));
    assert_eq!(vars[2].1, "a#127.0.0.1:1#b:1##c#127.0.0.1:2#d:2", "a '#' inside a value is not a comment");
    let bad: &[(&str, &str)] = &[
        ("just words\n", "line 1: \"just words\" is not KEY=VALUE"),
        ("OK=1\n1BAD=2\n", "line 2: \"1BAD\" is not a variable name"),
        ("=x\n", "line 1: \"\" is not a variable name"),
        ("export A=1\n", "is not a variable name"),
        ("A=1 \\\n", "line continuation"),
    ];
    for (text, want) in bad {
        let err = parse_env_file(text, "/etc/x.env".as_ref()).unwrap_err().to_string();
        assert!(err.starts_with("env-file /etc/x.env: ") && err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn unreadable_and_non_utf8_files_are_clear_errors() {
    let err = Input::read("env-file", "/nonexistent/podmesh.env".as_ref()).unwrap_err().to_string();
    assert!(err.starts_with("cannot read env-file /nonexistent/podmesh.env: "), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bin.env");
    std::fs::write(&p, b"A=\xff\xfe\n").unwrap();
    let err = Input::read("env-file", &p).unwrap_err().to_string();
    assert!(err.contains("not UTF-8"), "{err}");
}

// ---- render -> parse round trip ----

#[test]
fn display_renders_env_file_lines() {
    let cfg = MeshConfig {
        ingress: Ingress::Intercept(vec![
            ingress_entry("web", 80, IngressMode::Plaintext),
            ingress_entry("api", 443, IngressMode::TlsOnly),
        ]),
        egress: vec![egress_entry(
            "db",
            "127.0.0.2:5432",
            RemoteHost::Ip("fd00::5".parse::<Ipv6Addr>().unwrap().into()),
            5432,
            EgressIdentity::OneOf(vec!["spiffe://mesh/db".into()]),
        )],
        admin_port: Some(9901),
        ingress_udp: vec![UdpEntry { name: "dns".into(), port: 53 }, UdpEntry { name: "syslog".into(), port: 514 }],
    };
    assert_eq!(
        cfg.to_string(),
        "CONTRAST_INGRESS_PROXY_CONFIG=web#80#true##api#443#false\nCONTRAST_EGRESS_PROXY_CONFIG=db#127.0.0.2:5432#[fd00::5]:5432#spiffe://mesh/db\nCONTRAST_ADMIN_PORT=9901\nPODMESH_INGRESS_UDP=dns#53##syslog#514\n"
    );
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["ingress"]["mode"], "intercept");
    assert_eq!(json["ingress"]["entries"][0]["mode"], "plaintext");
    assert_eq!(json["egress"][0]["remote_host"], "fd00::5");
    assert_eq!(json["ingress_udp"][1], serde_json::json!({"name": "syslog", "port": 514}));
}

fn arb_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/;=\\[\\]-][A-Za-z0-9._:/@;=\\[\\]-]{0,20}"
}

fn arb_host() -> impl Strategy<Value = RemoteHost> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(|ip| RemoteHost::Ip(ip.into())),
        any::<Ipv6Addr>().prop_map(|ip| RemoteHost::Ip(ip.into())),
        "([a-z0-9_]([a-z0-9-]{0,10}[a-z0-9])?\\.){0,3}[a-z_]([a-z0-9-]{0,10}[a-z0-9])?\\.?".prop_map(RemoteHost::Name),
    ]
}

fn arb_identities() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("[A-Za-z0-9._:/@=-]{1,20}", 1..4)
        .prop_filter("keywords", |ids| {
            !ids.iter().any(|i| ["any", "strict"].contains(&i.to_ascii_lowercase().as_str()))
        })
        .prop_map(|ids| ids.into_iter().collect())
}

fn arb_ingress_mode() -> impl Strategy<Value = (IngressMode, Vec<String>)> {
    prop_oneof![
        Just((IngressMode::Plaintext, vec![])),
        Just((IngressMode::TlsOnly, vec![])),
        Just((IngressMode::MutualTls, vec![])),
        arb_identities().prop_map(|ids| (IngressMode::MutualTls, ids)),
    ]
}

fn arb_egress_identity() -> impl Strategy<Value = EgressIdentity> {
    prop_oneof![
        Just(EgressIdentity::TargetHost),
        Just(EgressIdentity::Any),
        arb_identities().prop_map(EgressIdentity::OneOf)
    ]
}

prop_compose! {
    fn arb_config()(
        disabled in any::<bool>(),
        ingress in proptest::collection::btree_map(arb_name(), (1u16..=65535, arb_ingress_mode()), 0..5),
        egress in proptest::collection::btree_map(arb_name(), (any::<[u8; 3]>(), 1u16..=65535, arb_host(), 1u16..=65535, arb_egress_identity()), 0..5),
        admin in proptest::option::of(1u16..=65535),
        udp in proptest::collection::btree_map(arb_name(), 1u16..=65535, 0..4),
    ) -> MeshConfig {
        let mut ports = std::collections::BTreeSet::new();
        let ingress = if disabled { Ingress::Disabled } else {
            Ingress::Intercept(ingress.into_iter().filter(|(_, (p, _))| ports.insert(*p)).map(|(name, (port, (mode, allow)))| IngressEntry {
                name, port, mode, allow,
            }).collect())
        };
        let mut listens = std::collections::BTreeSet::new();
        let egress: Vec<EgressEntry> = egress.into_iter().filter_map(|(name, (ip, lport, host, rport, identity))| {
            let listen = SocketAddr::new(Ipv4Addr::new(127, ip[0], ip[1], ip[2]).into(), lport);
            listens.insert(listen).then_some(EgressEntry { name, listen, remote_host: host, remote_port: rport, identity })
        }).collect();
        let admin_port = admin.filter(|a| !ports.contains(a) && !egress.iter().any(|e| e.listen.port() == *a));
        let mut udp_ports = std::collections::BTreeSet::new();
        let ingress_udp = if disabled { vec![] } else {
            udp.into_iter().filter(|(_, p)| udp_ports.insert(*p)).map(|(name, port)| UdpEntry { name, port }).collect()
        };
        MeshConfig { ingress, egress, admin_port, ingress_udp }
    }
}

/// The third field as Contrast writes it: every spelling Go's `strconv.ParseBool` accepts,
/// and `true`/`false` in any case (accepted by podmesh before).
fn arb_contrast_bool() -> impl Strategy<Value = (String, bool)> {
    const GO: [&str; 12] = ["1", "t", "T", "TRUE", "True", "true", "0", "f", "F", "FALSE", "False", "false"];
    prop_oneof![
        proptest::sample::select(&GO[..])
            .prop_map(|w| (w.to_string(), ["1", "t", "T", "TRUE", "True", "true"].contains(&w))),
        ("[tT][rR][uU][eE]").prop_map(|w| (w, true)),
        ("[fF][aA][lL][sS][eE]").prop_map(|w| (w, false)),
    ]
}

proptest! {
    #[test]
    fn rendered_config_parses_back_to_itself(cfg in arb_config()) {
        let text = cfg.to_string();
        let sources = Sources { env_file: input("/rendered.env", &text), ..Sources::default() };
        let parsed = parse(&sources.resolve().unwrap()).unwrap();
        prop_assert_eq!(parsed, Some(cfg), "{}", text);
    }

    /// Contrast-style entries (no podmesh extension) keep exactly their meaning: `#bool`
    /// picks plaintext or TLS-only, every other port is mTLS from any mesh certificate, and
    /// an egress entry is its name, listener and remote (checked against the remote host,
    /// podmesh's default since issue #14).
    #[test]
    fn contrast_entries_keep_their_meaning(
        ingress in proptest::collection::btree_map(arb_name(), (1u16..=65535, arb_contrast_bool()), 0..5),
        egress in proptest::collection::btree_map(arb_name(), (1u16..=65535, arb_host(), 1u16..=65535), 0..4),
        probe in 1u16..=65535,
    ) {
        let mut ports = std::collections::BTreeSet::new();
        let ingress: Vec<_> = ingress.into_iter().filter(|(_, (p, _))| ports.insert(*p)).collect();
        let text: Vec<String> = ingress.iter().map(|(n, (p, (word, _)))| format!("{n}#{p}#{word}")).collect();
        let Ingress::Intercept(parsed) = parse_ingress(&text.join("##"), &CTX).unwrap() else { panic!("not intercepted") };
        prop_assert_eq!(parsed.len(), ingress.len());
        for (e, (name, (port, (_, plaintext)))) in parsed.iter().zip(&ingress) {
            let mode = if *plaintext { IngressMode::Plaintext } else { IngressMode::TlsOnly };
            prop_assert_eq!(e, &ingress_entry(name, *port, mode));
        }
        let cfg = MeshConfig { ingress: Ingress::Intercept(parsed), egress: vec![], admin_port: None, ingress_udp: vec![] };
        let want = match ingress.iter().find(|(_, (p, _))| *p == probe) {
            Some((_, (_, (_, true)))) => PortPolicy::Plaintext,
            Some(_) => PortPolicy::TlsOnly,
            None => PortPolicy::MutualTls,
        };
        prop_assert_eq!(cfg.port_policy(probe), want);

        let entries: Vec<(String, String, RemoteHost, u16)> = egress.into_iter().enumerate()
            .map(|(i, (name, (lport, host, rport)))| (name, format!("127.0.{i}.1:{lport}"), host, rport)).collect();
        let text: Vec<String> = entries.iter().map(|(n, l, h, p)| format!("{n}#{l}#{h}:{p}")).collect();
        let parsed = parse_egress(&text.join("##"), &CTX).unwrap();
        let want: Vec<EgressEntry> = entries.iter().map(|(n, l, h, p)| egress_entry(n, l, h.clone(), *p, HOST)).collect();
        prop_assert_eq!(parsed, want);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_ingress(&text, &CTX);
        let _ = parse_egress(&text, &CTX);
        let _ = parse_admin_port(&text, &CTX);
        let _ = parse_ingress_udp(&text, &CTX);
        let _ = parse_env_file(&text, "/x".as_ref());
        let _ = parse_cmdline(&text);
    }
}

#[test]
fn identity_rules_and_warnings_say_who_may_talk_to_whom() {
    let cfg = parse(
        &env(&[
            ("CONTRAST_INGRESS_PROXY_CONFIG", "web#8080#mtls#frontend|spiffe://mesh/ops##api#8443#false"),
            ("CONTRAST_EGRESS_PROXY_CONFIG", "db#127.0.0.2:5432#10.0.0.8:5432##any#127.0.0.3:80#svc:80#any"),
        ])
        .resolve()
        .unwrap(),
    )
    .unwrap()
    .unwrap();
    let plan = crate::proxy::Plan::from_config(&cfg);
    let rules: Vec<String> = plan.identity_rules().iter().map(ToString::to_string).collect();
    assert_eq!(
        rules,
        [
            "ingress entry web (port 8080): client certificate of the mesh CA with a DNS or URI SAN in [frontend, spiffe://mesh/ops]",
            "ingress ports without an entry: client certificate of the mesh CA, any identity",
            "egress entry db: server certificate of the mesh CA with 10.0.0.8 as a SAN",
            "egress entry any: server certificate of the mesh CA, any identity (#any)",
        ]
    );
    let warnings = plan.identity_warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].starts_with("egress entry any: #any accepts any server of the mesh at svc"), "{warnings:?}");
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["ingress"]["entries"][0]["allow"], serde_json::json!(["frontend", "spiffe://mesh/ops"]));
    assert_eq!(json["egress"][0]["identity"], serde_json::json!({"check": "target_host"}));
    assert_eq!(json["egress"][1]["identity"], serde_json::json!({"check": "any"}));
}

#[test]
fn attested_mode_ignores_environment_and_env_file_for_every_setting() {
    // The host lies twice (environment and env-file credential: port 8080 in plaintext);
    // the verified initdata says TLS, the measured command line adds the admin port.
    let s = Sources {
        env: vec![("CONTRAST_INGRESS_PROXY_CONFIG".into(), "app#8080#true".into())],
        env_file: input("/run/podmesh/podmesh.env", "EDG_INGRESS_PROXY_CONFIG=app#8080#true\nPODMESH_INGRESS_UDP=dns#53\nPODMESH_COORDINATOR=evil:1\nPODMESH_COORDINATOR_FINGERPRINT=00\n"),
        cmdline: input("/proc/cmdline", "podmesh.admin_port=9901 podmesh.coordinator_fingerprint=ab"),
        attested: input("/run/initdata.toml", "CONTRAST_INGRESS_PROXY_CONFIG=app#8080#false\nPODMESH_COORDINATOR=good:8443\n"),
    };
    let r = s.resolve().unwrap();
    let cfg = parse(&r).unwrap().unwrap();
    assert_eq!(cfg.port_policy(8080), PortPolicy::TlsOnly);
    assert_eq!(cfg.admin_port, Some(9901));
    assert!(cfg.ingress_udp.is_empty(), "UDP ports only from attested sources");
    let ingress = r.settings[0].as_ref().unwrap();
    assert_eq!(ingress.source, "initdata /run/initdata.toml");
    assert_eq!(
        r.ignored,
        [
            "CONTRAST_INGRESS_PROXY_CONFIG from environment is ignored: not attested (initdata is present)",
            "EDG_INGRESS_PROXY_CONFIG from env-file /run/podmesh/podmesh.env is ignored: not attested (initdata is present)",
            "PODMESH_INGRESS_UDP from env-file /run/podmesh/podmesh.env is ignored: not attested (initdata is present)",
        ]
    );
    // Coordinator settings: initdata, else the command line; never the env-file.
    assert_eq!(s.podmesh_value("coordinator").unwrap().unwrap().0, "good:8443");
    assert_eq!(s.podmesh_value("coordinator_fingerprint").unwrap().unwrap().0, "ab");
    let ignored = s.ignored_podmesh_values().unwrap();
    assert_eq!(ignored.len(), 2, "{ignored:?}");
    assert!(ignored[0].starts_with("PODMESH_COORDINATOR from env-file"), "{ignored:?}");
    // Without initdata the same sources behave as before: the environment wins.
    let plain = Sources { attested: None, ..s };
    let cfg = parse(&plain.resolve().unwrap()).unwrap().unwrap();
    assert_eq!(cfg.port_policy(8080), PortPolicy::Plaintext);
    assert_eq!(plain.podmesh_value("coordinator").unwrap().unwrap().0, "evil:1");
}
