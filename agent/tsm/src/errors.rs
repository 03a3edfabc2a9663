//! One error per documented configfs-tsm errno, plus the client's own failures.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TsmError {
    #[error("configfs-tsm: {path} does not exist: configfs is not mounted or the kernel lacks CONFIG_TSM_REPORTS")]
    NoTsmReport { path: PathBuf },
    #[error("configfs-tsm: reading {attr} failed with ENXIO: not a confidential VM or the sev-guest/tdx-guest module is not loaded")]
    NotConfidential { attr: &'static str },
    #[error("configfs-tsm: {attr} rejected with EINVAL: invalid value for this provider (privlevel below privlevel_floor or unsupported option)")]
    InvalidArgument { attr: &'static str },
    #[error("configfs-tsm: the TEE stayed busy (EBUSY) after {attempts} attempts with backoff")]
    Busy { attempts: u32 },
    #[error("configfs-tsm: reading {attr} failed with ENOTTY: the SEV guest VMPCK is disabled (sev-guest turns it off after a message sequence error); reboot the VM")]
    VmpckDisabled { attr: &'static str },
    #[error("configfs-tsm: reading {attr} failed with EFBIG: the report exceeds the kernel's blob size limit")]
    TooBig { attr: &'static str },
    #[error("configfs-tsm: reading {attr} failed with ETIMEDOUT: TDX GetQuote timed out (is the host's quote generation service running?)")]
    QuoteTimeout { attr: &'static str },
    #[error("configfs-tsm: reading {attr} failed with EIO: TDX GetQuote failed in the host/VMM")]
    QuoteFailed { attr: &'static str },
    #[error("configfs-tsm: provider {found:?} is neither sev_guest nor tdx_guest")]
    UnknownProvider { found: String },
    #[error("configfs-tsm: privlevel {level} is above the maximum 3")]
    PrivlevelOutOfRange { level: u8 },
    #[error("configfs-tsm: generation went from the expected {expected} to {found}: another process wrote to our report entry (still after {attempts} attempt(s))")]
    ConcurrentWriter { expected: u64, found: u64, attempts: u32 },
    #[error("configfs-tsm: {attr} is not a number: {content:?}")]
    BadNumber { attr: &'static str, content: String },
    #[error("configfs-tsm: privlevel {level} is below the provider's privlevel_floor {floor}")]
    PrivlevelBelowFloor { level: u8, floor: u8 },
    #[error("configfs-tsm: {attr} is not UTF-8 text")]
    NotText { attr: &'static str },
    #[error("configfs-tsm: {provider} returned an empty outblob")]
    EmptyOutblob { provider: super::Provider },
    #[error("configfs-tsm: could not find an unused report entry name in {dir}")]
    NoUniqueEntry { dir: PathBuf },
    #[error("configfs-tsm: {attr} at {path}: {source}")]
    Io { attr: &'static str, path: PathBuf, source: std::io::Error },
}

impl TsmError {
    /// Maps an I/O error on `attr` to the errno the kernel documents for it.
    pub(crate) fn from_io(attr: &'static str, path: &Path, source: std::io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENXIO) => TsmError::NotConfidential { attr },
            Some(libc::EINVAL) => TsmError::InvalidArgument { attr },
            Some(libc::EBUSY) => TsmError::Busy { attempts: 1 },
            Some(libc::ENOTTY) => TsmError::VmpckDisabled { attr },
            Some(libc::EFBIG) => TsmError::TooBig { attr },
            Some(libc::ETIMEDOUT) => TsmError::QuoteTimeout { attr },
            Some(libc::EIO) => TsmError::QuoteFailed { attr },
            _ => TsmError::Io { attr, path: path.to_path_buf(), source },
        }
    }
}
