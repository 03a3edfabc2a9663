//! configfs-tsm client for the guest (kernel ABI: Documentation/ABI/testing/configfs-tsm-report).
//!
//! One report = one freshly created entry under `<root>/report/`, removed again when the
//! request ends (also on error). `generation` is read before the first write and re-checked
//! before and after every read: the kernel bumps it on each write to `inblob`/`privlevel`,
//! so any other value means another writer touched our entry and the blobs cannot be trusted.
//!
//! Blocking `std::fs` on purpose: configfs reads can block for seconds (TDX GetQuote), callers
//! run this in `spawn_blocking`.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
mod errors;
mod fs;
mod launch;

pub use errors::TsmError;
pub use launch::{launch_fields, LaunchError, LaunchFields};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fs::{ConfigFs, RealFs};

/// Default configfs mount point of the TSM subsystem.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm";
/// The kernel accepts at most (and we always write exactly) 64 bytes of report data.
pub const INBLOB_LEN: usize = 64;
/// TSM_PRIVLEVEL_MAX in include/linux/tsm.h.
pub const PRIVLEVEL_MAX: u8 = 3;

/// Which TEE produced the blobs (`provider` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// AMD SEV-SNP (`sev_guest`): outblob = attestation report, auxblob = GHCB cert table.
    SevGuest,
    /// Intel TDX (`tdx_guest`): outblob = quote.
    TdxGuest,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::SevGuest => "sev_guest",
            Provider::TdxGuest => "tdx_guest",
        }
    }

    fn parse(raw: &str) -> Result<Self, TsmError> {
        match raw.trim() {
            "sev_guest" => Ok(Provider::SevGuest),
            "tdx_guest" => Ok(Provider::TdxGuest),
            other => Err(TsmError::UnknownProvider { found: other.to_string() }),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one configfs-tsm request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    pub provider: Provider,
    /// SNP attestation report or TDX quote.
    pub outblob: Vec<u8>,
    /// SNP only: the GHCB certificate table (the verifier parses it: `tee::certtable`), `None`
    /// when the kernel has no `auxblob` attribute or the host supplied no certificates.
    pub auxblob: Option<Vec<u8>>,
    /// The entry's generation the blobs belong to.
    pub generation: u64,
}

/// configfs-tsm client. Cheap to construct; holds no open files.
pub struct TsmClient {
    root: PathBuf,
    attempts: u32,
    busy_backoff: Duration,
    fs: Box<dyn ConfigFs>,
}

impl std::fmt::Debug for TsmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsmClient")
            .field("root", &self.root)
            .field("attempts", &self.attempts)
            .field("busy_backoff", &self.busy_backoff)
            .finish()
    }
}

impl Default for TsmClient {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

/// Entry names must be unique per requesting context (kernel docs): pid + counter + time.
static ENTRY_SEQ: AtomicU64 = AtomicU64::new(0);

impl TsmClient {
    /// Client for the TSM configfs tree at `root` (normally [`DEFAULT_ROOT`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_fs(root, Box::new(RealFs))
    }

    fn with_fs(root: impl Into<PathBuf>, fs: Box<dyn ConfigFs>) -> Self {
        TsmClient { root: root.into(), attempts: 5, busy_backoff: Duration::from_millis(100), fs }
    }

    /// How often EBUSY or a concurrent writer is retried (at least 1 attempt), and the first
    /// EBUSY backoff (doubled per retry).
    pub fn with_retries(mut self, attempts: u32, busy_backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.busy_backoff = busy_backoff;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Requests a report binding exactly `report_data`. `privlevel` (SNP VMPL, 0..=3) is
    /// written only when given.
    pub fn report(&self, report_data: &[u8; INBLOB_LEN], privlevel: Option<u8>) -> Result<TsmReport, TsmError> {
        if let Some(level) = privlevel {
            if level > PRIVLEVEL_MAX {
                return Err(TsmError::PrivlevelOutOfRange { level });
            }
        }
        let report_dir = self.root.join("report");
        if !self.fs.is_dir(&report_dir) {
            return Err(TsmError::NoTsmReport { path: report_dir });
        }
        let mut backoff = self.busy_backoff;
        let mut last = None;
        for attempt in 1..=self.attempts {
            match self.attempt(&report_dir, report_data, privlevel) {
                Ok(report) => return Ok(report),
                Err(err @ (TsmError::Busy { .. } | TsmError::ConcurrentWriter { .. })) => {
                    tracing::warn!(attempt, max = self.attempts, error = %err, "configfs-tsm request retried");
                    if matches!(err, TsmError::Busy { .. }) {
                        std::thread::sleep(backoff);
                        backoff = backoff.saturating_mul(2);
                    }
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(match last {
            Some(TsmError::ConcurrentWriter { expected, found, .. }) => {
                TsmError::ConcurrentWriter { expected, found, attempts: self.attempts }
            }
            _ => TsmError::Busy { attempts: self.attempts },
        })
    }

    fn attempt(
        &self,
        report_dir: &Path,
        report_data: &[u8; INBLOB_LEN],
        privlevel: Option<u8>,
    ) -> Result<TsmReport, TsmError> {
        let entry = Entry::create(self.fs.as_ref(), report_dir)?;
        let dir = entry.path.clone();
        let provider_raw = self.read_string(&dir, "provider")?;
        let provider = Provider::parse(&provider_raw)?;

        if let Some(level) = privlevel {
            // Older kernels lack privlevel_floor; the kernel still enforces it (EINVAL).
            if self.fs.exists(&dir.join("privlevel_floor")) {
                let raw = self.read_string(&dir, "privlevel_floor")?;
                let floor: u8 = raw.trim().parse().map_err(|_| TsmError::BadNumber {
                    attr: "privlevel_floor",
                    content: raw.trim().chars().take(32).collect(),
                })?;
                if level < floor {
                    return Err(TsmError::PrivlevelBelowFloor { level, floor });
                }
            }
        }
        let start = self.read_generation(&dir)?;
        let mut writes = 0u64;
        if let Some(level) = privlevel {
            self.write(&dir, "privlevel", level.to_string().as_bytes())?;
            writes += 1;
        }
        self.write(&dir, "inblob", report_data)?;
        writes += 1;
        let expected = start.wrapping_add(writes);

        let outblob = self.checked_read(&dir, "outblob", expected)?;
        if outblob.is_empty() {
            return Err(TsmError::EmptyOutblob { provider });
        }
        let auxblob = match provider {
            Provider::SevGuest if self.fs.exists(&dir.join("auxblob")) => {
                Some(self.checked_read(&dir, "auxblob", expected)?).filter(|b| !b.is_empty())
            }
            _ => None,
        };
        drop(entry);
        Ok(TsmReport { provider, outblob, auxblob, generation: expected })
    }

    /// Reads `attr` with the generation checked right before and right after.
    fn checked_read(&self, dir: &Path, attr: &'static str, expected: u64) -> Result<Vec<u8>, TsmError> {
        self.expect_generation(dir, expected)?;
        let data = self.fs.read(&dir.join(attr)).map_err(|e| TsmError::from_io(attr, &dir.join(attr), e))?;
        self.expect_generation(dir, expected)?;
        Ok(data)
    }

    fn expect_generation(&self, dir: &Path, expected: u64) -> Result<(), TsmError> {
        let found = self.read_generation(dir)?;
        if found != expected {
            return Err(TsmError::ConcurrentWriter { expected, found, attempts: 1 });
        }
        Ok(())
    }

    fn read_generation(&self, dir: &Path) -> Result<u64, TsmError> {
        let raw = self.read_string(dir, "generation")?;
        raw.trim()
            .parse()
            .map_err(|_| TsmError::BadNumber { attr: "generation", content: raw.trim().chars().take(32).collect() })
    }

    fn read_string(&self, dir: &Path, attr: &'static str) -> Result<String, TsmError> {
        let path = dir.join(attr);
        let raw = self.fs.read(&path).map_err(|e| TsmError::from_io(attr, &path, e))?;
        String::from_utf8(raw).map_err(|_| TsmError::NotText { attr })
    }

    fn write(&self, dir: &Path, attr: &'static str, data: &[u8]) -> Result<(), TsmError> {
        let path = dir.join(attr);
        self.fs.write(&path, data).map_err(|e| TsmError::from_io(attr, &path, e))
    }
}

/// A report entry we created; removed on drop (rmdir is how configfs deletes an item).
struct Entry<'a> {
    fs: &'a dyn ConfigFs,
    path: PathBuf,
}

impl<'a> Entry<'a> {
    fn create(fs: &'a dyn ConfigFs, report_dir: &Path) -> Result<Self, TsmError> {
        for _ in 0..16 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name =
                format!("podmesh-{}-{}-{:08x}", std::process::id(), ENTRY_SEQ.fetch_add(1, Ordering::Relaxed), nanos);
            let path = report_dir.join(name);
            match fs.create_entry(&path) {
                Ok(()) => return Ok(Entry { fs, path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TsmError::from_io("report entry (mkdir)", &path, e)),
            }
        }
        Err(TsmError::NoUniqueEntry { dir: report_dir.to_path_buf() })
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.fs.remove_entry(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove configfs-tsm report entry");
        }
    }
}

#[cfg(test)]
mod tests;
