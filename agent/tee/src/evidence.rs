//! One evidence shape and one claims shape for both platforms, and `verify`.

use serde::Serialize;

use crate::snp::{self, AmdRoots, SigningKey, SnpPolicy, SnpReport};
use crate::tdx::{self, QuoteCollateralV3, TdxPolicy, TdxQuote};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    SevSnp,
    Tdx,
}

/// What a guest hands the coordinator.
#[derive(Debug, Clone)]
pub enum Evidence {
    Snp {
        /// The 1184-byte report (configfs-tsm outblob).
        report: Vec<u8>,
        /// VCEK/VLEK DER, when not (or not only) in the certificate table.
        vek: Option<Vec<u8>>,
        /// GHCB certificate table (configfs-tsm auxblob).
        cert_table: Option<Vec<u8>>,
    },
    Tdx {
        /// The quote (configfs-tsm outblob); trailing padding is fine.
        quote: Vec<u8>,
        /// Collateral fetched by the verifier (PCS/PCCS or a cache).
        collateral: Box<QuoteCollateralV3>,
    },
}

impl Evidence {
    pub fn platform(&self) -> Platform {
        match self {
            Evidence::Snp { .. } => Platform::SevSnp,
            Evidence::Tdx { .. } => Platform::Tdx,
        }
    }
}

/// Trust anchors and reference values. `production()` uses AMD's and Intel's real roots;
/// simulated anchors need the explicit [`TrustConfig::with_simulated_anchors`] call and mark
/// every result `simulated: true` with a warning logged on each verification.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    amd_roots: Vec<AmdRoots>,
    /// DER of the Intel root; None = Intel's production root shipped with dcap-qvl.
    intel_root: Option<Vec<u8>>,
    simulated: bool,
    pub snp_policy: SnpPolicy,
    pub tdx_policy: TdxPolicy,
}

impl TrustConfig {
    /// AMD Milan/Genoa/Turin roots and Intel's SGX root CA.
    pub fn production() -> Result<Self, VerifyError> {
        Ok(TrustConfig {
            amd_roots: AmdRoots::builtin_all()?,
            intel_root: None,
            simulated: false,
            snp_policy: SnpPolicy::default(),
            tdx_policy: TdxPolicy::default(),
        })
    }

    /// Replaces ALL trust anchors with simulated ones (tsm-sim). Real evidence then no longer
    /// verifies, and simulated evidence never verifies under `production()`.
    pub fn with_simulated_anchors(mut self, amd_roots: Vec<AmdRoots>, intel_root_der: Option<Vec<u8>>) -> Self {
        tracing::warn!(
            PODMESH_EVENT = "simulated_trust_anchors",
            "SIMULATED TEE trust anchors configured: evidence is NOT from real hardware"
        );
        self.amd_roots = amd_roots;
        self.intel_root = intel_root_der;
        self.simulated = true;
        self
    }

    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    pub fn amd_roots(&self) -> &[AmdRoots] {
        &self.amd_roots
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Snp(#[from] snp::SnpError),
    #[error(transparent)]
    Tdx(#[from] tdx::TdxError),
    #[error("TDX evidence: the Intel root CA is not configured as a simulated anchor")]
    NoIntelRoot,
}

/// TCB as raw value plus a readable rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tcb {
    /// SNP: REPORTED_TCB as hex u64; TDX: TEE_TCB_SVN hex.
    pub raw: String,
    /// SNP: "bl=3 tee=0 snp=8 ucode=115"; TDX: the dcap-qvl TCB status.
    pub human: String,
    /// TDX only: Intel advisories for the matched TCB level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisory_ids: Vec<String>,
}

/// The verified facts both platforms map into; hex strings for byte fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VerifiedClaims {
    pub platform: Platform,
    /// SNP MEASUREMENT or TDX MRTD.
    pub measurement: String,
    /// TDX RTMR0..3 (empty for SNP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmrs: Vec<String>,
    /// SNP HOST_DATA or TDX MRCONFIGID: the manifest lookup key.
    pub policy_key: String,
    pub report_data: String,
    pub tcb: Tcb,
    /// SNP guest POLICY (hex u64) or TDX TDATTRIBUTES (hex).
    pub policy: String,
    /// TDX XFAM (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfam: Option<String>,
    /// SNP VMPL (None for TDX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmpl: Option<u32>,
    pub debug: bool,
    /// SNP CHIP_ID (hex) for VCEK reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chip_id: Option<String>,
    /// "Milan" / "Genoa" / "Turin" or "TDX v4 TD1.0" etc.
    pub product: String,
    /// SNP: "vcek" / "vlek".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKey>,
    /// SNP VLEK: the cloud provider the VLEK was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csp_id: Option<String>,
    pub simulated: bool,
}

impl VerifiedClaims {
    /// The raw policy key bytes (HOST_DATA / MRCONFIGID) for manifest lookup.
    pub fn policy_key_bytes(&self) -> Vec<u8> {
        hex::decode(&self.policy_key).unwrap_or_default()
    }
}

/// Verifies evidence at `now` (certificate and collateral validity are judged at that time).
pub fn verify(
    evidence: &Evidence,
    trust: &TrustConfig,
    now: time::OffsetDateTime,
) -> Result<VerifiedClaims, VerifyError> {
    if trust.simulated {
        tracing::warn!(PODMESH_EVENT = "simulated_evidence", platform = ?evidence.platform(), "verifying with SIMULATED trust anchors: claims are marked simulated and prove nothing about real hardware");
    }
    match evidence {
        Evidence::Snp { report, vek, cert_table } => {
            let parsed = SnpReport::parse(report)?;
            let v =
                snp::verify(&parsed, vek.as_deref(), cert_table.as_deref(), &trust.amd_roots, &trust.snp_policy, now)?;
            Ok(snp_claims(&v, trust.simulated))
        }
        Evidence::Tdx { quote, collateral } => {
            if trust.simulated && trust.intel_root.is_none() {
                return Err(VerifyError::NoIntelRoot);
            }
            let parsed = TdxQuote::parse(quote)?;
            let v = tdx::verify(&parsed, collateral, trust.intel_root.as_deref(), &trust.tdx_policy, now)?;
            Ok(tdx_claims(&v, trust.simulated))
        }
    }
}

fn snp_claims(v: &snp::VerifiedSnp, simulated: bool) -> VerifiedClaims {
    let r = &v.report.report;
    let t = &r.reported_tcb;
    let mut human = format!("bl={} tee={} snp={} ucode={}", t.bootloader, t.tee, t.snp, t.microcode);
    if let Some(fmc) = t.fmc {
        human = format!("fmc={fmc} {human}");
    }
    VerifiedClaims {
        platform: Platform::SevSnp,
        measurement: hex::encode(r.measurement),
        rtmrs: Vec::new(),
        policy_key: hex::encode(r.host_data),
        report_data: hex::encode(r.report_data),
        tcb: Tcb { raw: format!("{:016x}", v.report.reported_tcb_raw()), human, advisory_ids: Vec::new() },
        policy: format!("{:#x}", u64::from(r.policy)),
        xfam: None,
        vmpl: Some(r.vmpl),
        debug: v.report.debug_allowed(),
        chip_id: (v.report.signing_key == SigningKey::Vcek).then(|| hex::encode(r.chip_id)),
        product: v.product.to_string(),
        signing_key: Some(v.report.signing_key),
        csp_id: v.vek.csp_id.clone(),
        simulated,
    }
}

fn tdx_claims(v: &tdx::VerifiedTdx, simulated: bool) -> VerifiedClaims {
    let td = &v.quote.td;
    VerifiedClaims {
        platform: Platform::Tdx,
        measurement: hex::encode(td.mr_td),
        rtmrs: td.rtmr.iter().map(hex::encode).collect(),
        policy_key: hex::encode(td.mr_config_id),
        report_data: hex::encode(td.report_data),
        tcb: Tcb {
            raw: hex::encode(td.tee_tcb_svn),
            human: v.tcb_status.clone(),
            advisory_ids: v.advisory_ids.clone(),
        },
        policy: hex::encode(td.td_attributes),
        xfam: Some(hex::encode(td.xfam)),
        vmpl: None,
        debug: v.quote.debug(),
        chip_id: None,
        product: format!("TDX v{} {}", v.quote.version, if v.quote.body_type == 3 { "TD1.5" } else { "TD1.0" }),
        signing_key: None,
        csp_id: None,
        simulated,
    }
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub(crate) fn ser_opt_hex<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&hex::encode(b)),
        None => s.serialize_none(),
    }
}
