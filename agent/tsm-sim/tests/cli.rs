//! The `tsm-sim` binary without FUSE: help, anchor export and persistence, one-shot
//! evidence, and clear one-line errors for bad flags, a bad mount point and corrupt state.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
mod common;

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(common::BIN).args(args).env("RUST_LOG", "off").output().expect("run tsm-sim")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_on_every_command() {
    for args in [&["--help"][..], &["mount", "--help"], &["anchor", "--help"], &["evidence", "--help"]] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Usage:"), "{args:?} prints usage");
    }
    let o = run(&["mount", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for flag in ["--tee", "--root", "--state", "--measurement", "--host-data", "--policy", "--tcb", "--inject"] {
        assert!(text.contains(flag), "mount --help documents {flag}");
    }
}

#[test]
fn anchor_export_is_stable_across_runs() {
    let state = common::shared_state();
    let s = state.to_str().unwrap();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for out in [&a, &b] {
        let o = run(&["anchor", "--state", s, "--out", out.path().to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for f in ["ark.pem", "ask.pem", "cert_chain.pem"] {
        let x = std::fs::read(a.path().join(f)).unwrap();
        assert_eq!(x, std::fs::read(b.path().join(f)).unwrap(), "{f} is the same after a restart");
    }
    let chain = std::fs::read_to_string(a.path().join("cert_chain.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "ASK then ARK");
    // The private keys are 0400.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(state.join("amd-genoa/ark.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
}

#[test]
fn evidence_writes_report_and_certificates() {
    let out = tempfile::tempdir().unwrap();
    let data = "5a".repeat(64);
    let o = run(&[
        "evidence",
        "--tee",
        "snp",
        "--state",
        common::shared_state().to_str().unwrap(),
        "--report-data",
        &data,
        "--privlevel",
        "1",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read(out.path().join("report.bin")).unwrap();
    assert_eq!(report.len(), 0x4A0);
    assert_eq!(hex::encode(&report[0x50..0x90]), data);
    assert_eq!(&report[0x30..0x34], &1u32.to_le_bytes());
    let vcek = std::fs::read(out.path().join("vcek.der")).unwrap();
    // chip_id in the report is the VCEK's hwID (last extension, raw 64 bytes).
    assert!(vcek.windows(64).any(|w| w == &report[0x1A0..0x1E0]), "hwID == CHIP_ID");
}

#[test]
fn bad_flags_fail_with_one_clear_line() {
    let state = common::shared_state();
    let s = state.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["evidence", "--tee", "snp", "--state", s, "--report-data", "abcd", "--out", "/tmp"], "expected 64 bytes"),
        (&["evidence", "--tee", "snp", "--state", s, "--report-data", &"zz".repeat(64), "--out", "/tmp"], "not hex"),
        (&["mount", "--tee", "snp", "--state", s, "--root", "/tmp", "--tcb", "bl=300"], "not 0..255"),
        (&["mount", "--tee", "snp", "--state", s, "--root", "/tmp", "--inject", "eperm"], "unknown injection"),
        (&["mount", "--tee", "sgx", "--state", s, "--root", "/tmp"], "invalid value"),
        (&["anchor", "--state", s, "--out", "/tmp", "--product", "rome"], "unknown AMD product"),
    ];
    for (args, want) in cases {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(stderr(&o).contains(want), "{args:?}: stderr {:?} lacks {want:?}", stderr(&o));
    }
}

#[test]
fn mount_point_problems_are_named() {
    // As non-root the root check would come first.
    podmesh_tests::skip_unless_root!();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let s = common::shared_state();
    for (root, want) in [(&missing, "does not exist"), (&file, "is not a directory")] {
        let o = run(&["mount", "--tee", "snp", "--state", s.to_str().unwrap(), "--root", root.to_str().unwrap()]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(want) && err.lines().count() == 1, "{err:?}");
    }
}

#[test]
fn corrupt_state_is_reported_not_replaced() {
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = run(&["anchor", "--state", s, "--out", out.path().to_str().unwrap(), "--product", "milan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = state.path().join("amd-milan/ask.key");
    let mut perms = std::fs::metadata(&key).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt as _;
    perms.set_mode(0o600);
    std::fs::set_permissions(&key, perms).unwrap();
    std::fs::write(&key, b"garbage").unwrap();
    let o = run(&["anchor", "--state", s, "--out", out.path().to_str().unwrap(), "--product", "milan"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("ask.key") && err.contains("not a valid PKCS#8 RSA key"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage", "the state is never silently regenerated");

    // A certificate that does not belong to its key is caught too.
    let state2 = tempfile::tempdir().unwrap();
    let s2 = state2.path().to_str().unwrap();
    assert!(run(&["anchor", "--state", s2, "--out", out.path().to_str().unwrap(), "--product", "milan"])
        .status
        .success());
    std::fs::copy(state2.path().join("amd-milan/ask.der"), state.path().join("amd-milan/ark.der")).unwrap();
    std::fs::copy(state2.path().join("amd-milan/ask.key"), &key).ok();
    let o = run(&["anchor", "--state", s, "--out", out.path().to_str().unwrap(), "--product", "milan"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ark.der"), "{}", stderr(&o));
}

#[test]
fn initdata_sets_hostdata_and_mrconfigid() {
    // sha384 of the initdata crate's CoCo example (coreutils sha384sum).
    let digest = "706adce0ad73ecf65a247395e1abbc73cb171e9bb9a564fbfbde169f198d11da3405636af1e890e5b29028e13bde0922";
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../initdata/testdata/coco-example.toml");
    let state = common::shared_state();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let data = "00".repeat(64);
    let args = ["evidence", "--state", state.to_str().unwrap(), "--report-data", &data, "--out", o, "--initdata", file];
    let r = run(&[&args[..], &["--tee", "snp"]].concat());
    assert!(r.status.success(), "{}", stderr(&r));
    let report = std::fs::read(out.path().join("report.bin")).unwrap();
    assert_eq!(hex::encode(&report[0xC0..0xE0]), digest[..64], "HOSTDATA = first 32 bytes of the digest");

    let tdx_state = tempfile::tempdir().unwrap();
    let args = [
        "evidence",
        "--state",
        tdx_state.path().to_str().unwrap(),
        "--report-data",
        &data,
        "--out",
        o,
        "--initdata",
        file,
    ];
    let r = run(&[&args[..], &["--tee", "tdx"]].concat());
    assert!(r.status.success(), "{}", stderr(&r));
    let quote = tee::tdx::TdxQuote::parse(&std::fs::read(out.path().join("quote.bin")).unwrap()).unwrap();
    assert_eq!(hex::encode(quote.td.mr_config_id), digest, "MRCONFIGID = the 48-byte digest");

    // Bad initdata and a conflicting --host-data are one-line errors.
    let bad = out.path().join("bad.toml");
    std::fs::write(&bad, "version = \"0.1.0\"\nalgorithm = \"md5\"\n[data]\n").unwrap();
    let r = run(&[
        "evidence",
        "--tee",
        "snp",
        "--state",
        state.to_str().unwrap(),
        "--report-data",
        &data,
        "--out",
        o,
        "--initdata",
        bad.to_str().unwrap(),
    ]);
    assert!(!r.status.success() && stderr(&r).contains("md5"), "{}", stderr(&r));
    let r = run(&[&args[..], &["--tee", "snp", "--host-data", &"00".repeat(32)]].concat());
    assert!(!r.status.success() && stderr(&r).contains("cannot be used with"), "{}", stderr(&r));
}
