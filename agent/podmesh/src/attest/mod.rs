//! The attestation daemon's parts: key, coordinator client, checks, files, bus, loop.

pub mod backoff;
pub mod bus;
pub mod cert_info;
pub mod coordinator;
pub mod coordinator_tls;
pub mod daemon;
pub mod endpoint;
pub mod generation_watch;
pub mod issued;
pub mod workload_key;
