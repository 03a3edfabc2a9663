//! AMD SEV-SNP: report parsing, VCEK/VLEK chain verification against AMD's roots, and the
//! checks the `sev` crate leaves to its users (certificate validity, TCB and hwID binding,
//! product, policy).

mod chain;
mod policy;
mod report;

pub use chain::{AmdRoots, VekInfo};
pub use policy::{MinTcb, SnpPolicy, POLICY_DEBUG, POLICY_MIGRATE_MA};
pub use report::{SigningKey, SnpReport, AZURE_HCL_OFFSET, REPORT_LEN, SIGNED_LEN};

use crate::certtable::{CertKind, CertTable};

/// AMD EPYC generations with SEV-SNP roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    fn from_cpuid(family: u8, model: u8) -> Result<Self, SnpError> {
        match sev::Generation::identify_cpu(family, model) {
            Ok(sev::Generation::Milan) => Ok(Product::Milan),
            Ok(sev::Generation::Genoa) => Ok(Product::Genoa),
            Ok(sev::Generation::Turin) => Ok(Product::Turin),
            _ => Err(SnpError::UnknownProduct { family, model }),
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    #[error("SNP report: {len} bytes, expected exactly 1184 (0x4A0)")]
    ReportLength { len: usize },
    #[error("SNP report: version {version} is not supported (2, 3 and 5 are)")]
    UnsupportedVersion { version: u32 },
    #[error("SNP report: signature algorithm {sig_algo} is not ECDSA P-384 with SHA-384 (1)")]
    UnsupportedSignatureAlgorithm { sig_algo: u32 },
    #[error("SNP report: KEY_INFO signing key {signing_key} means the report is unsigned or signed by an unknown key")]
    NoSigningKey { signing_key: u32 },
    #[error("SNP report: CPUID family {family:#x} model {model:#x} is not Milan, Genoa or Turin")]
    UnknownProduct { family: u8, model: u8 },
    #[error(
        "SNP report: non-zero bytes in the unsigned signature padding at {offset:#x}: modified or non-canonical report"
    )]
    NonCanonicalSignature { offset: usize },
    #[error("SNP report: does not parse: {0}")]
    Parse(String),
    #[error("SNP report: not an Azure HCL report (no HCLA magic)")]
    NotAzureHcl,
    #[error("SNP certificate table (auxblob): {0}")]
    CertTable(#[from] crate::certtable::CertTableError),
    #[error("SNP: no {kind} certificate supplied (pass it explicitly or in the certificate table)")]
    MissingVek { kind: SigningKey },
    #[error("SNP: {what} certificate does not parse: {reason}")]
    BadCertificate { what: &'static str, reason: String },
    #[error("SNP: no trusted AMD roots configured for {product}")]
    NoRootsForProduct { product: Product },
    #[error("SNP: trusted AMD root for {product} is invalid: {reason}")]
    BadRoot { product: Product, reason: String },
    #[error("SNP: the {product} roots have no ASVK, so a VLEK cannot be verified")]
    NoAsvk { product: Product },
    #[error(
        "SNP: the {kind} certificate is not signed by AMD's {expected} key for any trusted product (issuer {issuer:?})"
    )]
    VekNotSignedByAmd { kind: SigningKey, expected: &'static str, issuer: String },
    #[error("SNP: wrong product: the report is from {report} but its {kind} chains to the {chain} roots")]
    WrongProduct { report: Product, chain: Product, kind: SigningKey },
    #[error("SNP: the certificate table's {kind} ({subject:?}) is not the trusted {product} certificate")]
    ChainMismatch { kind: CertKind, subject: String, product: Product },
    #[error("SNP: the {kind} certificate names product {found:?}, but the chain is {product}")]
    ProductNameMismatch { kind: SigningKey, found: String, product: Product },
    #[error("SNP: {which} certificate ({subject:?}) is not valid at {now}: valid {not_before} .. {not_after}")]
    CertificateExpired { which: &'static str, subject: String, now: String, not_before: String, not_after: String },
    #[error("SNP: report signature does not verify with the {kind} public key")]
    BadReportSignature { kind: SigningKey },
    #[error("SNP: TCB mismatch: {kind} certificate {component} SPL is {cert}, report REPORTED_TCB has {report}")]
    TcbMismatch { kind: SigningKey, component: &'static str, cert: u8, report: u8 },
    #[error("SNP: the {kind} certificate has no {component} SPL extension, so the TCB cannot be checked")]
    MissingTcbExtension { kind: SigningKey, component: &'static str },
    #[error("SNP: hwID mismatch: the VCEK is for chip {cert}, the report's CHIP_ID is {report}")]
    HwIdMismatch { cert: String, report: String },
    #[error("SNP: the report's CHIP_ID is masked (all zero), so it cannot be bound to the VCEK")]
    ChipIdMasked,
    #[error("SNP policy: debugging is enabled in the guest policy (POLICY bit 19) and not allowed")]
    DebugNotAllowed,
    #[error("SNP policy: VMPL {vmpl} is above the allowed maximum {max}")]
    VmplTooHigh { vmpl: u32, max: u32 },
    #[error("SNP policy: REPORTED_TCB {component} SPL {found} is below the required minimum {min}")]
    TcbTooLow { component: &'static str, found: u8, min: u8 },
    #[error("SNP policy: LAUNCH_TCB {component} SPL {found} is below the required minimum {min}: the guest was launched by firmware older than the manifest allows")]
    LaunchTcbTooLow { component: &'static str, found: u8, min: u8 },
    #[error("SNP policy: the guest POLICY {policy:#x} allows a migration agent (MIGRATE_MA, bit 18), which can export the guest's memory, and the manifest does not allow it")]
    MigrationAgentNotAllowed { policy: u64 },
    #[error("SNP policy: CHIP_ID {found} is not one of the {allowed} allowed chips")]
    ChipIdNotAllowed { found: String, allowed: usize },
    #[error("SNP policy: measurement {found} is not one of the {allowed} allowed measurements")]
    MeasurementNotAllowed { found: String, allowed: usize },
    #[error("SNP policy: HOST_DATA {found} differs from the expected {expected}")]
    HostDataMismatch { found: String, expected: String },
    #[error("SNP policy: REPORT_DATA does not match the expected value (nonce/key binding)")]
    ReportDataMismatch,
}

/// The result of a successful SNP verification.
#[derive(Debug, Clone)]
pub struct VerifiedSnp {
    pub report: SnpReport,
    pub product: Product,
    pub vek: VekInfo,
}

/// Verifies a report: VEK from `vek_der` or the certificate table, chain to `roots`, the
/// report signature over the exact bytes, TCB/hwID binding, then `policy`.
pub fn verify(
    report: &SnpReport,
    vek_der: Option<&[u8]>,
    cert_table: Option<&[u8]>,
    roots: &[AmdRoots],
    policy: &SnpPolicy,
    now: time::OffsetDateTime,
) -> Result<VerifiedSnp, SnpError> {
    let table = cert_table.map(CertTable::parse).transpose()?;
    let table_vek = table.as_ref().and_then(|t| {
        t.get(match report.signing_key {
            SigningKey::Vcek => CertKind::Vcek,
            SigningKey::Vlek => CertKind::Vlek,
        })
    });
    let vek_der = vek_der.or(table_vek).ok_or(SnpError::MissingVek { kind: report.signing_key })?;
    let (product, vek) = chain::verify_chain(report, vek_der, table.as_ref(), roots, now)?;
    // Binding first: a VCEK of another chip or TCB then fails with that precise reason
    // instead of only "bad signature".
    chain::check_binding(report, &vek, product)?;
    chain::verify_report_signature(report, &vek)?;
    policy.check(report)?;
    Ok(VerifiedSnp { report: report.clone(), product, vek })
}

#[cfg(test)]
mod tests;
