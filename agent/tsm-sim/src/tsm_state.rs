//! The configfs-tsm report model (drivers/virt/coco/tsm.c) without any FUSE: report entries,
//! their attributes, write/read generations, cached blobs and the kernel's errnos.
//!
//! Kernel behaviour reproduced here:
//! - `generation` is the write generation; every accepted write to `inblob` or `privlevel`
//!   bumps it. A read of `outblob`/`auxblob` reuses the cached blobs while the read
//!   generation equals the write generation and asks the provider for new ones otherwise.
//! - Reading a blob before `inblob` was written: EINVAL. An inblob that is not exactly the
//!   provider's 64 bytes is rejected at generation time with EINVAL.
//! - `privlevel` accepts `kstrtouint(.., 0)` syntax within `privlevel_floor..=3`, else EINVAL.
//! - A write that would make the write generation catch up with the read generation
//!   (wrap-around without an interim read) fails with EBUSY.
//!
//! Beyond the kernel (for tests): an optional generation delay, during which any other
//! blob read or attribute write on the same entry fails with EBUSY, and injected faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;

use crate::inject::{Fault, Injector, Site};
use crate::signer::{Evidence, Provider};

/// TSM_INBLOB_MAX.
pub const INBLOB_MAX: usize = 64;
/// TSM_PRIVLEVEL_MAX.
pub const PRIVLEVEL_MAX: u32 = 3;

/// The attributes of a report entry, in the kernel's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Inblob,
    Outblob,
    Auxblob,
    Provider,
    Generation,
    Privlevel,
    PrivlevelFloor,
}

impl Attr {
    pub const ALL: [Attr; 7] = [
        Attr::Provider,
        Attr::Generation,
        Attr::Inblob,
        Attr::Outblob,
        Attr::Auxblob,
        Attr::Privlevel,
        Attr::PrivlevelFloor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attr::Inblob => "inblob",
            Attr::Outblob => "outblob",
            Attr::Auxblob => "auxblob",
            Attr::Provider => "provider",
            Attr::Generation => "generation",
            Attr::Privlevel => "privlevel",
            Attr::PrivlevelFloor => "privlevel_floor",
        }
    }

    /// configfs permissions: inblob is write-only, privlevel read-write, the rest read-only.
    pub fn mode(self) -> u16 {
        match self {
            Attr::Inblob => 0o200,
            Attr::Privlevel => 0o644,
            _ => 0o444,
        }
    }

    pub fn index(self) -> usize {
        Attr::ALL.iter().position(|a| *a == self).unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Entry {
    id: u64,
    inblob: Vec<u8>,
    privlevel: u32,
    write_gen: u64,
    read_gen: u64,
    blobs: Option<Evidence>,
    generating: bool,
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<String, Entry>,
    next_id: u64,
}

/// The whole simulated `report/` group.
pub struct TsmState {
    provider: Arc<dyn Provider>,
    injector: Injector,
    delay: Duration,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for TsmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsmState").field("provider", &self.provider.name()).finish_non_exhaustive()
    }
}

impl TsmState {
    pub fn new(provider: Arc<dyn Provider>, injector: Injector, delay: Duration) -> Self {
        TsmState { provider, injector, delay, inner: Mutex::new(Inner { next_id: 1, ..Default::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not wedge the file system: the data stays consistent
        // because every mutation below is a single assignment.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The attributes this provider shows (TDX hides auxblob and the privlevel pair).
    pub fn attrs(&self) -> Vec<Attr> {
        Attr::ALL
            .into_iter()
            .filter(|a| match a {
                Attr::Auxblob => self.provider.has_auxblob(),
                Attr::Privlevel | Attr::PrivlevelFloor => self.provider.privlevel_floor().is_some(),
                _ => true,
            })
            .collect()
    }

    /// mkdir report/NAME.
    pub fn mkdir(&self, name: &str) -> Result<u64, Errno> {
        if self.injector.fire(Site::Mkdir) == Some(Fault::Enxio) {
            return Err(Errno::ENXIO);
        }
        let mut inner = self.lock();
        if inner.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let privlevel = self.provider.privlevel_floor().unwrap_or(0);
        inner.entries.insert(name.to_string(), Entry { id, privlevel, ..Default::default() });
        tracing::debug!(entry = name, "report entry created");
        Ok(id)
    }

    /// rmdir report/NAME.
    pub fn rmdir(&self, name: &str) -> Result<(), Errno> {
        let mut inner = self.lock();
        match inner.entries.get(name) {
            None => Err(Errno::ENOENT),
            Some(e) if e.generating => Err(Errno::EBUSY),
            Some(_) => {
                inner.entries.remove(name);
                tracing::debug!(entry = name, "report entry removed");
                Ok(())
            }
        }
    }

    pub fn lookup(&self, name: &str) -> Option<u64> {
        self.lock().entries.get(name).map(|e| e.id)
    }

    pub fn name_of(&self, id: u64) -> Option<String> {
        self.lock().entries.iter().find(|(_, e)| e.id == id).map(|(n, _)| n.clone())
    }

    pub fn list(&self) -> Vec<(String, u64)> {
        self.lock().entries.iter().map(|(n, e)| (n.clone(), e.id)).collect()
    }

    fn with_entry<T>(&self, id: u64, f: impl FnOnce(&mut Entry) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut inner = self.lock();
        let entry = inner.entries.values_mut().find(|e| e.id == id).ok_or(Errno::ENOENT)?;
        f(entry)
    }

    /// The full content of a readable attribute (what one configfs read buffer holds).
    pub fn read(&self, id: u64, attr: Attr) -> Result<Vec<u8>, Errno> {
        match attr {
            Attr::Inblob => Err(Errno::EACCES),
            Attr::Provider => Ok(format!("{}\n", self.provider.name()).into_bytes()),
            Attr::Generation => self.with_entry(id, |e| Ok(format!("{}\n", e.write_gen).into_bytes())),
            Attr::Privlevel => self.with_entry(id, |e| Ok(format!("{}\n", e.privlevel).into_bytes())),
            Attr::PrivlevelFloor => Ok(format!("{}\n", self.provider.privlevel_floor().unwrap_or(0)).into_bytes()),
            Attr::Outblob | Attr::Auxblob => {
                let blobs = self.report(id)?;
                if attr == Attr::Outblob && self.injector.fire(Site::AfterOutblobRead) == Some(Fault::Race) {
                    self.racing_write(id);
                }
                Ok(if attr == Attr::Outblob { blobs.outblob } else { blobs.auxblob })
            }
        }
    }

    /// Another "process" overwrites inblob behind the reader's back.
    fn racing_write(&self, id: u64) {
        let _ = self.with_entry(id, |e| {
            e.inblob = vec![0xee; INBLOB_MAX];
            e.write_gen = e.write_gen.wrapping_add(1);
            tracing::info!(entry = id, generation = e.write_gen, "injected concurrent inblob write");
            Ok(())
        });
    }

    /// tsm_report_read: cached blobs, or a new report from the provider.
    fn report(&self, id: u64) -> Result<Evidence, Errno> {
        let (inblob, privlevel) = match self.with_entry(id, |e| {
            if e.generating {
                return Err(Errno::EBUSY);
            }
            if e.inblob.is_empty() {
                return Err(Errno::EINVAL);
            }
            if let Some(blobs) = &e.blobs {
                if e.read_gen == e.write_gen {
                    return Ok(Cached::Hit(blobs.clone()));
                }
            }
            e.blobs = None;
            // sev-guest and tdx-guest both insist on exactly 64 bytes of report data.
            let inblob: [u8; 64] = e.inblob.as_slice().try_into().map_err(|_| Errno::EINVAL)?;
            e.generating = true;
            Ok(Cached::Generate(inblob, e.privlevel))
        })? {
            Cached::Hit(blobs) => return Ok(blobs),
            Cached::Generate(inblob, privlevel) => (inblob, privlevel),
        };

        if let Some(Fault::Generate(errno)) = self.injector.fire(Site::Generate) {
            self.finish_generation(id, None);
            tracing::info!(entry = id, errno, "injected report generation failure");
            return Err(Errno::from_raw(errno));
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let result = self.provider.generate(&inblob, privlevel);
        match result {
            Ok(evidence) => {
                self.finish_generation(id, Some(evidence.clone()));
                Ok(evidence)
            }
            Err(err) => {
                self.finish_generation(id, None);
                tracing::error!(entry = id, error = %err, "simulated report generation failed");
                Err(Errno::EIO)
            }
        }
    }

    fn finish_generation(&self, id: u64, blobs: Option<Evidence>) {
        // The entry may have been removed meanwhile; then the result only goes to the reader.
        let _ = self.with_entry(id, |e| {
            e.generating = false;
            if blobs.is_some() {
                // Writes fail with EBUSY while generating, so write_gen is what was signed.
                e.read_gen = e.write_gen;
            }
            e.blobs = blobs;
            Ok(())
        });
    }

    /// try_advance_write_generation.
    fn advance(e: &mut Entry) -> Result<(), Errno> {
        if e.generating {
            return Err(Errno::EBUSY);
        }
        if e.write_gen == e.read_gen.wrapping_sub(1) {
            return Err(Errno::EBUSY);
        }
        e.write_gen = e.write_gen.wrapping_add(1);
        Ok(())
    }

    /// tsm_report_inblob_write: the whole buffer of one open/write/close cycle.
    pub fn write_inblob(&self, id: u64, data: &[u8]) -> Result<(), Errno> {
        if data.len() > INBLOB_MAX {
            return Err(Errno::EFBIG);
        }
        self.with_entry(id, |e| {
            Self::advance(e)?;
            e.inblob = data.to_vec();
            Ok(())
        })
    }

    /// tsm_report_privlevel_store.
    pub fn write_privlevel(&self, id: u64, data: &[u8]) -> Result<(), Errno> {
        let floor = self.provider.privlevel_floor().ok_or(Errno::EACCES)?;
        let level = parse_kstrtouint(data)?;
        if level < floor || level > PRIVLEVEL_MAX {
            return Err(Errno::EINVAL);
        }
        self.with_entry(id, |e| {
            Self::advance(e)?;
            e.privlevel = level;
            Ok(())
        })
    }
}

enum Cached {
    Hit(Evidence),
    Generate([u8; 64], u32),
}

/// kstrtouint(buf, 0, ..): optional "+", base from prefix (0x hex, 0 octal, else decimal),
/// one trailing newline allowed; EINVAL on syntax, ERANGE on overflow.
pub fn parse_kstrtouint(data: &[u8]) -> Result<u32, Errno> {
    let s = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_prefix('+').unwrap_or(s);
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(Errno::EINVAL);
    }
    u32::from_str_radix(digits, radix).map_err(|_| Errno::ERANGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::SignError;

    /// Echoes its inputs, so the tests see exactly what the model passed to the provider.
    struct Echo;
    impl Provider for Echo {
        fn name(&self) -> &'static str {
            "sev_guest"
        }
        fn privlevel_floor(&self) -> Option<u32> {
            Some(1)
        }
        fn has_auxblob(&self) -> bool {
            true
        }
        fn generate(&self, report_data: &[u8; 64], privlevel: u32) -> Result<Evidence, SignError> {
            let mut outblob = report_data.to_vec();
            outblob.push(privlevel as u8);
            Ok(Evidence { outblob, auxblob: vec![7] })
        }
    }

    fn state(faults: &[&str]) -> TsmState {
        let faults = faults.iter().map(|f| f.parse().unwrap()).collect();
        TsmState::new(Arc::new(Echo), Injector::new(faults), Duration::ZERO)
    }

    fn gen(s: &TsmState, id: u64) -> String {
        String::from_utf8(s.read(id, Attr::Generation).unwrap()).unwrap()
    }

    #[test]
    fn generation_counts_writes_and_blobs_are_cached() {
        let s = state(&[]);
        let id = s.mkdir("a").unwrap();
        assert_eq!(gen(&s, id), "0\n");
        assert_eq!(s.read(id, Attr::Outblob), Err(Errno::EINVAL), "no inblob yet");
        s.write_privlevel(id, b"2\n").unwrap();
        s.write_inblob(id, &[1; 64]).unwrap();
        assert_eq!(gen(&s, id), "2\n");
        let out = s.read(id, Attr::Outblob).unwrap();
        assert_eq!(&out[..64], &[1; 64]);
        assert_eq!(out[64], 2);
        assert_eq!(s.read(id, Attr::Auxblob).unwrap(), vec![7]);
        s.write_inblob(id, &[3; 64]).unwrap();
        assert_eq!(&s.read(id, Attr::Outblob).unwrap()[..64], &[3; 64]);
        assert_eq!(gen(&s, id), "3\n");
    }

    #[test]
    fn kernel_errnos() {
        let s = state(&[]);
        let id = s.mkdir("a").unwrap();
        assert_eq!(s.mkdir("a"), Err(Errno::EEXIST));
        assert_eq!(s.write_inblob(id, &[0; 65]), Err(Errno::EFBIG));
        s.write_inblob(id, &[0; 10]).unwrap();
        assert_eq!(s.read(id, Attr::Outblob), Err(Errno::EINVAL), "short inblob");
        for bad in [&b"0"[..], b"4", b"x", b"", b"1 ", b"0x", b"99999999999"] {
            assert!(s.write_privlevel(id, bad).is_err(), "privlevel {bad:?}");
        }
        assert_eq!(s.write_privlevel(id, b"99999999999"), Err(Errno::ERANGE));
        s.write_privlevel(id, b"0x3").unwrap();
        s.write_privlevel(id, b"01").unwrap();
        assert_eq!(s.read(id, Attr::Inblob), Err(Errno::EACCES));
        assert_eq!(s.rmdir("b"), Err(Errno::ENOENT));
        s.rmdir("a").unwrap();
        assert_eq!(s.read(id, Attr::Generation), Err(Errno::ENOENT));
    }

    #[test]
    fn injected_faults() {
        let s = state(&["enxio:1", "enotty:1", "race:1"]);
        assert_eq!(s.mkdir("a"), Err(Errno::ENXIO));
        let id = s.mkdir("a").unwrap();
        s.write_inblob(id, &[5; 64]).unwrap();
        assert_eq!(s.read(id, Attr::Outblob), Err(Errno::ENOTTY));
        assert_eq!(&s.read(id, Attr::Outblob).unwrap()[..64], &[5; 64]);
        assert_eq!(gen(&s, id), "2\n", "the injected racer wrote once");
        assert_eq!(&s.read(id, Attr::Outblob).unwrap()[..64], &[0xee; 64]);
    }
}
