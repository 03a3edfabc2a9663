//! SEV-SNP attestation report parsing (versions 2, 3 and 5) on top of the `sev` crate.

use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

use super::{Product, SnpError};

/// Size of the report the firmware returns (the configfs-tsm `outblob`).
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes 0..0x2A0.
pub const SIGNED_LEN: usize = 0x2A0;
/// Azure's HCL report embeds the SNP report at this offset.
pub const AZURE_HCL_OFFSET: usize = 0x20;

const CHIP_ID: std::ops::Range<usize> = 0x1A0..0x1E0;
const REPORTED_TCB: std::ops::Range<usize> = 0x180..0x188;
const SIGNING_KEY_SHIFT: u32 = 2;

/// Which key signed the report (KEY_INFO.SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    Vcek,
    Vlek,
}

/// A parsed report plus the exact bytes that were signed.
#[derive(Debug, Clone)]
pub struct SnpReport {
    pub raw: Vec<u8>,
    pub report: AttestationReport,
    /// From CPUID fields (v3+); `None` for v2, where the certificate chain decides.
    pub product: Option<Product>,
    pub signing_key: SigningKey,
}

impl SnpReport {
    /// Parses exactly one report of [`REPORT_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnpError> {
        if bytes.len() != REPORT_LEN {
            return Err(SnpError::ReportLength { len: bytes.len() });
        }
        let version = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if !matches!(version, 2 | 3 | 5) {
            return Err(SnpError::UnsupportedVersion { version });
        }
        let sig_algo = u32::from_le_bytes([bytes[0x34], bytes[0x35], bytes[0x36], bytes[0x37]]);
        if sig_algo != 1 {
            return Err(SnpError::UnsupportedSignatureAlgorithm { sig_algo });
        }
        let key_info = u32::from_le_bytes([bytes[0x48], bytes[0x49], bytes[0x4A], bytes[0x4B]]);
        let signing_key = match (key_info >> SIGNING_KEY_SHIFT) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            other => return Err(SnpError::NoSigningKey { signing_key: other }),
        };
        // r and s are 72-byte little-endian fields holding 48-byte P-384 scalars, followed by
        // reserved bytes; none of that is signed, so anything non-zero there is rejected
        // instead of letting modified evidence pass as "the same" report.
        let unsigned_tail =
            [SIGNED_LEN + 48..SIGNED_LEN + 72, SIGNED_LEN + 72 + 48..SIGNED_LEN + 144, SIGNED_LEN + 144..REPORT_LEN];
        if let Some(range) = unsigned_tail.into_iter().find(|r| bytes[r.clone()].iter().any(|&b| b != 0)) {
            return Err(SnpError::NonCanonicalSignature { offset: range.start });
        }
        // v3+ carry CPUID family/model: a specific error for unknown parts before `sev` runs.
        let product = if version >= 3 { Some(Product::from_cpuid(bytes[0x188], bytes[0x189])?) } else { None };
        // v2 reports predate Turin, so they always use the Milan/Genoa TCB layout. `sev`
        // guesses the layout from CHIP_ID for v2 and refuses a masked (all-zero) one, so it
        // parses a copy with a neutral CHIP_ID; the real one is put back afterwards.
        let report = if version == 2 {
            let mut copy = bytes.to_vec();
            copy[CHIP_ID.end - 1] |= 1;
            let mut report = AttestationReport::from_bytes(&copy).map_err(|e| SnpError::Parse(e.to_string()))?;
            report.chip_id.copy_from_slice(&bytes[CHIP_ID]);
            report
        } else {
            AttestationReport::from_bytes(bytes).map_err(|e| SnpError::Parse(e.to_string()))?
        };
        Ok(SnpReport { raw: bytes.to_vec(), report, product, signing_key })
    }

    /// Extracts the SNP report from an Azure HCL report (`hcl-report.bin`, vTPM NV index).
    pub fn parse_azure_hcl(hcl: &[u8]) -> Result<Self, SnpError> {
        if hcl.get(..4) != Some(b"HCLA") {
            return Err(SnpError::NotAzureHcl);
        }
        let report = hcl
            .get(AZURE_HCL_OFFSET..AZURE_HCL_OFFSET + REPORT_LEN)
            .ok_or(SnpError::ReportLength { len: hcl.len().saturating_sub(AZURE_HCL_OFFSET) })?;
        Self::parse(report)
    }

    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// REPORTED_TCB as the raw little-endian u64 the firmware wrote.
    pub fn reported_tcb_raw(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.raw[REPORTED_TCB]);
        u64::from_le_bytes(b)
    }

    pub fn chip_id(&self) -> &[u8; 64] {
        &self.report.chip_id
    }

    /// POLICY bit 19: the guest allows the hypervisor to debug it.
    pub fn debug_allowed(&self) -> bool {
        u64::from(self.report.policy) & super::POLICY_DEBUG != 0
    }
}

impl std::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
        })
    }
}
