//! tsm-sim: a configfs-tsm emulator (FUSE) with a simulated SEV-SNP / TDX signer, so
//! podmesh's attestation path runs unchanged on machines without a TEE. Evidence has the
//! real binary layout; only the trust anchor differs, and verifiers must opt in to it.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too

// Only the binary (src/main.rs) uses these; cargo has no per-target dependencies.
use {anyhow as _, clap as _, initdata as _, tracing_subscriber as _};

pub mod fs;
pub mod inject;
pub mod signer;
pub mod snp_chain;
pub mod snp_report;
pub mod state_dir;
pub mod tdx_quote;
pub mod tsm_state;
pub mod x509_build;
