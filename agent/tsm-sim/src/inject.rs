//! Fault injection for client tests: make the simulated kernel fail the way a real one
//! does (`--inject enotty`, `--inject etimedout:2`, `--inject race:1`).
//!
//! Where each fault strikes mirrors where the kernel produces it: ENXIO on mkdir of a
//! report entry (no TSM provider registered); ENOTTY, EIO, ETIMEDOUT, EFBIG and EBUSY when
//! a read of outblob/auxblob asks the provider for a new report; `race` plays a second
//! process that writes the entry's inblob right after the first outblob read.

use std::sync::Mutex;

/// What one injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// mkdir of a report entry fails with ENXIO.
    Enxio,
    /// Report generation fails with this errno (ENOTTY, EIO, ETIMEDOUT, EFBIG, EBUSY).
    Generate(i32),
    /// Another writer bumps `generation` right after an outblob read.
    Race,
}

/// Fault plus how many more times it fires (`None` = always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    pub fault: Fault,
    pub remaining: Option<u32>,
}

impl std::str::FromStr for Injection {
    type Err = String;
    /// `NAME` or `NAME:COUNT`; NAME is enxio, enotty, eio, etimedout, efbig, ebusy or race.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => {
                let c: u32 = c.parse().map_err(|e| format!("injection {s:?}: count {c:?} is not a number: {e}"))?;
                (n, Some(c))
            }
            None => (s, None),
        };
        let fault = match name.to_ascii_lowercase().as_str() {
            "enxio" => Fault::Enxio,
            "enotty" => Fault::Generate(libc::ENOTTY),
            "eio" => Fault::Generate(libc::EIO),
            "etimedout" => Fault::Generate(libc::ETIMEDOUT),
            "efbig" => Fault::Generate(libc::EFBIG),
            "ebusy" => Fault::Generate(libc::EBUSY),
            "race" => Fault::Race,
            other => {
                return Err(format!(
                    "unknown injection {other:?} (expected enxio, enotty, eio, etimedout, efbig, ebusy or race)"
                ))
            }
        };
        Ok(Injection { fault, remaining: count })
    }
}

/// The configured faults, consumed as they fire.
#[derive(Debug, Default)]
pub struct Injector {
    faults: Mutex<Vec<Injection>>,
}

/// Which point of the ABI is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    Mkdir,
    Generate,
    AfterOutblobRead,
}

impl Injector {
    pub fn new(faults: Vec<Injection>) -> Self {
        Injector { faults: Mutex::new(faults) }
    }

    /// Returns the fault that fires at `site` now, if any, and counts it down.
    pub fn fire(&self, site: Site) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        for inj in faults.iter_mut() {
            let matches = matches!(
                (site, inj.fault),
                (Site::Mkdir, Fault::Enxio)
                    | (Site::Generate, Fault::Generate(_))
                    | (Site::AfterOutblobRead, Fault::Race)
            );
            if !matches {
                continue;
            }
            match &mut inj.remaining {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            return Some(inj.fault);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_counts_down() {
        let inj = Injector::new(vec!["enotty:2".parse().unwrap(), "race".parse().unwrap()]);
        assert_eq!(inj.fire(Site::Mkdir), None);
        assert_eq!(inj.fire(Site::Generate), Some(Fault::Generate(libc::ENOTTY)));
        assert_eq!(inj.fire(Site::Generate), Some(Fault::Generate(libc::ENOTTY)));
        assert_eq!(inj.fire(Site::Generate), None);
        for _ in 0..5 {
            assert_eq!(inj.fire(Site::AfterOutblobRead), Some(Fault::Race));
        }
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in ["", "eperm", "enotty:", "enotty:x", "enotty:-1", "race:1:2"] {
            assert!(bad.parse::<Injection>().is_err(), "{bad:?} should be rejected");
        }
    }
}
