//! From a certificate request to verified, manifest-approved claims — or a [`Rejection`].
//!
//! Order: evidence signature and chain (crate `tee`, with the manifest's measurements, TCB and
//! launch TCB floors, chip IDs, migration-agent, VMPL and debug rules, MRSEAM and TEE_TCB_SVN
//! floor in its policy), simulated-anchor diagnosis, report data binding,
//! the remaining reference values, then the policy entry for HOSTDATA/MRCONFIGID.

use crate::manifest::{Manifest, Policy};
use pki::{AttestationClaims, Platform, PublicKeyInput};
use std::path::{Path, PathBuf};
use tee::snp::{AmdRoots, Product, SnpError};
use tee::tdx::{QuoteCollateralV3, TdxError};
use tee::{TrustConfig, VerifiedClaims, VerifyError};
use wire::api::{self, Reason};

/// A refusal: the reason code and a one-line explanation for the client and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    /// Sent as `Retry-After` (whole seconds, at least 1) with 429/503 answers.
    pub retry_after: Option<std::time::Duration>,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into(), retry_after: None }
    }

    pub fn retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("simulated anchor dir {path}: {why}")]
    Sim { path: String, why: String },
    #[error("production TEE trust anchors: {0}")]
    Production(String),
    #[error("TDX collateral dir {path}: {source}")]
    Collateral { path: String, source: TdxError },
    #[error("the manifest sets allow_simulated_tee, but the coordinator runs without --sim-anchor DIR")]
    SimRequired,
}

/// tsm-sim's exported anchor (`tsm-sim anchor --out DIR`, SNP and/or TDX).
#[derive(Clone)]
pub struct SimAnchor {
    pub dir: PathBuf,
    /// From `ark.pem` + `ask.pem`.
    pub amd: Vec<AmdRoots>,
    /// From `intel_root.der`.
    pub intel_root: Option<Vec<u8>>,
}

/// Trust material from the command line, independent of the manifest.
#[derive(Clone, Default)]
pub struct Anchors {
    pub sim: Option<SimAnchor>,
    pub tdx_collateral: Option<QuoteCollateralV3>,
    /// `--vcek-cache`: `<CHIP_ID hex>.der` files for reports without a certificate table.
    pub vcek_cache: Option<PathBuf>,
}

impl SimAnchor {
    /// Loads what `tsm-sim anchor` wrote: `ark.pem` + `ask.pem` (SNP) and/or `intel_root.der` (TDX).
    pub fn load(dir: &Path) -> Result<Self, AnchorError> {
        let bad = |why: String| AnchorError::Sim { path: dir.display().to_string(), why };
        let amd = if dir.join("ark.pem").exists() { Self::load_amd(dir)? } else { Vec::new() };
        let intel_path = dir.join("intel_root.der");
        let intel_root = if intel_path.exists() {
            Some(std::fs::read(&intel_path).map_err(|e| bad(format!("{}: {e}", intel_path.display())))?)
        } else {
            None
        };
        if amd.is_empty() && intel_root.is_none() {
            return Err(bad(
                "neither ark.pem (SNP) nor intel_root.der (TDX) found; export it with `tsm-sim anchor`".into()
            ));
        }
        Ok(Self { dir: dir.to_path_buf(), amd, intel_root })
    }

    fn load_amd(dir: &Path) -> Result<Vec<AmdRoots>, AnchorError> {
        let bad = |why: String| AnchorError::Sim { path: dir.display().to_string(), why };
        let read = |name: &str| -> Result<Vec<u8>, AnchorError> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
            wire::pem::certificate(name, &text).map(|c| c.to_vec()).map_err(|e| bad(e.to_string()))
        };
        let ark = read("ark.pem")?;
        let ask = read("ask.pem")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&ark).map_err(|e| bad(format!("ark.pem: {e}")))?;
        let subject = parsed.subject().to_string();
        let product =
            Product::ALL.into_iter().find(|p| subject.contains(&format!("ARK-{}", p.name()))).ok_or_else(|| {
                bad(format!("ark.pem subject {subject:?} names no known product (ARK-Milan/Genoa/Turin)"))
            })?;
        Ok(vec![AmdRoots { product, ark, ask, asvk: None }])
    }
}

impl Anchors {
    /// Adds the tsm-sim anchor in `dir`; its `collateral.json` becomes the TDX collateral
    /// unless collateral was configured already.
    pub fn with_sim(mut self, dir: &Path) -> Result<Self, AnchorError> {
        let sim = SimAnchor::load(dir)?;
        if sim.intel_root.is_some() && self.tdx_collateral.is_none() && dir.join("collateral.json").exists() {
            self.tdx_collateral = Some(Self::load_tdx_collateral(dir)?);
        }
        self.sim = Some(sim);
        Ok(self)
    }

    pub fn load_tdx_collateral(dir: &Path) -> Result<QuoteCollateralV3, AnchorError> {
        tee::tdx::load_collateral_dir(dir)
            .map_err(|source| AnchorError::Collateral { path: dir.display().to_string(), source })
    }
}

/// Verification for one manifest generation.
pub struct Verifier {
    trust: TrustConfig,
    /// Simulated anchors kept only to diagnose `simulated_not_allowed`; never used to accept.
    sim_probe: Option<TrustConfig>,
    anchors: Anchors,
}

fn with_manifest_policy(mut trust: TrustConfig, manifest: &Manifest) -> TrustConfig {
    if let Some(snp) = &manifest.snp {
        trust.snp_policy.allow_debug = snp.allow_debug;
        trust.snp_policy.max_vmpl = Some(snp.max_vmpl);
        trust.snp_policy.min_tcb = snp.minimum_tcb;
        trust.snp_policy.min_launch_tcb = snp.minimum_launch_tcb;
        trust.snp_policy.chip_ids = snp.chip_ids.clone();
        trust.snp_policy.allow_migration_agent = snp.allow_migration_agent;
        trust.snp_policy.measurements = snp.measurements.clone();
    }
    if let Some(tdx) = &manifest.tdx {
        trust.tdx_policy.allow_debug = tdx.allow_debug;
        trust.tdx_policy.accepted_tcb_statuses = tdx.accepted_tcb_statuses.clone();
        trust.tdx_policy.mr_td = tdx.mrtds.clone();
        trust.tdx_policy.min_tee_tcb_svn = tdx.minimum_tee_tcb_svn;
        trust.tdx_policy.mr_seam = tdx.mrseams.clone();
    }
    trust
}

impl Verifier {
    /// The cheap configuration check of [`Verifier::new`], without building trust stores or logging.
    pub fn check_config(manifest: &Manifest, anchors: &Anchors) -> Result<(), AnchorError> {
        if manifest.doc.allow_simulated_tee && anchors.sim.is_none() {
            return Err(AnchorError::SimRequired);
        }
        Ok(())
    }

    pub fn new(manifest: &Manifest, anchors: &Anchors) -> Result<Self, AnchorError> {
        let production = TrustConfig::production().map_err(|e| AnchorError::Production(e.to_string()))?;
        let (trust, sim_probe) = match (&anchors.sim, manifest.doc.allow_simulated_tee) {
            (Some(SimAnchor { amd, intel_root, dir }), true) => {
                tracing::warn!(
                    PODMESH_EVENT = "coordinator_simulated_tee_allowed",
                    anchor = %dir.display(),
                    "MANIFEST ALLOWS SIMULATED TEE EVIDENCE signed by the tsm-sim anchor in {}: certificates prove NOTHING about real hardware",
                    dir.display()
                );
                (production.with_simulated_anchors(amd.clone(), intel_root.clone()), None)
            }
            (None, true) => return Err(AnchorError::SimRequired),
            (Some(SimAnchor { amd, intel_root, .. }), false) => {
                let probe = production.clone().with_simulated_anchors(amd.clone(), intel_root.clone());
                (production, Some(with_manifest_policy(probe, manifest)))
            }
            (None, false) => (production, None),
        };
        Ok(Self { trust: with_manifest_policy(trust, manifest), sim_probe, anchors: anchors.clone() })
    }

    fn evidence(&self, evidence: &api::Evidence) -> Result<tee::Evidence, Rejection> {
        match evidence {
            api::Evidence::Snp { report, cert_table } => {
                let vek = match cert_table {
                    Some(_) => None,
                    None => self.cached_vcek(report)?,
                };
                Ok(tee::Evidence::Snp { report: report.clone(), vek, cert_table: cert_table.clone() })
            }
            api::Evidence::Tdx { quote } => {
                let collateral = self.anchors.tdx_collateral.clone().ok_or_else(|| {
                    Rejection::new(
                        Reason::PlatformNotAllowed,
                        "TDX quote, but the coordinator has no TDX collateral (--tdx-collateral)",
                    )
                })?;
                Ok(tee::Evidence::Tdx { quote: quote.clone(), collateral: Box::new(collateral) })
            }
        }
    }

    fn cached_vcek(&self, report: &[u8]) -> Result<Option<Vec<u8>>, Rejection> {
        let Some(dir) = &self.anchors.vcek_cache else { return Ok(None) };
        let parsed =
            tee::snp::SnpReport::parse(report).map_err(|e| Rejection::new(Reason::EvidenceInvalid, e.to_string()))?;
        let path = dir.join(format!("{}.der", hex::encode(parsed.chip_id())));
        match std::fs::read(&path) {
            Ok(der) => Ok(Some(der)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Rejection::new(Reason::Internal, format!("VCEK cache {}: {e}", path.display()))),
        }
    }

    /// Checks everything; on success returns the claims for the certificate and the policy entry.
    pub fn check<'m>(
        &self,
        manifest: &'m Manifest,
        evidence: &api::Evidence,
        public_key: &PublicKeyInput,
        nonce: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<(AttestationClaims, &'m Policy), Rejection> {
        let platform_configured = match evidence {
            api::Evidence::Snp { .. } => manifest.snp.is_some(),
            api::Evidence::Tdx { .. } => manifest.tdx.is_some(),
        };
        if !platform_configured {
            return Err(Rejection::new(
                Reason::PlatformNotAllowed,
                "the manifest has no reference values for this platform",
            ));
        }
        let spki = public_key.spki_der().map_err(|e| Rejection::new(Reason::InvalidPublicKey, e.to_string()))?;
        let tee_evidence = self.evidence(evidence)?;
        let verified = match tee::verify(&tee_evidence, &self.trust, now) {
            Ok(v) => v,
            Err(err) => {
                let rejection = map_verify_error(&err);
                if rejection.reason == Reason::EvidenceInvalid {
                    if let Some(probe) = &self.sim_probe {
                        if map_verify_error_or_ok(tee::verify(&tee_evidence, probe, now)) != Reason::EvidenceInvalid {
                            return Err(Rejection::new(
                                Reason::SimulatedNotAllowed,
                                "evidence is signed by the simulated tsm-sim anchor and the manifest does not set allow_simulated_tee",
                            ));
                        }
                    }
                }
                return Err(rejection);
            }
        };
        let expected = api::report_data(&spki, nonce);
        if verified.report_data != hex::encode(expected) {
            return Err(Rejection::new(
                Reason::ReportDataMismatch,
                "report data is not SHA-512(public key SPKI DER || nonce): evidence bound to another key or nonce",
            ));
        }
        check_reference_values(manifest, &verified)?;
        let host_data = verified.policy_key_bytes();
        let policy = manifest.policies.get(&host_data).ok_or_else(|| {
            Rejection::new(
                Reason::UnknownHostData,
                format!("no manifest policy entry for host data {}", verified.policy_key),
            )
        })?;
        let claims = to_pki_claims(&verified, &policy.name)?;
        Ok((claims, policy))
    }
}

fn map_verify_error_or_ok(result: Result<VerifiedClaims, VerifyError>) -> Reason {
    match result {
        Ok(_) => Reason::SimulatedNotAllowed,
        Err(e) => map_verify_error(&e).reason,
    }
}

fn map_verify_error(err: &VerifyError) -> Rejection {
    let reason = match err {
        VerifyError::Snp(e) => match e {
            SnpError::DebugNotAllowed => Reason::PolicyMismatch,
            SnpError::VmplTooHigh { .. } => Reason::VmplNotAllowed,
            SnpError::TcbTooLow { .. } | SnpError::LaunchTcbTooLow { .. } => Reason::TcbTooLow,
            SnpError::MigrationAgentNotAllowed { .. } => Reason::PolicyMismatch,
            SnpError::ChipIdNotAllowed { .. } => Reason::ProductNotAllowed,
            SnpError::MeasurementNotAllowed { .. } => Reason::MeasurementMismatch,
            SnpError::HostDataMismatch { .. } => Reason::UnknownHostData,
            SnpError::ReportDataMismatch => Reason::ReportDataMismatch,
            _ => Reason::EvidenceInvalid,
        },
        VerifyError::Tdx(e) => match e {
            TdxError::TcbStatusNotAccepted { .. } | TdxError::TeeTcbSvnTooLow { .. } => Reason::TcbTooLow,
            TdxError::MrSeamNotAllowed { .. } => Reason::MeasurementMismatch,
            TdxError::MrTdNotAllowed { .. } => Reason::MeasurementMismatch,
            TdxError::MrConfigIdMismatch { .. } => Reason::UnknownHostData,
            TdxError::ReportDataMismatch => Reason::ReportDataMismatch,
            TdxError::DebugNotAllowed => Reason::PolicyMismatch,
            _ => Reason::EvidenceInvalid,
        },
        _ => Reason::EvidenceInvalid,
    };
    Rejection::new(reason, err.to_string())
}

fn check_reference_values(manifest: &Manifest, v: &VerifiedClaims) -> Result<(), Rejection> {
    match v.platform {
        tee::Platform::SevSnp => {
            let Some(snp) = &manifest.snp else {
                return Err(Rejection::new(Reason::PlatformNotAllowed, "the manifest has no SNP reference values"));
            };
            if !snp.products.is_empty() && !snp.products.iter().any(|p| p.name() == v.product) {
                return Err(Rejection::new(
                    Reason::ProductNotAllowed,
                    format!("SNP product {} is not in the manifest", v.product),
                ));
            }
            if let Some(want) = snp.guest_policy {
                let got = parse_hex_u64(&v.policy)?;
                if got != want {
                    return Err(Rejection::new(
                        Reason::PolicyMismatch,
                        format!("SNP guest policy {got:#x}, manifest requires {want:#x}"),
                    ));
                }
            }
        }
        tee::Platform::Tdx => {
            let Some(tdx) = &manifest.tdx else {
                return Err(Rejection::new(Reason::PlatformNotAllowed, "the manifest has no TDX reference values"));
            };
            for (i, want) in tdx.rtmrs.iter().enumerate() {
                if let Some(want) = want {
                    let got = v.rtmrs.get(i).map(String::as_str).unwrap_or("");
                    if got != hex::encode(want) {
                        return Err(Rejection::new(
                            Reason::RtmrMismatch,
                            format!("RTMR{i} {got} differs from the manifest"),
                        ));
                    }
                }
            }
            if let Some(want) = tdx.attributes {
                if v.policy != hex::encode(want) {
                    return Err(Rejection::new(
                        Reason::PolicyMismatch,
                        format!("TDATTRIBUTES {} differ from the manifest {}", v.policy, hex::encode(want)),
                    ));
                }
            }
            if let Some(want) = tdx.xfam {
                let got = v.xfam.as_deref().unwrap_or("");
                if got != hex::encode(want) {
                    return Err(Rejection::new(
                        Reason::PolicyMismatch,
                        format!("XFAM {got} differs from the manifest {}", hex::encode(want)),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn parse_hex_u64(text: &str) -> Result<u64, Rejection> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16)
        .map_err(|_| Rejection::new(Reason::Internal, format!("verifier returned a non-hex value {text:?}")))
}

fn hex_field(name: &str, text: &str) -> Result<Vec<u8>, Rejection> {
    hex::decode(text)
        .map_err(|_| Rejection::new(Reason::Internal, format!("verifier returned non-hex {name} {text:?}")))
}

/// The verified claims in the certificate's encoding (see the `pki` crate docs).
fn to_pki_claims(v: &VerifiedClaims, workload: &str) -> Result<AttestationClaims, Rejection> {
    let (platform, tcb, policy) = match v.platform {
        tee::Platform::SevSnp => (
            Platform::Snp,
            parse_hex_u64(&v.tcb.raw)?.to_le_bytes().to_vec(),
            parse_hex_u64(&v.policy)?.to_le_bytes().to_vec(),
        ),
        tee::Platform::Tdx => {
            (Platform::Tdx, hex_field("TEE_TCB_SVN", &v.tcb.raw)?, hex_field("TDATTRIBUTES", &v.policy)?)
        }
    };
    Ok(AttestationClaims {
        platform,
        measurement: hex_field("measurement", &v.measurement)?,
        runtime_measurements: v.rtmrs.iter().map(|r| hex_field("RTMR", r)).collect::<Result<_, _>>()?,
        host_data: hex_field("host data", &v.policy_key)?,
        // The manifest is keyed by this value; podmesh guests only run the mesh when it is
        // the digest of their initdata (see the `initdata` crate).
        initdata_digest: Some(hex_field("host data", &v.policy_key)?),
        report_data: hex_field("report data", &v.report_data)?,
        tcb,
        policy,
        simulated: v.simulated,
        workload: workload.to_owned(),
    })
}
