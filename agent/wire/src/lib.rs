//! What crosses the wire between a podmesh guest and the coordinator, shared by both sides:
//!
//! - [`api`]: the HTTP API (paths, JSON bodies, rejection reasons) — the contract between
//!   `podmesh attest` and `podmesh-coordinator`.
//! - [`client`]: an HTTPS client for that API (root CA or fingerprint pinning).
//! - [`pem`]: PEM certificate chains in and out (the certificates the API carries, the tls dir).
//!
//! Nothing here verifies evidence or serves HTTP: the guest links this crate, not the coordinator.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
pub mod api;
pub mod client;
pub mod pem;
