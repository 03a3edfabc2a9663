//! TEE evidence for podmesh: the guest-side configfs-tsm client and the coordinator-side
//! parsing and verification of AMD SEV-SNP reports and Intel TDX quotes.

pub mod tsm;
pub mod certtable;
