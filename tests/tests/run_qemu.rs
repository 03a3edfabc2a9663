//! image/run-qemu --print-only / --print-cmdline: the exact QEMU command for each TEE, without
//! the hardware (the SNP launch digest and the TDX RTMRs are computed for these arguments).

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// Runs run-qemu with `args`; (success, stdout, stderr).
fn run_qemu(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("bash").arg(root().join("image/run-qemu")).args(args).output().expect("run image/run-qemu");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The printed command as words (it is `printf %q`-quoted: bash parses it back).
fn words(cmd: &str) -> Vec<String> {
    let out = Command::new("bash")
        .args(["-c", "eval \"set -- $1\"; printf '%s\\0' \"$@\"", "_", cmd.trim()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split('\0').filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

fn value_after(w: &[String], flag: &str) -> Vec<String> {
    w.windows(2).filter(|p| p[0] == flag).map(|p| p[1].clone()).collect()
}

#[test]
fn snp_uses_the_amdsev_firmware_with_kernel_hashes() {
    let (ok, out, err) = run_qemu(&["--tee", "snp", "--smp", "2", "--print-only"]);
    assert!(ok, "{err}");
    let w = words(&out);
    assert_eq!(w[0], "qemu-system-x86_64");
    let fw = root().join("build/firmware/snp.fd");
    assert_eq!(value_after(&w, "-bios"), [fw.display().to_string()]);
    let objects = value_after(&w, "-object");
    let snp = objects.iter().find(|o| o.starts_with("sev-snp-guest,")).expect("sev-snp-guest object");
    assert!(snp.split(',').any(|kv| kv == "kernel-hashes=on"), "{snp}");
    assert!(snp.split(',').any(|kv| kv == "policy=0x30000"), "{snp}");
    assert_eq!(value_after(&w, "-smp"), ["2"]);
    assert_eq!(value_after(&w, "-cpu"), ["EPYC-v4"]);
    assert!(value_after(&w, "-machine")[0].contains("confidential-guest-support=cgs0"));
    // The measured command line is the one --print-cmdline reports.
    let (ok, cmdline, _) = run_qemu(&["--tee", "snp", "--smp", "2", "--print-cmdline"]);
    assert!(ok);
    assert_eq!(value_after(&w, "-append"), [cmdline.trim_end_matches('\n').to_owned()]);
}

#[test]
fn tdx_uses_tdvf() {
    let (ok, out, err) = run_qemu(&["--tee", "tdx", "--print-only", "--append", "x=1", "--netns", "pmvm-x"]);
    assert!(ok, "{err}");
    let w = words(&out);
    let fw = root().join("build/firmware/tdx.fd");
    assert_eq!(value_after(&w, "-bios"), [fw.display().to_string()]);
    assert!(value_after(&w, "-object").iter().any(|o| o.contains("\"qom-type\":\"tdx-guest\"")));
    assert!(value_after(&w, "-append")[0].ends_with(" x=1"));
    // No host option ROM runs in (and is measured by) the confidential firmware.
    assert!(value_after(&w, "-device").contains(&"virtio-net-pci,netdev=net0,romfile=".to_owned()));
    // An explicit --firmware wins.
    let (ok, out, _) = run_qemu(&["--tee", "tdx", "--print-only", "--firmware", "/x/tdvf.fd"]);
    assert!(ok);
    assert_eq!(value_after(&words(&out), "-bios"), ["/x/tdvf.fd"]);
}

#[test]
fn no_tee_boots_without_confidential_firmware() {
    let (ok, out, err) = run_qemu(&["--print-only", "--netns", "pmvm-x"]);
    assert!(ok, "{err}");
    let w = words(&out);
    assert!(value_after(&w, "-bios").is_empty());
    assert_eq!(value_after(&w, "-accel"), ["tcg"]);
    // --print-only touches no namespace: the tap device is only named.
    assert!(value_after(&w, "-append")[0].contains("ip=10.77.0.2::10.77.0.1"));
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    for (args, want) in [
        (&["--tee", "snp", "--smp", "3", "--print-only"][..], "--smp must be one of 1 2 4 8"),
        (&["--tee", "sgx", "--print-only"][..], "--tee must be none, snp or tdx"),
        (&["--tee", "snp", "--accel", "tcg", "--print-only"][..], "needs --accel kvm"),
        (&["--smp", "two", "--print-only"][..], "--smp must be a number"),
        (&["--tee", "snp", "--host-data", "AAAA", "--print-only"][..], "--host-data must be 32 bytes"),
        (&["--print-only", "--bogus", "1"][..], "unknown option '--bogus'"),
    ] {
        let (ok, out, err) = run_qemu(args);
        assert!(!ok, "{args:?} accepted: {out}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed a command: {out}");
    }
}
