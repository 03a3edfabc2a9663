//! Test harness: runs the real `tsm-sim mount` binary on a temp directory and always
//! unmounts it again (SIGTERM, then SIGKILL + lazy unmount if it does not go).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tsm-sim");

/// A state directory shared by all tests of this build, so the RSA-4096 chain is generated
/// once (and the persistence path is exercised on every later run).
pub fn shared_state() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tsm-sim-test-state")
}

/// `None` (and a visible SKIP line) when FUSE cannot be mounted here.
pub fn fuse_available(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP {test}: needs root to mount FUSE");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP {test}: /dev/fuse is missing");
        return false;
    }
    true
}

pub struct SimMount {
    child: Option<Child>,
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
        let child = Command::new(BIN)
            .arg("mount")
            .arg("--tee")
            .arg(tee)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn tsm-sim");
        let mut m = SimMount { child: Some(child), _dir: dir, root, state };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(is_mounted(&m.root) && m.root.join("report").is_dir()) {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("tsm-sim mount exited early with {status}");
                }
            }
            assert!(Instant::now() < deadline, "tsm-sim did not mount within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }

    /// Stops the simulator with SIGTERM and returns whether it exited 0 and unmounted.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut clean = false;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    clean = status.success();
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
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
