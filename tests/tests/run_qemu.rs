//! image/run-qemu --print-only / --print-cmdline: the exact QEMU command for each TEE, without
//! the hardware (the SNP launch digest and the TDX RTMRs are computed for these arguments), and
//! the root disk's dm-verity parameters on the measured command line.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

const ROOT_HASH: &str = "5f1f2a3a0f6e0d4a7a3b6c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f7";

/// A podmesh-root.verity as image/verity/build-root.sh writes it, in a temporary directory.
fn verity_file(contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podmesh-root.verity");
    std::fs::write(&path, contents).unwrap();
    (dir, path.display().to_string())
}

fn good_verity() -> (tempfile::TempDir, String) {
    verity_file(&format!("root_hash={ROOT_HASH}\nsalt=00ff\ndata_blocks=20480\n"))
}

/// Runs run-qemu with `args` (and a built image's dm-verity parameters unless the caller names
/// them: a fresh clone has no image); (success, stdout, stderr).
fn run_qemu(args: &[&str]) -> (bool, String, String) {
    let (_dir, verity) = good_verity();
    let mut all: Vec<&str> = args.to_vec();
    if !args.iter().any(|a| *a == "--verity" || *a == "--root") {
        all.extend(["--verity", &verity]);
    }
    let out = Command::new("bash").arg(root().join("image/run-qemu")).args(&all).output().expect("run image/run-qemu");
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

#[test]
fn the_root_disk_is_verified_with_the_root_hash_on_the_measured_command_line() {
    let (ok, out, err) = run_qemu(&["--tee", "snp", "--print-only", "--root-disk", "/images/root.img"]);
    assert!(ok, "{err}");
    let w = words(&out);
    let append = &value_after(&w, "-append")[0];
    assert!(append.starts_with("rdinit=/init "), "{append}");
    for want in [
        format!("podmesh.verity_root_hash={ROOT_HASH}"),
        "podmesh.verity_salt=00ff".into(),
        "podmesh.verity_data_blocks=20480".into(),
    ] {
        assert!(append.split(' ').any(|a| a == want), "{want} not in {append}");
    }
    assert_eq!(
        value_after(&w, "-initrd"),
        [root().join("build/image/test/podmesh-verity.initrd").display().to_string()]
    );
    // Read-only, and found by its serial, before any other disk.
    assert_eq!(value_after(&w, "-drive")[0], "file=/images/root.img,format=raw,if=none,id=root,readonly=on");
    assert!(value_after(&w, "-device").contains(&"virtio-blk-pci,drive=root,serial=podmesh-root".to_owned()));
    // --print-initrd names what the measurement covers.
    let (ok, initrd, _) = run_qemu(&["--print-initrd"]);
    assert!(ok);
    assert_eq!(initrd.trim_end(), value_after(&w, "-initrd")[0]);

    // The whole OS as the initramfs: no disk, systemd straight from it.
    let (ok, out, err) = run_qemu(&["--root", "initramfs", "--print-only"]);
    assert!(ok, "{err}");
    let w = words(&out);
    assert!(value_after(&w, "-append")[0].starts_with("rdinit=/usr/lib/systemd/systemd "));
    assert!(!value_after(&w, "-append")[0].contains("podmesh.verity"));
    assert!(value_after(&w, "-drive").is_empty());
    assert_eq!(value_after(&w, "-initrd"), [root().join("build/image/test/podmesh.cpio").display().to_string()]);
}

#[test]
fn missing_or_malformed_verity_parameters_are_refused() {
    let (_dir, missing) = verity_file("");
    let missing = missing.replace("podmesh-root.verity", "absent.verity");
    for (contents, want) in [
        (None, "is missing: build the image first"),
        (Some("root_hash=abc\nsalt=00\ndata_blocks=1\n"), "need root_hash=<64 hex>"),
        (Some(&*format!("root_hash={ROOT_HASH}\nsalt=0\ndata_blocks=1\n")), "need root_hash=<64 hex>"),
        (Some(&*format!("root_hash={ROOT_HASH}\nsalt=00\ndata_blocks=0\n")), "need root_hash=<64 hex>"),
        (Some(&*format!("root_hash={ROOT_HASH}\nsalt=00\ndata_blocks=1 x\n")), "need root_hash=<64 hex>"),
    ] {
        let (_keep, path) = match contents {
            Some(c) => verity_file(c),
            None => (tempfile::tempdir().unwrap(), missing.clone()),
        };
        let (ok, out, err) = run_qemu(&["--print-only", "--verity", &path]);
        assert!(!ok, "{contents:?} accepted: {out}");
        assert!(err.contains(want), "{contents:?}: {err}");
    }
    let (ok, _, err) = run_qemu(&["--root", "initramfs", "--root-disk", "/x.img", "--print-only"]);
    assert!(!ok);
    assert!(err.contains("--root-disk/--verity need --root verity"), "{err}");
    let (ok, _, err) = run_qemu(&["--root", "disk", "--print-only"]);
    assert!(!ok);
    assert!(err.contains("--root must be verity or initramfs"), "{err}");
}
