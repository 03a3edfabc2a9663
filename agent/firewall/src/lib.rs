//! nftables rulesets as data, applied atomically through the real `nft`, optionally
//! inside a named network namespace.
//!
//! - [`nft`]: run a JSON batch through `nft -j -f -` (one transaction), list and inspect tables.
//! - [`deny`]: the default-deny ingress table `inet podmesh_deny` that guards a pod from boot
//!   until the mesh proxy is ready.
//! - [`tproxy`]: the interception table `inet podmesh_tproxy` of the mesh proxy.
//! - [`routes`]: the fwmark policy routes that deliver TPROXY'd packets locally.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
pub mod deny;
pub mod nft;
pub mod routes;
pub mod tproxy;
