//! Attested configuration against tsm-sim (SNP and TDX): initdata counts only when the report's
//! HOSTDATA / MRCONFIGID is its digest, and then the host's environment and env-file cannot
//! change a port or the coordinator trust. Needs root and FUSE (tsm-sim mounts).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use podmesh_tests::harness::{bin, Proc};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const INITDATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"podmesh.env\" = '''\nCONTRAST_INGRESS_PROXY_CONFIG=app#8080#false\nPODMESH_COORDINATOR=127.0.0.1:1\n'''\n\"aa.toml\" = \"ignored\"\n";

/// sha384 of the file by coreutils, not by the code under test.
fn sha384_hex(path: &Path) -> String {
    let out = Command::new("sha384sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// A work dir holding [`INITDATA`] as `initdata.toml`, and that file's sha384 (hex).
fn write_initdata() -> (tempfile::TempDir, PathBuf, String) {
    let work = tempfile::tempdir().unwrap();
    let initdata = work.path().join("initdata.toml");
    std::fs::write(&initdata, INITDATA).unwrap();
    let digest = sha384_hex(&initdata);
    (work, initdata, digest)
}

fn mount(work: &Path, name: &str, tee: &str, launch_flag: &str, value: &str) -> (Proc, PathBuf) {
    let root = work.join(format!("tsm-{name}"));
    std::fs::create_dir_all(&root).unwrap();
    let mut cmd = Command::new(bin("tsm-sim"));
    cmd.arg("mount").arg("--root").arg(&root).args(["--tee", tee, "--state"]).arg(work.join(format!("state-{tee}")));
    cmd.args([launch_flag, value]);
    let mut p = Proc::spawn(&format!("tsm-sim {name}"), &mut cmd).unwrap();
    let report = root.join("report");
    p.wait_ready("the tsm-sim mount", Duration::from_secs(30), || report.is_dir()).unwrap();
    (p, root)
}

fn unmount(mut p: Proc, root: &Path) {
    p.terminate(Duration::from_secs(3));
    let _ = Command::new("umount").arg("-l").arg(root).stderr(std::process::Stdio::null()).status();
}

/// `podmesh config check --initdata`, with the host lying in the environment and an env-file.
fn check(work: &Path, initdata: &Path, tsm: &Path) -> Output {
    let env_file = work.join("host.env");
    std::fs::write(&env_file, "EDG_INGRESS_PROXY_CONFIG=app#8080#true\nPODMESH_COORDINATOR=evil:1\n").unwrap();
    let cmdline = work.join("cmdline");
    std::fs::write(&cmdline, "quiet podmesh.admin_port=9901\n").unwrap();
    Command::new(bin("podmesh"))
        .args(["config", "check", "--initdata"])
        .arg(initdata)
        .arg("--tsm-root")
        .arg(tsm)
        .arg("--env-file")
        .arg(&env_file)
        .arg("--cmdline")
        .arg(&cmdline)
        .env("CONTRAST_INGRESS_PROXY_CONFIG", "app#8080#true")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap()
}

/// `podmesh attest --once` without D-Bus, `extra` flags, against `tsm` with `initdata`; `env` set.
fn attest_once(work: &Path, initdata: &Path, tsm: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin("podmesh"))
        .args(["attest", "--once", "--no-dbus"])
        .args(extra)
        .args(["--cmdline", "/dev/null", "--initdata"])
        .arg(initdata)
        .arg("--tsm-root")
        .arg(tsm)
        .arg("--tls-dir")
        .arg(work.join("tls"))
        .envs(env.iter().copied())
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap()
}

fn assert_attested(o: &Output, digest: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["attested"], true, "{json}");
    assert_eq!(json["initdata_digest"], digest);
    // initdata says TLS for 8080; the environment and the env-file said plaintext.
    assert_eq!(json["config"]["ingress"]["entries"][0]["mode"], "tls_only", "{json}");
    assert_eq!(json["config"]["admin_port"], 9901, "the measured kernel command line still counts");
    let ignored = json["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 2, "{json}");
    assert!(ignored[0].as_str().unwrap().starts_with("CONTRAST_INGRESS_PROXY_CONFIG from environment is ignored"));
    assert!(ignored[1].as_str().unwrap().starts_with("EDG_INGRESS_PROXY_CONFIG from env-file"));
    for needle in ["unattested_setting_ignored", "PODMESH_COORDINATOR from env-file"] {
        assert!(stderr.contains(needle), "{needle} in {stderr}");
    }
}

fn assert_refused(o: &Output, want: &[&str]) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(o.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    for w in want {
        assert!(lines[0].contains(w), "{w} in {stderr}");
    }
}

#[test]
fn snp_initdata_matches_and_mismatches() {
    let _t = podmesh_tests::skip_unless_fuse!();
    let (work, initdata, digest) = write_initdata();
    let hostdata = &digest[..64];

    let (p, root) = mount(work.path(), "match", "snp", "--host-data", hostdata);
    assert_attested(&check(work.path(), &initdata, &root), hostdata);
    // The host delivers another document (8080 in plaintext) for the same launch: refused.
    let lie = work.path().join("lie.toml");
    std::fs::write(&lie, INITDATA.replace("app#8080#false", "app#8080#true")).unwrap();
    assert_refused(
        &check(work.path(), &lie, &root),
        &["initdata_mismatch", hostdata, &sha384_hex(&lie)[..64], "HOSTDATA"],
    );

    // attest: initdata names no root CA or fingerprint; the environment's fingerprint is not
    // attested, so it must not count: exit 78 instead of trusting the first answer.
    let fingerprint = "ab".repeat(32);
    let out = attest_once(work.path(), &initdata, &root, &[], &[("PODMESH_COORDINATOR_FINGERPRINT", &fingerprint)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("PODMESH_COORDINATOR_FINGERPRINT from environment is ignored"), "{stderr}");
    assert!(stderr.contains("does not trust the first coordinator"), "{stderr}");
    // Even the insecure flag does not bring trust on first use back in attested mode.
    let out = attest_once(work.path(), &initdata, &root, &["--insecure-trust-on-first-use"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    // A mismatch stops attest with 78 and the event (the deny table is never touched).
    let out = attest_once(work.path(), &lie, &root, &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("initdata_mismatch") && stderr.contains(hostdata), "{stderr}");
    unmount(p, &root);

    // No report at all while initdata is present: refused too.
    assert_refused(&check(work.path(), &initdata, &work.path().join("no-tsm")), &["no TEE report"]);
}

#[test]
fn tdx_initdata_matches_and_mismatches() {
    let _t = podmesh_tests::skip_unless_fuse!();
    let (work, initdata, digest) = write_initdata();
    let (p, root) = mount(work.path(), "match", "tdx", "--mrconfigid", &digest);
    assert_attested(&check(work.path(), &initdata, &root), &digest);
    unmount(p, &root);
    let (p, root) = mount(work.path(), "other", "tdx", "--mrconfigid", &"00".repeat(48));
    assert_refused(
        &check(work.path(), &initdata, &root),
        &["initdata_mismatch", "MRCONFIGID", &digest, &"00".repeat(48)],
    );
    unmount(p, &root);
}
