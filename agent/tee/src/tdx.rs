//! Intel TDX quotes (v4, v5 with TD1.0/TD1.5 bodies): parsing, collateral loading, and
//! verification with `dcap-qvl` at a caller-given time.
//!
//! Besides dcap-qvl's signature, collateral and TCB-status checks, [`TdxPolicy`] holds what
//! go-tdx-guest's validator offers and Contrast sets: MRTD, a componentwise floor for
//! TEE_TCB_SVN (the TDX module's SVNs), allowed MRSEAMs (the TDX module's measurement), and
//! Intel's QE vendor ID (checked first, so a quote from another quoting enclave is named as
//! such instead of failing somewhere inside dcap-qvl).
//!
//! The quote's own length comes from its header and signature-data length; bytes after it
//! (configfs buffers, zero padding, test junk) are tolerated and never passed on.

use std::path::Path;

pub use dcap_qvl::QuoteCollateralV3;

const HEADER_LEN: usize = 48;
const TD10_LEN: usize = 584;
const TD15_LEN: usize = 648;
const TEE_TYPE_TDX: u32 = 0x81;
const QE_VENDOR_ID_AT: usize = 12;
/// Intel's DCAP quoting enclave, 939a7233-f79c-4ca9-940a-0db3957f0607 (the only QE whose
/// quotes dcap-qvl can verify).
pub const INTEL_QE_VENDOR_ID: [u8; 16] = dcap_qvl::INTEL_QE_VENDOR_ID;

/// The TD report fields a verifier cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    /// TD1.5 only.
    pub tee_tcb_svn2: Option<[u8; 16]>,
    pub mr_service_td: Option<[u8; 48]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuote {
    /// Exactly the quote, without trailing bytes.
    pub raw: Vec<u8>,
    pub version: u16,
    /// 2 = TD1.0, 3 = TD1.5 (v4 quotes are always TD1.0).
    pub body_type: u16,
    /// Header QE_VENDOR_ID: which quoting enclave signed.
    pub qe_vendor_id: [u8; 16],
    pub td: TdReport,
    pub trailing: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TdxError {
    #[error("TDX quote: truncated: {len} bytes, need {need} for the {what}")]
    Truncated { len: usize, need: usize, what: &'static str },
    #[error("TDX quote: version {version} is not supported (4 and 5 are)")]
    UnsupportedVersion { version: u16 },
    #[error("TDX quote: TEE type {tee_type:#x} is not TDX (0x81)")]
    NotTdx { tee_type: u32 },
    #[error("TDX quote: v5 body type {body_type} with size {size} is not a TD1.0 (2, 584) or TD1.5 (3, 648) report")]
    BadBody { body_type: u16, size: u32 },
    #[error("TDX collateral: {piece} is missing ({path})")]
    MissingCollateral { piece: &'static str, path: String },
    #[error("TDX collateral: {piece} is malformed: {reason}")]
    BadCollateral { piece: &'static str, reason: String },
    #[error("TDX collateral: {piece} is not valid at {now}: valid {from} .. {until}")]
    CollateralExpired { piece: &'static str, now: String, from: String, until: String },
    #[error("TDX: no TCB level in the TCB info matches the platform (TCB below every level Intel lists, or a mismatched FMSPC)")]
    TcbLevelNotFound,
    #[error("TDX: a signature does not verify (quote, QE report, PCK chain or collateral): {0}")]
    BadSignature(String),
    #[error("TDX: a certificate in the PCK or collateral chain is not valid at the given time: {0}")]
    CertificateExpired(String),
    #[error("TDX: a certificate in the chain is revoked: {0}")]
    Revoked(String),
    #[error("TDX: quote verification failed: {0}")]
    Verification(String),
    #[error("TDX policy: TCB status {status} is not accepted (accepted: {accepted})")]
    TcbStatusNotAccepted { status: String, accepted: String },
    #[error("TDX policy: MRTD {found} is not one of the {allowed} allowed values")]
    MrTdNotAllowed { found: String, allowed: usize },
    #[error("TDX policy: MRCONFIGID {found} differs from the expected {expected}")]
    MrConfigIdMismatch { found: String, expected: String },
    #[error("TDX policy: REPORTDATA does not match the expected value (nonce/key binding)")]
    ReportDataMismatch,
    #[error("TDX: QE vendor ID {found} is not Intel's ({expected}): the quote is not from Intel's quoting enclave")]
    QeVendorNotIntel { found: String, expected: String },
    #[error("TDX policy: TEE_TCB_SVN {found} is below the required minimum {min} at byte {index} (the TDX module is older than the manifest allows)")]
    TeeTcbSvnTooLow { found: String, min: String, index: usize },
    #[error("TDX policy: MRSEAM {found} (the TDX module's measurement) is not one of the {allowed} allowed values")]
    MrSeamNotAllowed { found: String, allowed: usize },
    #[error("TDX policy: the TD is debuggable (TDATTRIBUTES.DEBUG) and debug is not allowed")]
    DebugNotAllowed,
}

fn take<const N: usize>(b: &[u8], at: &mut usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[*at..*at + N]);
    *at += N;
    out
}

fn need(bytes: &[u8], n: usize, what: &'static str) -> Result<(), TdxError> {
    if bytes.len() < n {
        return Err(TdxError::Truncated { len: bytes.len(), need: n, what });
    }
    Ok(())
}

impl TdxQuote {
    pub fn parse(bytes: &[u8]) -> Result<Self, TdxError> {
        need(bytes, HEADER_LEN, "header")?;
        let version = u16::from_le_bytes([bytes[0], bytes[1]]);
        let tee_type = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let (body_type, body_at, body_len) = match version {
            4 => (2, HEADER_LEN, TD10_LEN),
            5 => {
                need(bytes, HEADER_LEN + 6, "v5 body descriptor")?;
                let body_type = u16::from_le_bytes([bytes[48], bytes[49]]);
                let size = u32::from_le_bytes([bytes[50], bytes[51], bytes[52], bytes[53]]);
                match (body_type, size) {
                    (2, 584) => (2, HEADER_LEN + 6, TD10_LEN),
                    (3, 648) => (3, HEADER_LEN + 6, TD15_LEN),
                    _ => return Err(TdxError::BadBody { body_type, size }),
                }
            }
            _ => return Err(TdxError::UnsupportedVersion { version }),
        };
        if tee_type != TEE_TYPE_TDX {
            return Err(TdxError::NotTdx { tee_type });
        }
        let sig_len_at = body_at + body_len;
        need(bytes, sig_len_at + 4, "TD report body")?;
        let sig_len = u32::from_le_bytes([
            bytes[sig_len_at],
            bytes[sig_len_at + 1],
            bytes[sig_len_at + 2],
            bytes[sig_len_at + 3],
        ]) as usize;
        let total = sig_len_at + 4 + sig_len;
        need(bytes, total, "signature data")?;

        let b = bytes;
        let qe_vendor_id = take::<16>(b, &mut QE_VENDOR_ID_AT.to_owned());
        let mut at = body_at;
        let tee_tcb_svn = take::<16>(b, &mut at);
        let mr_seam = take::<48>(b, &mut at);
        let _mr_signer_seam = take::<48>(b, &mut at);
        let _seam_attributes = take::<8>(b, &mut at);
        let td_attributes = take::<8>(b, &mut at);
        let xfam = take::<8>(b, &mut at);
        let mr_td = take::<48>(b, &mut at);
        let mr_config_id = take::<48>(b, &mut at);
        let mr_owner = take::<48>(b, &mut at);
        let mr_owner_config = take::<48>(b, &mut at);
        let rtmr = [take::<48>(b, &mut at), take::<48>(b, &mut at), take::<48>(b, &mut at), take::<48>(b, &mut at)];
        let report_data = take::<64>(b, &mut at);
        let (tee_tcb_svn2, mr_service_td) =
            if body_type == 3 { (Some(take::<16>(b, &mut at)), Some(take::<48>(b, &mut at))) } else { (None, None) };
        Ok(TdxQuote {
            raw: bytes[..total].to_vec(),
            version,
            body_type,
            qe_vendor_id,
            td: TdReport {
                tee_tcb_svn,
                mr_seam,
                td_attributes,
                xfam,
                mr_td,
                mr_config_id,
                mr_owner,
                mr_owner_config,
                rtmr,
                report_data,
                tee_tcb_svn2,
                mr_service_td,
            },
            trailing: bytes.len() - total,
        })
    }

    /// TDATTRIBUTES.DEBUG (bit 0).
    pub fn debug(&self) -> bool {
        self.td.td_attributes[0] & 1 != 0
    }
}

/// Reference values for TDX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxPolicy {
    /// TCB statuses dcap-qvl may report for an accepted quote.
    pub accepted_tcb_statuses: Vec<String>,
    pub allow_debug: bool,
    /// Allowed MRTDs (empty: any; the manifest decides).
    pub mr_td: Vec<[u8; 48]>,
    /// Componentwise floor for TEE_TCB_SVN (each byte at least this one's).
    pub min_tee_tcb_svn: Option<[u8; 16]>,
    /// Allowed MRSEAMs (empty: any).
    pub mr_seam: Vec<[u8; 48]>,
    pub mr_config_id: Option<[u8; 48]>,
    pub report_data: Option<[u8; 64]>,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        TdxPolicy {
            accepted_tcb_statuses: vec!["UpToDate".into(), "SWHardeningNeeded".into()],
            allow_debug: false,
            mr_td: Vec::new(),
            min_tee_tcb_svn: None,
            mr_seam: Vec::new(),
            mr_config_id: None,
            report_data: None,
        }
    }
}

/// What a successful TDX verification yields.
#[derive(Debug, Clone)]
pub struct VerifiedTdx {
    pub quote: TdxQuote,
    pub tcb_status: String,
    pub advisory_ids: Vec<String>,
}

/// Loads collateral from a directory: either `collateral.json` in dcap-qvl's format (byte
/// fields hex-encoded), or Intel PCS responses saved as files:
/// `tcb_info.json` (`{"tcbInfo":..,"signature":..}`), `qe_identity.json`
/// (`{"enclaveIdentity":..,"signature":..}`), `tcb_info_issuer_chain.pem`,
/// `qe_identity_issuer_chain.pem` (optional, defaults to the TCB info chain), `pck_crl.der`,
/// `pck_crl_issuer_chain.pem`, `root_ca_crl.der`.
pub fn load_collateral_dir(dir: &Path) -> Result<QuoteCollateralV3, TdxError> {
    let json = dir.join("collateral.json");
    if json.exists() {
        let text = read_text("collateral.json", &json)?;
        return collateral_from_dcap_json(&text);
    }
    let tcb = read_text("tcb_info.json", &dir.join("tcb_info.json"))?;
    let qe = read_text("qe_identity.json", &dir.join("qe_identity.json"))?;
    let tcb_chain = read_text("tcb_info_issuer_chain.pem", &dir.join("tcb_info_issuer_chain.pem"))?;
    let qe_chain_path = dir.join("qe_identity_issuer_chain.pem");
    let qe_chain = if qe_chain_path.exists() {
        read_text("qe_identity_issuer_chain.pem", &qe_chain_path)?
    } else {
        tcb_chain.clone()
    };
    collateral_from_pcs(
        &tcb,
        &qe,
        tcb_chain,
        qe_chain,
        read_bytes("pck_crl.der", &dir.join("pck_crl.der"))?,
        read_text("pck_crl_issuer_chain.pem", &dir.join("pck_crl_issuer_chain.pem"))?,
        read_bytes("root_ca_crl.der", &dir.join("root_ca_crl.der"))?,
    )
}

fn read_bytes(piece: &'static str, path: &Path) -> Result<Vec<u8>, TdxError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TdxError::MissingCollateral { piece, path: path.display().to_string() },
        _ => TdxError::BadCollateral { piece, reason: format!("{}: {e}", path.display()) },
    })
}

fn read_text(piece: &'static str, path: &Path) -> Result<String, TdxError> {
    String::from_utf8(read_bytes(piece, path)?)
        .map_err(|_| TdxError::BadCollateral { piece, reason: "not UTF-8".into() })
}

/// dcap-qvl's collateral JSON (as in its `sample/*_collateral.json`).
pub fn collateral_from_dcap_json(text: &str) -> Result<QuoteCollateralV3, TdxError> {
    let bad = |piece: &'static str, reason: String| TdxError::BadCollateral { piece, reason };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad("collateral.json", e.to_string()))?;
    let s = |k: &'static str| -> Result<String, TdxError> {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or(TdxError::MissingCollateral { piece: k, path: "collateral.json".into() })
    };
    let h = |k: &'static str| -> Result<Vec<u8>, TdxError> {
        hex::decode(s(k)?.trim_start_matches("0x")).map_err(|e| bad(k, e.to_string()))
    };
    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain: s("pck_crl_issuer_chain")?,
        root_ca_crl: h("root_ca_crl")?,
        pck_crl: h("pck_crl")?,
        tcb_info_issuer_chain: s("tcb_info_issuer_chain")?,
        tcb_info: s("tcb_info")?,
        tcb_info_signature: h("tcb_info_signature")?,
        qe_identity_issuer_chain: s("qe_identity_issuer_chain")?,
        qe_identity: s("qe_identity")?,
        qe_identity_signature: h("qe_identity_signature")?,
        pck_certificate_chain: None,
    })
}

/// Builds collateral from Intel PCS response bodies; the signed JSON objects are kept
/// byte-exact (the signature covers their raw text).
pub fn collateral_from_pcs(
    tcb_info_response: &str,
    qe_identity_response: &str,
    tcb_info_issuer_chain: String,
    qe_identity_issuer_chain: String,
    pck_crl: Vec<u8>,
    pck_crl_issuer_chain: String,
    root_ca_crl: Vec<u8>,
) -> Result<QuoteCollateralV3, TdxError> {
    let (tcb_info, tcb_info_signature) = signed_object("tcb_info.json", tcb_info_response, "tcbInfo")?;
    let (qe_identity, qe_identity_signature) =
        signed_object("qe_identity.json", qe_identity_response, "enclaveIdentity")?;
    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain,
        root_ca_crl,
        pck_crl,
        tcb_info_issuer_chain,
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain,
        qe_identity,
        qe_identity_signature,
        pck_certificate_chain: None,
    })
}

/// Returns the raw text of `key`'s object value and the hex-decoded `signature`.
fn signed_object(piece: &'static str, text: &str, key: &str) -> Result<(String, Vec<u8>), TdxError> {
    let bad = |reason: String| TdxError::BadCollateral { piece, reason };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let sig = v.get("signature").and_then(|s| s.as_str()).ok_or_else(|| bad("no \"signature\" string".into()))?;
    let sig = hex::decode(sig).map_err(|e| bad(format!("signature: {e}")))?;
    let needle = format!("\"{key}\"");
    let start = text.find(&needle).ok_or_else(|| bad(format!("no {needle} object")))?;
    let open = start + text[start..].find('{').ok_or_else(|| bad(format!("{needle} is not an object")))?;
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, c) in text[open..].char_indices() {
        match (in_str, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_str = false,
            (false, _, '"') => in_str = true,
            (false, _, '{') => depth += 1,
            (false, _, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Ok((text[open..open + i + 1].to_string(), sig));
                }
            }
            _ => {}
        }
    }
    Err(bad(format!("{needle} object is not closed")))
}

/// Checks that TCB info, QE identity and both CRLs are current at `now`, so an outdated
/// collateral set fails with a precise reason before dcap-qvl runs.
fn check_collateral_window(c: &QuoteCollateralV3, now: time::OffsetDateTime) -> Result<(), TdxError> {
    use time::format_description::well_known::Rfc3339;
    let fmt = |t: time::OffsetDateTime| crate::evidence::rfc3339(t);
    for (piece, json) in [("TCB info", &c.tcb_info), ("QE identity", &c.qe_identity)] {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| TdxError::BadCollateral { piece, reason: e.to_string() })?;
        let date = |k: &str| -> Result<time::OffsetDateTime, TdxError> {
            let s = v
                .get(k)
                .and_then(|x| x.as_str())
                .ok_or_else(|| TdxError::BadCollateral { piece, reason: format!("no {k}") })?;
            time::OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|e| TdxError::BadCollateral { piece, reason: format!("{k}: {e}") })
        };
        let (from, until) = (date("issueDate")?, date("nextUpdate")?);
        if now < from || now > until {
            return Err(TdxError::CollateralExpired { piece, now: fmt(now), from: fmt(from), until: fmt(until) });
        }
    }
    for (piece, der) in [("root CA CRL", &c.root_ca_crl), ("PCK CRL", &c.pck_crl)] {
        use x509_parser::prelude::FromDer;
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
            .map_err(|e| TdxError::BadCollateral { piece, reason: e.to_string() })?;
        let from = crl.last_update().to_datetime();
        let until = crl.next_update().map(|t| t.to_datetime());
        if now < from || until.is_some_and(|u| now > u) {
            return Err(TdxError::CollateralExpired {
                piece,
                now: fmt(now),
                from: fmt(from),
                until: until.map(fmt).unwrap_or_else(|| "(open)".into()),
            });
        }
    }
    Ok(())
}

/// Verifies `quote` against `collateral` at `now`; `root_ca_der` None = Intel's production
/// root shipped with dcap-qvl.
pub fn verify(
    quote: &TdxQuote,
    collateral: &QuoteCollateralV3,
    root_ca_der: Option<&[u8]>,
    policy: &TdxPolicy,
    now: time::OffsetDateTime,
) -> Result<VerifiedTdx, TdxError> {
    if quote.qe_vendor_id != INTEL_QE_VENDOR_ID {
        return Err(TdxError::QeVendorNotIntel {
            found: hex::encode(quote.qe_vendor_id),
            expected: hex::encode(INTEL_QE_VENDOR_ID),
        });
    }
    check_collateral_window(collateral, now)?;
    let secs = u64::try_from(now.unix_timestamp()).map_err(|_| TdxError::Verification("time before 1970".into()))?;
    let verifier = match root_ca_der {
        Some(der) => dcap_qvl::verify::QuoteVerifier::new(der.to_vec()),
        None => dcap_qvl::verify::QuoteVerifier::new_prod(),
    }
    .allow_debug(policy.allow_debug)
    .allow_service_td(true);
    let report = verifier.verify(&quote.raw, collateral, secs).map_err(|e| classify(format!("{e:#}")))?;
    if !policy.accepted_tcb_statuses.iter().any(|s| s == &report.status) {
        return Err(TdxError::TcbStatusNotAccepted {
            status: report.status,
            accepted: policy.accepted_tcb_statuses.join(", "),
        });
    }
    let td = &quote.td;
    if quote.debug() && !policy.allow_debug {
        return Err(TdxError::DebugNotAllowed);
    }
    if !policy.mr_td.is_empty() && !policy.mr_td.contains(&td.mr_td) {
        return Err(TdxError::MrTdNotAllowed { found: hex::encode(td.mr_td), allowed: policy.mr_td.len() });
    }
    if let Some(min) = &policy.min_tee_tcb_svn {
        if let Some(index) = (0..min.len()).find(|&i| td.tee_tcb_svn[i] < min[i]) {
            return Err(TdxError::TeeTcbSvnTooLow { found: hex::encode(td.tee_tcb_svn), min: hex::encode(min), index });
        }
    }
    if !policy.mr_seam.is_empty() && !policy.mr_seam.contains(&td.mr_seam) {
        return Err(TdxError::MrSeamNotAllowed { found: hex::encode(td.mr_seam), allowed: policy.mr_seam.len() });
    }
    if let Some(expected) = &policy.mr_config_id {
        if expected != &td.mr_config_id {
            return Err(TdxError::MrConfigIdMismatch {
                found: hex::encode(td.mr_config_id),
                expected: hex::encode(expected),
            });
        }
    }
    if let Some(expected) = &policy.report_data {
        if expected != &td.report_data {
            return Err(TdxError::ReportDataMismatch);
        }
    }
    Ok(VerifiedTdx { quote: quote.clone(), tcb_status: report.status, advisory_ids: report.advisory_ids })
}

/// dcap-qvl reports failures as text; turn the common ones into specific reasons.
fn classify(msg: String) -> TdxError {
    let lower = msg.to_lowercase();
    if lower.contains("no matching tcb level") {
        TdxError::TcbLevelNotFound
    } else if lower.contains("certnotvalidyet") || lower.contains("certexpired") {
        TdxError::CertificateExpired(msg)
    } else if lower.contains("revoked") {
        TdxError::Revoked(msg)
    } else if lower.contains("signature") || lower.contains("hash mismatch") || lower.contains("report data") {
        TdxError::BadSignature(msg)
    } else {
        TdxError::Verification(msg)
    }
}
