//! The simulated TSM providers: what `outblob`/`auxblob` contain for a given inblob and
//! privilege level, exactly as sev-guest / tdx-guest would hand them to configfs-tsm.

use tee::certtable::{CertEntry, CertKind, CertTable};

use crate::snp_chain::{ChainError, SimAmdChain};
use crate::snp_report::{self, SnpLaunch};
use crate::tdx_quote::{self, SimTdxKeys, TdxLaunch, TdxSimError};

/// What one report request produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub outblob: Vec<u8>,
    pub auxblob: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("simulated SNP signer: {0}")]
    Snp(#[from] ChainError),
    #[error("simulated SNP signer: encoding the certificate table failed: {0}")]
    CertTable(#[from] tee::certtable::CertTableError),
    #[error("simulated TDX signer: {0}")]
    Tdx(#[from] TdxSimError),
}

/// A configfs-tsm provider (the kernel's `struct tsm_ops`).
pub trait Provider: Send + Sync {
    /// The `provider` attribute: `sev_guest` or `tdx_guest`.
    fn name(&self) -> &'static str;
    /// `privlevel_floor`, or `None` when the provider has no privilege levels (TDX: the
    /// privlevel attributes are hidden).
    fn privlevel_floor(&self) -> Option<u32>;
    /// Whether the provider exposes `auxblob` (sev-guest does, tdx-guest does not).
    fn has_auxblob(&self) -> bool;
    /// Generates evidence binding `report_data` at `privlevel`.
    fn generate(&self, report_data: &[u8; 64], privlevel: u32) -> Result<Evidence, SignError>;
}

/// sev-guest backed by the simulated AMD chain.
pub struct SnpProvider {
    chain: SimAmdChain,
    launch: SnpLaunch,
    /// Cert table handed out as auxblob (empty when the host supplies no certificates).
    auxblob: Vec<u8>,
    vmpl_floor: u32,
}

impl SnpProvider {
    /// `with_certs`: whether the simulated host supplies VCEK/ASK/ARK in the extended
    /// report (most do; without them the verifier must fetch the VCEK from KDS).
    pub fn new(chain: SimAmdChain, launch: SnpLaunch, with_certs: bool, vmpl_floor: u32) -> Result<Self, SignError> {
        let auxblob = if with_certs {
            let vcek = chain.issue_vcek(launch.reported_tcb)?;
            CertTable {
                entries: vec![
                    CertEntry { kind: CertKind::Vcek, data: vcek },
                    CertEntry { kind: CertKind::Ask, data: chain.ask_der().to_vec() },
                    CertEntry { kind: CertKind::Ark, data: chain.ark_der().to_vec() },
                ],
            }
            .encode()?
        } else {
            Vec::new()
        };
        Ok(SnpProvider { chain, launch, auxblob, vmpl_floor })
    }

    pub fn chain(&self) -> &SimAmdChain {
        &self.chain
    }
}

impl Provider for SnpProvider {
    fn name(&self) -> &'static str {
        "sev_guest"
    }
    fn privlevel_floor(&self) -> Option<u32> {
        Some(self.vmpl_floor)
    }
    fn has_auxblob(&self) -> bool {
        true
    }
    fn generate(&self, report_data: &[u8; 64], privlevel: u32) -> Result<Evidence, SignError> {
        let outblob = snp_report::build_report(&self.chain, &self.launch, report_data, privlevel)?;
        Ok(Evidence { outblob, auxblob: self.auxblob.clone() })
    }
}

/// tdx-guest backed by the simulated Intel PKI.
pub struct TdxProvider {
    keys: SimTdxKeys,
    launch: TdxLaunch,
}

impl TdxProvider {
    pub fn new(state_dir: &std::path::Path, launch: TdxLaunch) -> Result<Self, SignError> {
        Ok(TdxProvider { keys: SimTdxKeys::load_or_create(state_dir, launch.pce_svn)?, launch })
    }
}

impl TdxProvider {
    pub fn keys(&self) -> &SimTdxKeys {
        &self.keys
    }
    pub fn launch(&self) -> &TdxLaunch {
        &self.launch
    }
}

impl Provider for TdxProvider {
    fn name(&self) -> &'static str {
        "tdx_guest"
    }
    fn privlevel_floor(&self) -> Option<u32> {
        None
    }
    fn has_auxblob(&self) -> bool {
        false
    }
    fn generate(&self, report_data: &[u8; 64], _privlevel: u32) -> Result<Evidence, SignError> {
        let outblob = tdx_quote::build_quote(&self.keys, &self.launch, report_data)?;
        Ok(Evidence { outblob, auxblob: Vec::new() })
    }
}
