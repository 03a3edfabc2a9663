//! Test harness: runs the real `tsm-sim mount` binary on a temp directory and always
//! unmounts it again (SIGTERM, then SIGKILL + lazy unmount if it does not go).

#![allow(dead_code)]

use podmesh_tests::harness::Proc;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_tsm-sim");

/// A state directory shared by all tests of this build, so the RSA-4096 chain is generated
/// once (and the persistence path is exercised on every later run).
pub fn shared_state() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tsm-sim-test-state")
}

pub struct SimMount {
    proc: Option<Proc>,
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
}

fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(want.as_str())))
        .unwrap_or(false)
}

impl SimMount {
    /// Mounts with `--tee TEE` plus `extra` flags and waits until `report/` is served.
    pub fn start(tee: &str, extra: &[&str]) -> SimMount {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("tsm");
        std::fs::create_dir(&root).expect("mkdir mount point");
        let state = shared_state();
        let mut cmd = Command::new(BIN);
        cmd.arg("mount")
            .arg("--tee")
            .arg(tee)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .args(extra)
            .env("RUST_LOG", "warn");
        let mut proc = Proc::spawn("tsm-sim mount", &mut cmd).expect("spawn tsm-sim");
        proc.wait_ready("the tsm-sim mount", Duration::from_secs(30), || {
            is_mounted(&root) && root.join("report").is_dir()
        })
        .expect("tsm-sim mounts");
        SimMount { proc: Some(proc), _dir: dir, root, state }
    }

    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }

    /// Stops the simulator with SIGTERM and returns whether it exited 0 and unmounted.
    pub fn stop(&mut self) -> bool {
        let Some(mut proc) = self.proc.take() else { return true };
        let mut clean = proc.terminate(Duration::from_secs(10)).is_some_and(|st| st.success());
        if is_mounted(&self.root) {
            clean = false;
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
        }
        clean
    }
}

impl Drop for SimMount {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Decodes the first PEM certificate in `pem`.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).expect("PEM base64")
}
