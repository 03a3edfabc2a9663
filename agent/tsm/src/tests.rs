//! The client against a plain temp directory whose `ConfigFs` emulation mimics the kernel:
//! mkdir populates attributes, every write bumps `generation`, reading `outblob` yields a
//! "report" over the inblob. The FUSE simulator (tsm-sim) covers the real-filesystem path.

use super::*;
use std::io;
use std::sync::Mutex;

#[derive(Default)]
struct Knobs {
    provider: String,
    /// Extra generation bumps injected while reading outblob, one per attempt.
    concurrent_writes: u32,
    /// errno returned by outblob reads, one per attempt.
    outblob_errno: Vec<i32>,
    with_auxblob: bool,
    removed: Vec<PathBuf>,
    created: Vec<PathBuf>,
}

struct EmuFs(Mutex<Knobs>);

impl EmuFs {
    fn new(provider: &str) -> Self {
        EmuFs(Mutex::new(Knobs { provider: provider.into(), with_auxblob: true, ..Default::default() }))
    }
    fn bump(dir: &Path) -> io::Result<()> {
        let gen: u64 = std::fs::read_to_string(dir.join("generation"))?.trim().parse().unwrap_or(0);
        std::fs::write(dir.join("generation"), format!("{}\n", gen + 1))
    }
}

impl ConfigFs for &'static EmuFs {
    fn create_entry(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)?;
        let mut k = self.0.lock().unwrap();
        std::fs::write(path.join("provider"), format!("{}\n", k.provider))?;
        std::fs::write(path.join("generation"), "0\n")?;
        std::fs::write(path.join("inblob"), b"")?;
        std::fs::write(path.join("privlevel"), b"")?;
        std::fs::write(path.join("outblob"), b"")?;
        if k.with_auxblob {
            std::fs::write(path.join("auxblob"), b"")?;
        }
        k.created.push(path.to_path_buf());
        Ok(())
    }
    fn remove_entry(&self, path: &Path) -> io::Result<()> {
        self.0.lock().unwrap().removed.push(path.to_path_buf());
        std::fs::remove_dir_all(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = path.parent().unwrap();
        if name == "outblob" {
            let mut k = self.0.lock().unwrap();
            if !k.outblob_errno.is_empty() {
                return Err(io::Error::from_raw_os_error(k.outblob_errno.remove(0)));
            }
            if k.concurrent_writes > 0 {
                k.concurrent_writes -= 1;
                EmuFs::bump(dir)?;
            }
            let inblob = std::fs::read(dir.join("inblob"))?;
            let mut report = b"REPORT:".to_vec();
            report.extend_from_slice(&inblob);
            if k.with_auxblob {
                std::fs::write(dir.join("auxblob"), b"CERTS")?;
            }
            return Ok(report);
        }
        std::fs::read(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)?;
        EmuFs::bump(path.parent().unwrap())
    }
}

fn client(provider: &str) -> (tempfile::TempDir, TsmClient, &'static EmuFs) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("report")).unwrap();
    let emu: &'static EmuFs = Box::leak(Box::new(EmuFs::new(provider)));
    let client = TsmClient::with_fs(dir.path(), Box::new(emu)).with_retries(3, Duration::from_millis(1));
    (dir, client, emu)
}

fn entries(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path().join("report")).unwrap().count()
}

#[test]
fn snp_report_binds_exact_report_data_and_returns_auxblob() {
    let (dir, client, emu) = client("sev_guest");
    let data = [0xA5u8; 64];
    let report = client.report(&data, Some(2)).unwrap();
    assert_eq!(report.provider, Provider::SevGuest);
    assert_eq!(&report.outblob[..7], b"REPORT:");
    assert_eq!(&report.outblob[7..], &data[..]);
    assert_eq!(report.auxblob.as_deref(), Some(&b"CERTS"[..]));
    assert_eq!(report.generation, 2, "privlevel + inblob writes");
    assert_eq!(entries(&dir), 0, "entry removed");
    assert_eq!(emu.0.lock().unwrap().removed.len(), 1);
}

#[test]
fn tdx_report_has_no_auxblob_and_skips_privlevel() {
    let (_dir, client, _emu) = client("tdx_guest");
    let report = client.report(&[1u8; 64], None).unwrap();
    assert_eq!(report.provider, Provider::TdxGuest);
    assert_eq!(report.auxblob, None);
    assert_eq!(report.generation, 1);
}

#[test]
fn concurrent_writer_is_retried_then_succeeds() {
    let (dir, client, emu) = client("sev_guest");
    emu.0.lock().unwrap().concurrent_writes = 2;
    let report = client.report(&[7u8; 64], None).unwrap();
    assert_eq!(&report.outblob[7..], &[7u8; 64][..]);
    assert_eq!(emu.0.lock().unwrap().created.len(), 3, "two failed attempts, each in a fresh entry");
    assert_eq!(entries(&dir), 0, "every entry removed");
}

#[test]
fn persistent_concurrent_writer_is_an_error_and_entries_are_removed() {
    let (dir, client, emu) = client("sev_guest");
    emu.0.lock().unwrap().concurrent_writes = 100;
    let err = client.report(&[7u8; 64], None).unwrap_err();
    assert!(matches!(err, TsmError::ConcurrentWriter { expected: 1, found: 2, attempts: 3 }), "{err}");
    assert!(err.to_string().contains("another process wrote"), "{err}");
    assert_eq!(entries(&dir), 0);
}

#[test]
fn ebusy_retries_with_backoff_then_succeeds() {
    let (_dir, client, emu) = client("sev_guest");
    emu.0.lock().unwrap().outblob_errno = vec![libc::EBUSY, libc::EBUSY];
    assert!(client.report(&[0u8; 64], None).is_ok());
}

#[test]
fn ebusy_forever_is_busy_error() {
    let (dir, client, emu) = client("sev_guest");
    emu.0.lock().unwrap().outblob_errno = vec![libc::EBUSY; 10];
    let err = client.report(&[0u8; 64], None).unwrap_err();
    assert!(matches!(err, TsmError::Busy { attempts: 3 }), "{err}");
    assert_eq!(entries(&dir), 0);
}

#[test]
fn each_documented_errno_has_its_own_error_and_removes_the_entry() {
    let cases: [(i32, &str); 6] = [
        (libc::ENXIO, "not a confidential VM or the sev-guest/tdx-guest module is not loaded"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOTTY, "VMPCK is disabled"),
        (libc::EFBIG, "EFBIG"),
        (libc::ETIMEDOUT, "GetQuote timed out"),
        (libc::EIO, "GetQuote failed"),
    ];
    for (errno, text) in cases {
        let (dir, client, emu) = client("tdx_guest");
        emu.0.lock().unwrap().outblob_errno = vec![errno];
        let err = client.report(&[0u8; 64], None).unwrap_err();
        assert!(err.to_string().contains(text), "errno {errno}: {err}");
        assert!(!err.to_string().contains('\n'));
        assert_eq!(entries(&dir), 0, "errno {errno}: entry removed on error");
    }
}

#[test]
fn unknown_provider_is_rejected() {
    let (dir, client, _emu) = client("arm_cca_guest");
    let err = client.report(&[0u8; 64], None).unwrap_err();
    assert!(matches!(err, TsmError::UnknownProvider { .. }), "{err}");
    assert_eq!(entries(&dir), 0);
}

#[test]
fn privlevel_above_max_is_rejected_before_touching_configfs() {
    let (_dir, client, emu) = client("sev_guest");
    let err = client.report(&[0u8; 64], Some(4)).unwrap_err();
    assert!(matches!(err, TsmError::PrivlevelOutOfRange { level: 4 }));
    assert!(emu.0.lock().unwrap().created.is_empty());
}

#[test]
fn privlevel_below_floor_is_rejected_before_writing() {
    let (dir, client, emu) = client("sev_guest");
    let report = client.report(&[0u8; 64], Some(0)).unwrap();
    assert_eq!(report.generation, 2, "no floor attribute: privlevel written");
    let floor_client =
        TsmClient::with_fs(dir.path(), Box::new(FloorFs(emu, 2))).with_retries(1, Duration::from_millis(1));
    let err = floor_client.report(&[0u8; 64], Some(1)).unwrap_err();
    assert!(matches!(err, TsmError::PrivlevelBelowFloor { level: 1, floor: 2 }), "{err}");
    assert_eq!(entries(&dir), 0);
    assert!(floor_client.report(&[0u8; 64], Some(2)).is_ok());
}

/// EmuFs whose entries also carry `privlevel_floor`.
struct FloorFs(&'static EmuFs, u8);

impl ConfigFs for FloorFs {
    fn create_entry(&self, path: &Path) -> io::Result<()> {
        self.0.create_entry(path)?;
        std::fs::write(path.join("privlevel_floor"), format!("{}\n", self.1))
    }
    fn remove_entry(&self, path: &Path) -> io::Result<()> {
        self.0.remove_entry(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0.read(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.0.write(path, data)
    }
}

#[test]
fn missing_report_dir_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = TsmClient::new(dir.path()).report(&[0u8; 64], None).unwrap_err();
    assert!(matches!(err, TsmError::NoTsmReport { .. }));
    assert!(err.to_string().contains("configfs is not mounted"));
}

#[test]
fn garbage_generation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let entry = dir.path().join("report");
    std::fs::create_dir(&entry).unwrap();
    // Real filesystem path: our mkdir yields an empty dir, so `provider` is missing.
    let err = TsmClient::new(dir.path()).report(&[0u8; 64], None).unwrap_err();
    assert!(matches!(err, TsmError::Io { attr: "provider", .. }), "{err}");
    assert_eq!(entries(&dir), 0, "empty entry removed by rmdir");
    assert!(matches!(Provider::parse("sev_guest\n"), Ok(Provider::SevGuest)));
    let bad = TsmError::BadNumber { attr: "generation", content: "x".into() };
    assert!(bad.to_string().contains("generation is not a number"));
}
