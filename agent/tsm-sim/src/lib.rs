//! tsm-sim: a configfs-tsm emulator (FUSE) with a simulated SEV-SNP / TDX signer, so
//! podmesh's attestation path runs unchanged on machines without a TEE. Evidence has the
//! real binary layout; only the trust anchor differs, and verifiers must opt in to it.

pub mod snp_chain;
pub mod snp_report;
pub mod state_dir;
pub mod x509_build;
pub mod inject;
pub mod signer;
pub mod tsm_state;
pub mod fs;
pub mod tdx_quote;
