//! Verifier-side policy over a cryptographically verified report.

use super::report::SnpReport;
use super::SnpError;

/// Minimum security patch levels (componentwise); `fmc` only applies to Turin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MinTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    #[serde(default)]
    pub fmc: u8,
}

/// Reference values. The default allows nothing risky (no debug) and pins nothing else;
/// the coordinator fills in what its manifest requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnpPolicy {
    /// Accept guests whose policy lets the hypervisor debug them (POLICY bit 19).
    pub allow_debug: bool,
    /// Highest acceptable VMPL (None: any).
    pub max_vmpl: Option<u32>,
    pub min_tcb: Option<MinTcb>,
    /// Allowed launch measurements (empty: any; the coordinator's manifest decides).
    pub measurements: Vec<[u8; 48]>,
    pub host_data: Option<[u8; 32]>,
    pub report_data: Option<[u8; 64]>,
}

impl SnpPolicy {
    pub fn check(&self, r: &SnpReport) -> Result<(), SnpError> {
        let rep = &r.report;
        if r.debug_allowed() && !self.allow_debug {
            return Err(SnpError::DebugNotAllowed);
        }
        if let Some(max) = self.max_vmpl {
            if rep.vmpl > max {
                return Err(SnpError::VmplTooHigh { vmpl: rep.vmpl, max });
            }
        }
        if let Some(min) = &self.min_tcb {
            let tcb = &rep.reported_tcb;
            let checks = [
                ("bootloader", tcb.bootloader, min.bootloader),
                ("tee", tcb.tee, min.tee),
                ("snp", tcb.snp, min.snp),
                ("microcode", tcb.microcode, min.microcode),
                ("fmc", tcb.fmc.unwrap_or(u8::MAX), if tcb.fmc.is_some() { min.fmc } else { 0 }),
            ];
            for (component, found, min) in checks {
                if found < min {
                    return Err(SnpError::TcbTooLow { component, found, min });
                }
            }
        }
        if !self.measurements.is_empty() && !self.measurements.contains(&rep.measurement) {
            return Err(SnpError::MeasurementNotAllowed {
                found: hex::encode(rep.measurement),
                allowed: self.measurements.len(),
            });
        }
        if let Some(expected) = &self.host_data {
            if expected != &rep.host_data {
                return Err(SnpError::HostDataMismatch {
                    found: hex::encode(rep.host_data),
                    expected: hex::encode(expected),
                });
            }
        }
        if let Some(expected) = &self.report_data {
            if expected != &rep.report_data {
                return Err(SnpError::ReportDataMismatch);
            }
        }
        Ok(())
    }
}
