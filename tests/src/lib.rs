//! Shared helpers for the workspace's tests (`tests/tests/*.rs` and `agent/*/tests/*.rs`).
//!
//! # Every test that needs root, namespaces or a child process
//!
//! ```no_run
//! use podmesh_tests::netns::PodPair;
//! #[test]
//! fn egress_refuses_servers_outside_the_mesh() {
//!     let t = podmesh_tests::skip_unless_root!(); // SKIP line + return when not root
//!     let pods = PodPair::new(&t).unwrap();       // names derived from this function
//!     let server = pods.b.spawn(&["sleep", "60"]).unwrap(); // a Proc: killed on drop
//!     let work = t.tempdir().unwrap();
//!     // ...
//! }
//! ```
//!
//! - [`skip_unless_root!`]`()` / [`skip_unless_fuse!`]`()`: the one root (and `/dev/fuse`) check.
//!   Evaluates to the [`harness::Test`]; when the machine lacks what is needed it prints
//!   `SKIP <test path>: <why>` and returns from the test (CI runs as root: nothing is skipped
//!   there, and `scripts/test.sh` refuses to run as non-root). [`test_here!`]`()` gives the
//!   [`harness::Test`] without a check.
//! - [`harness::Test`]: the test's [`name`](harness::Test::name), a short
//!   [`tag`](harness::Test::tag) that namespace names are derived from (no name strings, no
//!   per-file prefixes), [`tempdir`](harness::Test::tempdir), and
//!   [`serial`](harness::Test::serial) for the few tests that must run alone.
//! - [`harness::Proc`]: the one kill-on-drop child process (SIGKILL + reap on drop, also on
//!   panic), with a log file, `terminate`, `stop`, `wait_ready`, `wait_for_log`, `wait_exit`, `signal`.
//!   [`harness::wait_for`] polls a condition; [`harness::bin`] finds a workspace binary.
//! - [`netns`]: pods as network namespaces joined by a veth pair (IPv4 + IPv6), commands and
//!   threads inside them, cleanup on drop.
//! - [`cluster`]: coordinator pod + workload pods + tsm-sim mounts + `podmesh attest` daemons
//!   (the attest_*.rs tests).
//! - [`proxy_certs`]: test certificates from the real `pki` hierarchy, written as a tls dir.
//! - [`proxy_pods`]: app server, in-process proxy and TLS clients for the proxy tests.
//!
//! # Parallel by default
//!
//! `scripts/test.sh` runs tests in parallel. A pod is its own network namespace, so namespaced
//! tests do not see each other. A test that changes shared state outside its pods (the root
//! namespace's nftables or routes, a sysctl of the host) holds `let _serial = t.serial()?;` for its
//! whole body: one such test at a time, across test processes too.
//!
//! # From the old helpers
//!
//! | before | now |
//! | --- | --- |
//! | `if skip_unless_root("name") { return; }` | `let t = podmesh_tests::skip_unless_root!();` |
//! | `if !common::fuse_available("name") { return; }` | `let t = podmesh_tests::skip_unless_fuse!();` |
//! | `Pod::new(PREFIX)`, `PodPair::new(PREFIX)` | `Pod::new(&t)`, `PodPair::new(&t)` |
//! | `mod attest_common; use attest_common::*;`, `Cluster::new()` | `use podmesh_tests::cluster::*;`, `Cluster::new(&t)` |
//! | `netns::Child`, `attest_common::Proc`, own `Child`/`ProxyProc` structs | [`harness::Proc`] |
//! | `Proc::spawn(what, cmd, log)` | `Proc::logged(what, &mut cmd, log)` |
//!
//! In `agent/*/tests` add `podmesh-tests.workspace = true` to `[dev-dependencies]`.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
pub mod cluster;
pub mod harness;
pub mod netns;
pub mod proxy_certs;
pub mod proxy_pods;
