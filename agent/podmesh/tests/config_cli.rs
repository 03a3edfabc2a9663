//! `podmesh config check`: JSON on success, one error line and exit 2 on bad input.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::harness::clean_podmesh_env;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_podmesh");

fn check(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["config", "check"]).args(args);
    clean_podmesh_env(&mut c).envs(env.iter().copied()).output().expect("run podmesh")
}

#[test]
fn valid_config_from_env_file_and_cmdline_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("podmesh.env");
    std::fs::write(
        &env_file,
        "CONTRAST_EGRESS_PROXY_CONFIG=db#127.0.0.2:5432#db.ns:5432#strict##any#127.0.0.3:80#svc:80#any\n",
    )
    .unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "quiet podmesh.ingress=web#80#T##ops#22#mtls#spiffe://mesh/ops podmesh.admin_port=9901\n")
        .unwrap();
    let o = check(
        &[("EDG_ADMIN_PORT", "9902")],
        &["--env-file", env_file.to_str().unwrap(), "--cmdline", cmdline.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["enabled"], true);
    assert_eq!(json["config"]["admin_port"], 9902, "environment wins over the kernel command line");
    assert_eq!(json["config"]["egress"][0]["identity"]["check"], "target_host");
    assert_eq!(json["config"]["ingress"]["entries"][0]["port"], 80);
    assert_eq!(json["config"]["ingress"]["entries"][0]["mode"], "plaintext", "T is Go's ParseBool true");
    let rules: Vec<&str> =
        json["identity_rules"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        [
            "client certificate of the mesh CA with a DNS or URI SAN in [spiffe://mesh/ops]",
            "client certificate of the mesh CA, any identity",
            "server certificate of the mesh CA with db.ns as a SAN",
            "server certificate of the mesh CA, any identity (#any)",
        ],
        "{json}"
    );
    let warnings = json["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "the shadowed admin port and #any: {json}");
    assert!(warnings[1].as_str().unwrap().starts_with("egress entry any: #any accepts any server"), "{json}");
}

#[test]
fn ingress_udp_is_in_the_json_and_its_errors_name_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "podmesh.ingress= podmesh.ingress_udp=dns#53##syslog#514\n").unwrap();
    let o = check(&[], &["--cmdline", cmdline.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        json["config"]["ingress_udp"],
        serde_json::json!([{"name": "dns", "port": 53}, {"name": "syslog", "port": 514}])
    );
    assert!(json["settings"].as_array().unwrap().iter().any(|s| s["name"] == "podmesh.ingress_udp"), "{json}");
    let o = check(&[("PODMESH_INGRESS_UDP", "dns#53##dns2#53")], &["--cmdline", cmdline.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("PODMESH_INGRESS_UDP (environment): entries \"dns#53\" and \"dns2#53\": duplicate port"),
        "{err}"
    );
}

#[test]
fn nothing_configured_is_disabled() {
    let o = check(&[], &["--cmdline", "/dev/null"]);
    assert!(o.status.success());
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["enabled"], false);
}

#[test]
fn invalid_config_exits_2_with_one_line_naming_entry_and_field() {
    let o = check(&[("CONTRAST_INGRESS_PROXY_CONFIG", "web#80#true##api#99999#false")], &["--cmdline", "/dev/null"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("CONTRAST_INGRESS_PROXY_CONFIG (environment): entry \"api#99999#false\": field port"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty());
    let o = check(&[], &["--env-file", "/nonexistent/podmesh.env", "--cmdline", "/dev/null"]);
    assert_eq!(o.status.code(), Some(2));
}
