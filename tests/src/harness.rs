//! The start of every test that needs more than plain Rust: its name, the root / FUSE check,
//! the one kill-on-drop child process wrapper, and the lock for tests that must run alone.
//! The overview and examples are at the top of the crate (`tests/src/lib.rs`).

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// The running test, named after the function that invoked [`crate::test_here!`] (or one of the
/// `skip_unless_*!` macros). Pass it to [`crate::netns::Pod::new`], [`crate::netns::PodPair::new`],
/// [`crate::cluster::Cluster::new`]: the names they create are derived from it.
#[derive(Debug, Clone, Copy)]
pub struct Test {
    /// `binary::module::function` (closures of async tests stripped).
    path: &'static str,
}

/// What a test needs from the machine; without it, the test prints a visible `SKIP` line and
/// returns (CI runs as root with /dev/fuse, and `scripts/test.sh` refuses to run otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root: network namespaces, nftables, mounts.
    Root,
    /// Root and `/dev/fuse`: the tsm-sim mount.
    Fuse,
}

impl Test {
    /// From `type_name_of_val` of a fn item declared inside the test: `crate::test::here`.
    #[doc(hidden)]
    pub fn from_type_name(type_name: &'static str) -> Self {
        let mut path = type_name.strip_suffix("::here").unwrap_or(type_name);
        // `#[tokio::test] async fn t()` puts the body in an async block: `t::{{closure}}`.
        while let Some(p) = path.strip_suffix("::{{closure}}") {
            path = p;
        }
        Self { path }
    }

    /// `Some(self)` when the machine has what `need` says; else `None` after a `SKIP` line.
    #[doc(hidden)]
    pub fn unless_missing(self, need: Need) -> Option<Self> {
        let missing = if !nix::unistd::geteuid().is_root() {
            Some("needs root (network namespaces, nftables, mounts)")
        } else if need == Need::Fuse && !Path::new("/dev/fuse").exists() {
            Some("needs /dev/fuse")
        } else {
            None
        };
        match missing {
            Some(why) => {
                eprintln!("SKIP {}: {why}", self.path);
                None
            }
            None => Some(self),
        }
    }

    /// The test function's name, e.g. `one_gib_crosses_byte_exact`.
    pub fn name(&self) -> &'static str {
        self.path.rsplit("::").next().unwrap_or(self.path)
    }

    /// The full path, e.g. `proxy_mesh::one_gib_crosses_byte_exact`.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// `pm` and four hex digits of a hash of [`Test::path`]: the first part of every network
    /// namespace name this test creates (`pm3fa9-<pid>-<n>`, at most 15 characters, like an
    /// interface name). It tells which test left a namespace behind (`Test::tag` in a debugger, or
    /// compare with the `SKIP`/panic output); uniqueness comes from the pid and counter after it.
    pub fn tag(&self) -> String {
        format!("pm{:04x}", fnv1a(self.path) & 0xffff)
    }

    /// A temporary directory named after the test (removed on drop).
    pub fn tempdir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new().prefix(&format!("{}-", self.name())).tempdir().context("creating a temp dir")
    }

    /// Runs the rest of the test alone: holds an exclusive lock (on [`SERIAL_LOCK`], so it also
    /// excludes other test processes) until the guard drops. Only for tests that change state
    /// outside their own namespaces, e.g. the root namespace's nftables or routes; everything in a
    /// pod runs in parallel.
    pub fn serial(&self) -> Result<Flock<std::fs::File>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SERIAL_LOCK)
            .with_context(|| format!("opening {SERIAL_LOCK}"))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("locking {SERIAL_LOCK}: {e}"))
    }
}

/// The lock file behind [`Test::serial`].
pub const SERIAL_LOCK: &str = "/tmp/podmesh-tests-serial.lock";

/// 32-bit FNV-1a: stable across Rust versions (unlike `DefaultHasher`), so tags stay the same.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The [`Test`] for the enclosing function: `let t = podmesh_tests::test_here!();`.
#[macro_export]
macro_rules! test_here {
    () => {{
        fn here() {}
        $crate::harness::Test::from_type_name(::std::any::type_name_of_val(&here))
    }};
}

/// `let t = podmesh_tests::skip_unless_root!();` — the [`Test`], or a visible `SKIP` line and
/// `return` from the test when not root.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        match $crate::test_here!().unless_missing($crate::harness::Need::Root) {
            Some(t) => t,
            None => return,
        }
    };
}

/// Like [`skip_unless_root!`], and also skips when `/dev/fuse` is missing (tsm-sim mounts).
#[macro_export]
macro_rules! skip_unless_fuse {
    () => {
        match $crate::test_here!().unless_missing($crate::harness::Need::Fuse) {
            Some(t) => t,
            None => return,
        }
    };
}

/// A child process that is killed (SIGKILL) and reaped when dropped, also while a failing test
/// unwinds, together with the processes it started (strace's tracee, which outlives its tracer;
/// `ip netns exec`'s command). The only such wrapper: use it for every background process a
/// test starts.
#[derive(Debug)]
pub struct Proc {
    pub child: std::process::Child,
    /// What it is, for messages (`podmesh attest a`).
    pub what: String,
    /// Where its stdout and stderr go, when started with [`Proc::logged`].
    pub log: Option<PathBuf>,
}

impl Proc {
    /// Starts `cmd` with stdin from /dev/null; stdout and stderr as `cmd` says.
    pub fn spawn(what: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd.stdin(Stdio::null()).spawn().with_context(|| format!("spawning {what}"))?;
        Ok(Self { child, what: what.to_owned(), log: None })
    }

    /// Starts `cmd` with stdout and stderr both written to the file `log`.
    pub fn logged(what: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(out.try_clone()?).stderr(out);
        let mut p = Self::spawn(what, cmd)?;
        p.log = Some(log.to_owned());
        Ok(p)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The processes our child started and that still run (strace's tracee).
    pub fn grandchildren(&self) -> Vec<i32> {
        let pid = self.child.id();
        let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        list.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// Everything it logged so far (empty without a log file).
    pub fn log_text(&self) -> String {
        self.log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).context("pid")?);
        nix::sys::signal::kill(pid, sig).with_context(|| format!("sending {sig} to {}", self.what))
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then the exit status; `None` (and SIGKILL) when it is still running after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exited() {
            return Some(st);
        }
        let _ = self.signal(nix::sys::signal::Signal::SIGTERM);
        let st = wait_for(&self.what.clone(), grace, || self.exited()).ok();
        if st.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        st
    }

    /// SIGTERM, then `Ok` only when it exits 0 within `grace` (`Err` with the status and log).
    pub fn stop(&mut self, grace: Duration) -> Result<()> {
        match self.terminate(grace) {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("{} exited with {st} on SIGTERM: {}", self.what, self.log_text()),
            None => bail!("{} still running {grace:?} after SIGTERM: {}", self.what, self.log_text()),
        }
    }

    /// Waits until it exits by itself; `Err` (with its log) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let what = format!("{} to exit", self.what);
        wait_for(&what, timeout, || self.exited()).with_context(|| self.log_text())
    }

    /// Polls `ready` until it holds (waiting for `what`); fails at once, with the log, when the
    /// process exits first.
    pub fn wait_ready(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        wait_for(what, timeout, || {
            if let Some(st) = self.exited() {
                return Some(Err(anyhow::anyhow!("{} exited ({st}): {}", self.what, self.log_text())));
            }
            ready().then_some(Ok(()))
        })?
    }

    /// [`Proc::wait_ready`] for a line containing `needle` in its log.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let log = self.log.clone().context("wait_for_log: started without a log file")?;
        self.wait_ready(&format!("{needle:?} in {}", log.display()), timeout, || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains(needle))
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            for pid in self.grandchildren() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Some`; fails after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes from `cmd` every variable of the test runner's environment that would configure a
/// podmesh under test (mesh entries, coordinator and trust, netns, env-file, systemd sockets):
/// only what the test sets afterwards counts.
pub fn clean_podmesh_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "CONTRAST_INGRESS_PROXY_CONFIG",
        "CONTRAST_EGRESS_PROXY_CONFIG",
        "CONTRAST_ADMIN_PORT",
        "EDG_INGRESS_PROXY_CONFIG",
        "EDG_EGRESS_PROXY_CONFIG",
        "EDG_ADMIN_PORT",
        "PODMESH_INGRESS_UDP",
        "PODMESH_NETNS",
        "PODMESH_ENV_FILE",
        "PODMESH_COORDINATOR",
        "PODMESH_COORDINATOR_FINGERPRINT",
        "PODMESH_OPEN_WITHOUT_COORDINATOR",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A workspace binary (`podmesh`, `podmesh-coordinator`, `tsm-sim`) from the target dir of the
/// running test (`cargo test --workspace` builds them; `CARGO_BIN_EXE_*` only works inside the
/// binary's own crate).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_function_and_tags_fit_an_interface_name() {
        let t = crate::test_here!();
        assert_eq!(t.name(), "names_come_from_the_function_and_tags_fit_an_interface_name");
        assert_eq!(
            t.path(),
            "podmesh_tests::harness::tests::names_come_from_the_function_and_tags_fit_an_interface_name"
        );
        assert_eq!(t.tag().len(), 6);
        let async_body = Test::from_type_name("lifecycle::binary_serves::{{closure}}::{{closure}}::here");
        assert_eq!(async_body.path(), "lifecycle::binary_serves");
        assert_ne!(t.tag(), async_body.tag());
    }

    #[test]
    fn serial_guards_exclude_each_other_across_open_files() {
        let t = crate::test_here!();
        let held = t.serial().unwrap();
        // A second open file description, as another test (thread or process) would have.
        let other = std::fs::OpenOptions::new().write(true).open(SERIAL_LOCK).unwrap();
        let Err((_, busy)) = Flock::lock(other, FlockArg::LockExclusiveNonblock) else { panic!("taken twice") };
        assert_eq!(busy, nix::errno::Errno::EWOULDBLOCK);
        drop(held);
        // Released on drop (else this blocks).
        drop(t.serial().unwrap());
    }

    #[test]
    fn dropping_a_proc_kills_it() {
        let mut p = Proc::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        let pid = nix::unistd::Pid::from_raw(p.id() as i32);
        assert!(p.exited().is_none());
        drop(p);
        // Reaped: the pid no longer names our child.
        assert!(nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)).is_err());
    }
}
