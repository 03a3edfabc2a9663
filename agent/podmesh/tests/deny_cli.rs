//! `podmesh deny` end to end: exit codes and journald event names, inside a throwaway netns.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_podmesh");

fn deny(args: &[&str]) -> Output {
    Command::new(BIN).arg("deny").args(args).env_remove("JOURNAL_STREAM").output().expect("run podmesh")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn install_status_remove_exit_codes_and_events() {
    let t = podmesh_tests::skip_unless_root!();
    let ns = podmesh_tests::netns::Pod::new(&t).unwrap();
    let n = ns.name();

    let o = deny(&["status", "--netns", n]);
    assert_eq!(o.status.code(), Some(3), "absent -> 3");
    assert!(String::from_utf8_lossy(&o.stdout).contains("absent"));

    let o = deny(&["install", "--netns", n]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("deny_installed"), "{}", stderr(&o));
    let o = deny(&["install", "--netns", n]);
    assert!(o.status.success(), "second install: {}", stderr(&o));

    let o = deny(&["status", "--netns", n]);
    assert_eq!(o.status.code(), Some(0), "installed -> 0");
    assert!(String::from_utf8_lossy(&o.stdout).contains("installed"));

    let o = deny(&["remove", "--netns", n]);
    assert!(o.status.success() && stderr(&o).contains("deny_removed"), "{}", stderr(&o));
    let o = deny(&["remove", "--netns", n]);
    assert!(o.status.success() && stderr(&o).contains("deny_absent"), "{}", stderr(&o));

    // PODMESH_NETNS is the unit-friendly way to pass --netns.
    let o = Command::new(BIN).args(["deny", "status"]).env("PODMESH_NETNS", n).output().unwrap();
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn missing_netns_fails_with_one_clear_line() {
    let o = deny(&["install", "--netns", "pmfw-cli-does-not-exist"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("does not exist") && err.contains("pmfw-cli-does-not-exist"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
