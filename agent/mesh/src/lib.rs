//! The mesh proxy: configuration grammar and the data plane.
//!
//! Configuration: [`config`], the Contrast-compatible grammar (`CONTRAST_*_PROXY_CONFIG`).
//!
//! Data plane (`podmesh proxy`):
//! - [`proxy`]: start (TLS, listeners, interception, readiness) and drain.
//! - [`lifecycle`]: shutdown signal, sd-notify, exit codes, opening the pod.
//! - [`tls_dir`]: the tls dir contract (location, file names, atomic writes).
//! - [`ingress`] / [`egress`]: TPROXY'd (m)TLS termination; mTLS origination from 127.x.
//! - [`tls`] + [`reload`]: validated rustls configs from the tls dir, hot reloaded.
//! - [`identity`]: who may talk to whom (ingress allow-lists, egress identity), checked in
//!   the handshake.
//! - [`rotation`]: a new mesh CA (manifest update): old and new trusted for a grace period,
//!   then connections made under the old one closed.
//! - [`accept`] + [`event_loops`]: the accept loop of every listener, run on one or more
//!   single-threaded event loops.
//! - [`copy`]: bidirectional copy with pooled buffers, half-close (only after close_notify) and idle timeout.
//! - [`ephemeral_ports`]: warns when a listener port may be taken as an ephemeral port.
//! - [`sockopt`]: transparent listeners and marked upstream sockets.
//! - [`local`]: whether an original destination is one of the pod's own addresses.
//! - [`readiness`], [`limits`], [`metrics`], [`admin`]: tokens, connection limit, handshake budget and drain,
//!   counters, the admin HTTP endpoints.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
pub mod accept;
pub mod admin;
pub mod config;
mod conn;
pub mod copy;
pub mod egress;
pub mod ephemeral_ports;
pub mod event_loops;
pub mod identity;
pub mod ingress;
pub mod lifecycle;
pub mod limits;
pub mod local;
pub mod metrics;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod rotation;
pub mod sockopt;
pub mod tls;
pub mod tls_dir;

pub use conn::Timeouts;
