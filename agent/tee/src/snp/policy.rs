//! Verifier-side policy over a cryptographically verified report.
//!
//! Beyond measurement, VMPL and debug, the checks go-sev-guest's validator offers and Contrast
//! turns on: a floor for REPORTED_TCB *and* one for LAUNCH_TCB (the TCB the guest was launched
//! under; firmware can be updated under a running guest, so the current TCB alone does not say
//! the launch was not done by vulnerable firmware), allowed CHIP_IDs, and refusal of guests
//! whose POLICY lets a migration agent (MIGRATE_MA, bit 18) export their memory.

use super::report::SnpReport;
use super::SnpError;
use sev::firmware::host::TcbVersion;

/// POLICY bit 18: a migration agent may be associated with the guest.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;
/// POLICY bit 19: the hypervisor may debug the guest.
pub const POLICY_DEBUG: u64 = 1 << 19;

/// Minimum security patch levels (componentwise); `fmc` only applies to Turin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    #[serde(default)]
    pub fmc: u8,
}

impl MinTcb {
    /// The first component of `tcb` below this floor: (component, found, minimum).
    fn shortfall(&self, tcb: &TcbVersion) -> Option<(&'static str, u8, u8)> {
        [
            ("bootloader", tcb.bootloader, self.bootloader),
            ("tee", tcb.tee, self.tee),
            ("snp", tcb.snp, self.snp),
            ("microcode", tcb.microcode, self.microcode),
            ("fmc", tcb.fmc.unwrap_or(u8::MAX), if tcb.fmc.is_some() { self.fmc } else { 0 }),
        ]
        .into_iter()
        .find(|(_, found, min)| found < min)
    }
}

/// Reference values. The default allows nothing risky (no debug, no migration agent) and pins
/// nothing else; the coordinator fills in what its manifest requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnpPolicy {
    /// Accept guests whose policy lets the hypervisor debug them (POLICY bit 19).
    pub allow_debug: bool,
    /// Accept guests whose policy allows a migration agent (POLICY bit 18).
    pub allow_migration_agent: bool,
    /// Highest acceptable VMPL (None: any).
    pub max_vmpl: Option<u32>,
    /// Floor for REPORTED_TCB.
    pub min_tcb: Option<MinTcb>,
    /// Floor for LAUNCH_TCB.
    pub min_launch_tcb: Option<MinTcb>,
    /// Allowed CHIP_IDs (empty: any). A masked CHIP_ID (VLEK, MASK_CHIP_ID) matches none.
    pub chip_ids: Vec<[u8; 64]>,
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
        if u64::from(rep.policy) & POLICY_MIGRATE_MA != 0 && !self.allow_migration_agent {
            return Err(SnpError::MigrationAgentNotAllowed { policy: u64::from(rep.policy) });
        }
        if let Some(max) = self.max_vmpl {
            if rep.vmpl > max {
                return Err(SnpError::VmplTooHigh { vmpl: rep.vmpl, max });
            }
        }
        if let Some((component, found, min)) = self.min_tcb.and_then(|m| m.shortfall(&rep.reported_tcb)) {
            return Err(SnpError::TcbTooLow { component, found, min });
        }
        if let Some((component, found, min)) = self.min_launch_tcb.and_then(|m| m.shortfall(&rep.launch_tcb)) {
            return Err(SnpError::LaunchTcbTooLow { component, found, min });
        }
        if !self.chip_ids.is_empty() && !self.chip_ids.contains(&rep.chip_id) {
            return Err(SnpError::ChipIdNotAllowed { found: hex::encode(rep.chip_id), allowed: self.chip_ids.len() });
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
