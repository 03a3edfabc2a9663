//! TEE evidence for podmesh: the guest-side configfs-tsm client and the coordinator-side
//! parsing and verification of AMD SEV-SNP reports and Intel TDX quotes.
//!
//! `verify(&Evidence, &TrustConfig, now)` is the one entry point for verifiers; the
//! verification path is format-driven and identical for real and simulated evidence, only
//! the trust anchors in `TrustConfig` differ.

pub mod certtable;
pub mod shared_vectors;
pub mod evidence;
pub mod snp;
pub mod tdx;
pub mod tsm;

pub use evidence::{verify, Evidence, Platform, Tcb, TrustConfig, VerifiedClaims, VerifyError};
