//! Pods as network namespaces, for tests that need real networking (nftables, TPROXY, TLS).
//!
//! # API
//!
//! Start every namespaced test with `let t = podmesh_tests::skip_unless_root!();` (see the crate
//! docs); `t` names what the test creates.
//!
//! - [`Pod::new`]`(&t)`: one namespace with only `lo` (up). Useful to run `nft` somewhere
//!   harmless.
//! - [`PodPair::new`]`(&t)`: two namespaces `a` and `b` joined by a veth pair, `eth0` in
//!   each, with [`PodPair::V4_A`]/[`PodPair::V4_B`] (`10.99.0.1/24`, `.2`) and
//!   [`PodPair::V6_A`]/[`PodPair::V6_B`] (`fd99::1/64`, `::2`, no DAD wait). Addresses live only
//!   inside the namespaces, so parallel pairs never clash.
//! - [`Pod`] methods:
//!   - [`name`](Pod::name): the `ip netns` name (pass it to `firewall` APIs as `Some(name)`).
//!   - [`v4`](Pod::v4) / [`v6`](Pod::v6): the pod's veth addresses (loopback for a lone pod).
//!   - [`command`](Pod::command)`(program)`: a `std::process::Command` that runs inside the pod
//!     (`ip netns exec NAME program`); add args and run it as usual.
//!   - [`exec`](Pod::exec)`(&["prog", "arg"])`: run to completion, `Err` with stderr on failure.
//!   - [`spawn`](Pod::spawn)`(&[..])`: start a background process; the returned [`Proc`] kills it on drop.
//!   - [`in_netns`](Pod::in_netns)`(|| ..)`: run a closure on a thread that has entered the
//!     pod's namespace. Sockets created there stay in the pod and may be used from any thread
//!     afterwards (e.g. bind a `TcpListener` inside, accept outside; or hand it to tokio with
//!     `from_std`).
//!   - [`thread`](Pod::thread)`(f)`: like `in_netns` but detached (long-running servers).
//!   - [`wait_for_port_free`](Pod::wait_for_port_free)`(port, timeout)`: until none does (before
//!     binding a port that was just closed again: see there why).
//!   - [`wait_for_port`](Pod::wait_for_port)`(port, timeout)`: until a TCP socket listens on
//!     `port` in the pod (checked with `ss`, no connection is made).
//!   - [`tcp_connects`](Pod::tcp_connects)`(addr, timeout)`: whether a new TCP connection from
//!     inside the pod to `addr` completes (`false` on timeout or refusal).
//!
//! # Naming and cleanup
//!
//! Names are `{tag}-{pid}-{n}`: the test's [`Test::tag`] (`pm` + a hash of the test's path), the
//! process id and a per-process counter, both in base 36; at most 15 characters, like an interface
//! name. Unique per process and call, so parallel tests and test binaries never collide. Dropping
//! a [`Pod`] kills every process still inside it and deletes the namespace (its veth end goes
//! with it); this also runs while unwinding from a panicking test. Namespaces left behind by a
//! killed test run (its pid is gone) are swept on the next `Pod::new`.
//!
//! ```no_run
//! use podmesh_tests::netns::PodPair;
//! use std::{net::SocketAddr, time::Duration};
//! #[test]
//! fn b_reaches_a_over_ipv6() {
//!     let t = podmesh_tests::skip_unless_root!();
//!     let pods = PodPair::new(&t).unwrap();
//!     let listener = pods.a.in_netns(|| std::net::TcpListener::bind("[::]:8080")).unwrap().unwrap();
//!     let target = SocketAddr::new(PodPair::V6_A.into(), 8080);
//!     assert!(pods.b.tcp_connects(target, Duration::from_secs(1)).unwrap());
//!     drop(listener);
//! }
//! ```

use crate::harness::{wait_for, Proc, Test};
use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::Duration,
};

const NETNS_DIR: &str = "/run/netns";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted (with every process in it) on drop.
#[derive(Debug)]
pub struct Pod {
    name: String,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

/// Two pods joined by a veth pair.
#[derive(Debug)]
pub struct PodPair {
    pub a: Pod,
    pub b: Pod,
}

impl PodPair {
    pub const V4_A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    pub const V4_B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    pub const V6_A: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
    pub const V6_B: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2);

    /// Creates two pods for test `t`, joined by veth `eth0`, addresses configured.
    pub fn new(t: &Test) -> Result<Self> {
        let mut a = Pod::new(t)?;
        let mut b = Pod::new(t)?;
        run(Command::new("ip")
            .args(["-n", &a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name]))?;
        for (pod, v4, v6) in [(&mut a, Self::V4_A, Self::V6_A), (&mut b, Self::V4_B, Self::V6_B)] {
            pod.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            pod.exec(&["ip", "-6", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
            pod.exec(&["ip", "link", "set", "eth0", "up"])?;
            pod.v4 = v4;
            pod.v6 = v6;
        }
        Ok(Self { a, b })
    }
}

impl Pod {
    /// Creates a lone pod for test `t` with only `lo` (up).
    pub fn new(t: &Test) -> Result<Self> {
        sweep_stale();
        Self::create(unique_name(t))
    }

    fn create(name: String) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on Drop cleans up, even if configuring fails.
        let pod = Pod { name, v4: Ipv4Addr::LOCALHOST, v6: Ipv6Addr::LOCALHOST };
        pod.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(pod)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn v4(&self) -> Ipv4Addr {
        self.v4
    }

    pub fn v6(&self) -> Ipv6Addr {
        self.v6
    }

    /// A command that runs `program` inside the pod.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `argv` inside the pod to completion; `Err` (with its stderr) unless it succeeds.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("exec: empty argv")?;
        run(self.command(program).args(args))
    }

    /// Starts `argv` inside the pod in the background; killed when the [`Proc`] drops.
    pub fn spawn(&self, argv: &[&str]) -> Result<Proc> {
        let (program, args) = argv.split_first().context("spawn: empty argv")?;
        Proc::spawn(&format!("{argv:?} in netns {}", self.name), self.command(program).args(args))
    }

    /// Runs `f` on a thread inside the pod's namespace and returns its result.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let ns = self.ns_file()?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into the pod")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread inside netns panicked"))?
        })
    }

    /// Runs `f` on a detached thread inside the pod's namespace.
    pub fn thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<JoinHandle<Result<T>>> {
        let ns = self.ns_file()?;
        Ok(std::thread::spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into the pod")?;
            Ok(f())
        }))
    }

    /// Waits until something listens on TCP `port` in the pod (no connection is made).
    pub fn wait_for_port(&self, port: u16, timeout: Duration) -> Result<()> {
        self.wait_for_listening(port, true, timeout)
    }

    /// Waits until nothing listens on TCP `port` in the pod any more. After closing a listener,
    /// before binding its port again: a process another test thread forks at the wrong moment
    /// holds a copy of the socket until it execs (so the port stays busy a little longer).
    pub fn wait_for_port_free(&self, port: u16, timeout: Duration) -> Result<()> {
        self.wait_for_listening(port, false, timeout)
    }

    fn wait_for_listening(&self, port: u16, listening: bool, timeout: Duration) -> Result<()> {
        let filter = format!("sport = :{port}");
        let what =
            format!("TCP port {port} in netns {} to be {}", self.name, if listening { "listening" } else { "free" });
        wait_for(&what, timeout, || match self.exec(&["ss", "-Hltn", &filter]) {
            Ok(out) => (out.stdout.trim_ascii().is_empty() != listening).then_some(Ok(())),
            Err(e) => Some(Err(e)),
        })?
    }

    /// Whether a new TCP connection from inside the pod to `addr` completes within `timeout`.
    pub fn tcp_connects(&self, addr: SocketAddr, timeout: Duration) -> Result<bool> {
        self.in_netns(|| TcpStream::connect_timeout(&addr, timeout).is_ok())
    }

    /// Opens a TCP connection from inside the pod (for tests that keep it open).
    pub fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.in_netns(|| TcpStream::connect_timeout(&addr, timeout))?
            .with_context(|| format!("connecting to {addr} from netns {}", self.name))
    }

    fn ns_file(&self) -> Result<File> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        File::open(&path).with_context(|| format!("opening {}", path.display()))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Shorthand for a socket address on the pod's IPv4 or IPv6 address.
pub fn addr(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// `{tag}-{pid}-{n}`, pid and n in base 36: 6 + 1 + 5 (pid_max is 2^22) + 1 + 2 = 15 characters
/// for the first 1296 pods of a process.
fn unique_name(t: &Test) -> String {
    format!("{}-{}-{}", t.tag(), base36(std::process::id()), base36(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

fn base36(mut n: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(n % 36, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            return digits.iter().rev().collect();
        }
    }
}

/// Kills what runs in `name`, then deletes it. Best effort: used from Drop.
fn destroy(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
}

/// Deletes `pmXXXX-{pid}-{n}` namespaces whose creating process no longer exists.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('-').collect();
        let [tag, pid, n] = parts[..] else { continue };
        let ours = tag.len() == 6 && tag.starts_with("pm") && tag[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !ours || u32::from_str_radix(n, 36).is_err() {
            continue;
        }
        let Ok(pid) = u32::from_str_radix(pid, 36) else { continue };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            destroy(&name);
        }
    }
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}
