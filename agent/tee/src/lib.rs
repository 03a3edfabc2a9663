//! TEE evidence verification for the coordinator: parsing and verification of AMD SEV-SNP
//! reports (with the GHCB certificate table) and Intel TDX quotes. The guest-side
//! configfs-tsm client is the `tsm` crate; the guest never links this one.
//!
//! `verify(&Evidence, &TrustConfig, now)` is the one entry point for verifiers; the
//! verification path is format-driven and identical for real and simulated evidence, only
//! the trust anchors in `TrustConfig` differ.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
pub mod certtable;
pub mod evidence;
pub mod snp;
pub mod tdx;

pub use evidence::{verify, Evidence, Platform, Tcb, TrustConfig, VerifiedClaims, VerifyError};
