//! Shared helpers for end-to-end tests.
//!
//! - [`netns`]: pods as network namespaces joined by a veth pair (IPv4 + IPv6), commands and
//!   threads inside them, cleanup on drop.

pub mod netns;
