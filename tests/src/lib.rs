//! Shared helpers for end-to-end tests.
//!
//! - [`netns`]: pods as network namespaces joined by a veth pair (IPv4 + IPv6), commands and
//!   threads inside them, cleanup on drop.
//! - [`proxy_certs`]: test certificates from the real `pki` hierarchy, written as a tls dir.
//! - [`proxy_pods`]: app server, in-process proxy and TLS clients for the proxy tests.

pub mod netns;
pub mod proxy_certs;
pub mod proxy_pods;
