//! scripts/check-units.sh really fails on broken units (and passes on ours).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the script on a copy of units/ after `break_it` edits the copy.
fn check_copy(break_it: impl FnOnce(&std::path::Path)) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp").arg("-r").arg(root().join("units/.")).arg(dir.path()).status().unwrap();
    assert!(status.success());
    break_it(dir.path());
    let out = Command::new("bash")
        .arg(root().join("scripts/check-units.sh"))
        .env("PODMESH_UNITS_DIR", dir.path())
        .output()
        .expect("run check-units.sh");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn append(path: &std::path::Path, text: &str) {
    let old = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, format!("{old}\n{text}\n")).unwrap();
}

#[test]
fn our_units_pass() {
    let (ok, err) = check_copy(|_| {});
    assert!(ok, "{err}");
    assert!(err.contains("podmesh-deny.service"), "{err}");
}

#[test]
fn unknown_key_in_a_unit_fails() {
    let (ok, err) = check_copy(|d| append(&d.join("podmesh-deny.service"), "[Service]\nRestartSecs=1"));
    assert!(!ok && err.contains("Unknown key") && err.contains("podmesh-deny.service"), "{err}");
}

#[test]
fn bad_drop_in_fails() {
    let (ok, err) =
        check_copy(|d| append(&d.join("kata-agent.service.d/podmesh.conf"), "Requiress=podmesh-deny.service"));
    assert!(!ok && err.contains("podmesh.conf"), "{err}");
}

#[test]
fn preset_naming_a_missing_unit_fails() {
    let (ok, err) = check_copy(|d| append(&d.join("90-podmesh.preset"), "enable podmesh-nothere.service"));
    assert!(!ok && err.contains("podmesh-nothere.service"), "{err}");
}

#[test]
fn deny_unit_not_required_by_kata_agent_fails() {
    let (ok, err) = check_copy(|d| {
        let p = d.join("podmesh-deny.service");
        let text =
            std::fs::read_to_string(&p).unwrap().replace("RequiredBy=kata-agent.service", "WantedBy=multi-user.target");
        std::fs::write(&p, text).unwrap();
    });
    assert!(!ok && err.contains("require podmesh-deny.service"), "{err}");
}

#[test]
fn peer_pods_drop_in_is_verified_with_our_units() {
    let (ok, err) = check_copy(|_| {});
    assert!(ok && err.contains("with peer-pods drop-ins podmesh-.service.d"), "{err}");
    let (ok, err) =
        check_copy(|d| append(&d.join("peer-pods/podmesh-.service.d/50-podns.conf"), "RestrictNamespacez=net"));
    assert!(!ok && err.contains("Unknown key") && err.contains("50-podns.conf"), "{err}");
}

#[test]
fn peer_pods_drop_in_without_the_netns_fails() {
    let (ok, err) = check_copy(|d| {
        let p = d.join("peer-pods/podmesh-.service.d/50-podns.conf");
        let text = std::fs::read_to_string(&p).unwrap().replace("Environment=PODMESH_NETNS=podns", "");
        std::fs::write(&p, text).unwrap();
    });
    assert!(!ok && err.contains("does not set PODMESH_NETNS=podns"), "{err}");
}
