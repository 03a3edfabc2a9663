//! ARK -> ASK/ASVK -> VCEK/VLEK chain, report signature, and the VEK's TCB/hwID binding.
//!
//! Signatures on the chain are checked with `sev` (RSA-PSS/SHA-384); everything `sev` does
//! not check is done here from the DER with `x509-parser`: validity at `now` for every
//! certificate (AMD's ARK/ASK/ASVK live 25 years, VCEKs 7 years, VLEKs about one year, so an
//! expired VLEK is a real, expected failure), the AMD extensions (productName, TCB SPLs,
//! hwID, CSP ID), and that a certificate table's ARK/ASK are the trusted ones.

use sev::certs::snp::{ca, Certificate, Verifiable};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::report::{SigningKey, SnpReport};
use super::{Product, SnpError};
use crate::certtable::{CertKind, CertTable};

const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";

/// Trust anchors for one product: ARK, ASK (signs VCEKs) and optionally ASVK (signs VLEKs),
/// all DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdRoots {
    pub product: Product,
    pub ark: Vec<u8>,
    pub ask: Vec<u8>,
    pub asvk: Option<Vec<u8>>,
}

impl AmdRoots {
    /// AMD's production roots: ARK/ASK as shipped by the `sev` crate, ASVK as published by
    /// AMD KDS (`https://kdsintf.amd.com/vlek/v1/<product>/cert_chain`), checked against
    /// the ARK on every verification like any other chain certificate.
    pub fn builtin(product: Product) -> Result<Self, SnpError> {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let bad = |e: std::io::Error| SnpError::BadRoot { product, reason: e.to_string() };
        let (ark, ask, asvk_pem): (Certificate, Certificate, &[u8]) = match product {
            Product::Milan => {
                (milan::ark().map_err(bad)?, milan::ask().map_err(bad)?, include_bytes!("asvk/milan.pem"))
            }
            Product::Genoa => {
                (genoa::ark().map_err(bad)?, genoa::ask().map_err(bad)?, include_bytes!("asvk/genoa.pem"))
            }
            Product::Turin => {
                (turin::ark().map_err(bad)?, turin::ask().map_err(bad)?, include_bytes!("asvk/turin.pem"))
            }
        };
        let asvk = Certificate::from_pem(asvk_pem).map_err(bad)?;
        Ok(AmdRoots {
            product,
            ark: ark.to_der().map_err(bad)?,
            ask: ask.to_der().map_err(bad)?,
            asvk: Some(asvk.to_der().map_err(bad)?),
        })
    }

    /// All three production products.
    pub fn builtin_all() -> Result<Vec<Self>, SnpError> {
        Product::ALL.iter().map(|p| Self::builtin(*p)).collect()
    }
}

/// What the VCEK/VLEK certifies, from AMD's X.509 extensions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VekInfo {
    pub kind: SigningKey,
    pub subject: String,
    pub product_name: Option<String>,
    pub bootloader: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub microcode: Option<u8>,
    pub fmc: Option<u8>,
    #[serde(serialize_with = "crate::evidence::ser_opt_hex")]
    pub hwid: Option<Vec<u8>>,
    pub csp_id: Option<String>,
    #[serde(skip)]
    pub(crate) der: Vec<u8>,
}

fn parse_cert<'a>(what: &'static str, der: &'a [u8]) -> Result<X509Certificate<'a>, SnpError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SnpError::BadCertificate { what, reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(SnpError::BadCertificate {
            what,
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("?").to_string()
}

fn issuer_cn(cert: &X509Certificate<'_>) -> String {
    cert.issuer().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("?").to_string()
}

/// Small DER readers for AMD's extension values: INTEGER SPLs, IA5String names, raw hwID.
fn der_tlv(value: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = value.split_first()?;
    let (&len, body) = rest.split_first()?;
    (t == tag && len < 0x80 && body.len() == len as usize).then_some(body)
}

fn der_u8(value: &[u8]) -> Option<u8> {
    let body = der_tlv(value, 0x02)?;
    let body = match body {
        [0, rest @ ..] if !rest.is_empty() => rest,
        b => b,
    };
    match body {
        [v] => Some(*v),
        _ => None,
    }
}

fn der_string(value: &[u8]) -> Option<String> {
    [0x16, 0x0c, 0x13].iter().find_map(|&tag| der_tlv(value, tag)).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn vek_info(kind: SigningKey, der: &[u8]) -> Result<VekInfo, SnpError> {
    let what = match kind {
        SigningKey::Vcek => "VCEK",
        SigningKey::Vlek => "VLEK",
    };
    let cert = parse_cert(what, der)?;
    let mut info = VekInfo {
        kind,
        subject: common_name(&cert),
        product_name: None,
        bootloader: None,
        tee: None,
        snp: None,
        microcode: None,
        fmc: None,
        hwid: None,
        csp_id: None,
        der: der.to_vec(),
    };
    for ext in cert.extensions() {
        let v = ext.value;
        match ext.oid.to_id_string().as_str() {
            OID_PRODUCT_NAME => info.product_name = der_string(v),
            OID_BL_SPL => info.bootloader = der_u8(v),
            OID_TEE_SPL => info.tee = der_u8(v),
            OID_SNP_SPL => info.snp = der_u8(v),
            OID_UCODE_SPL => info.microcode = der_u8(v),
            OID_FMC_SPL => info.fmc = der_u8(v),
            // KDS encodes hwID as the raw bytes; accept a DER OCTET STRING wrapper too.
            OID_HWID => {
                info.hwid = Some(der_tlv(v, 0x04).filter(|b| b.len() == 64 || b.len() == 8).unwrap_or(v).to_vec())
            }
            OID_CSP_ID => info.csp_id = der_string(v),
            _ => {}
        }
    }
    Ok(info)
}

fn check_validity(which: &'static str, der: &[u8], now: time::OffsetDateTime) -> Result<(), SnpError> {
    let cert = parse_cert(which, der)?;
    let v = cert.validity();
    let t = now.unix_timestamp();
    if t < v.not_before.timestamp() || t > v.not_after.timestamp() {
        return Err(SnpError::CertificateExpired {
            which,
            subject: common_name(&cert),
            now: crate::evidence::rfc3339(now),
            not_before: crate::evidence::rfc3339(v.not_before.to_datetime()),
            not_after: crate::evidence::rfc3339(v.not_after.to_datetime()),
        });
    }
    Ok(())
}

fn sev_cert(product: Product, what: &str, der: &[u8]) -> Result<Certificate, SnpError> {
    Certificate::from_der(der).map_err(|e| SnpError::BadRoot { product, reason: format!("{what}: {e}") })
}

/// The key that must sign the VEK: ASK for a VCEK, ASVK for a VLEK (both signed by the ARK).
fn signer_for(roots: &AmdRoots, kind: SigningKey) -> Result<(Certificate, &[u8]), SnpError> {
    let p = roots.product;
    let ark = sev_cert(p, "ARK", &roots.ark)?;
    let signer_der: &[u8] = match kind {
        SigningKey::Vcek => &roots.ask,
        SigningKey::Vlek => roots.asvk.as_deref().ok_or(SnpError::NoAsvk { product: p })?,
    };
    let signer = sev_cert(p, "ASK/ASVK", signer_der)?;
    let chain = ca::Chain { ark, ask: signer.clone() };
    (&chain).verify().map_err(|e| SnpError::BadRoot {
        product: p,
        reason: format!("ARK does not self-sign and sign the ASK/ASVK: {e}"),
    })?;
    Ok((signer, signer_der))
}

/// Picks the product whose roots sign the VEK (the report's own product for v3+) and checks
/// validity, product name and any ARK/ASK the certificate table carried.
pub(super) fn verify_chain(
    report: &SnpReport,
    vek_der: &[u8],
    table: Option<&CertTable>,
    roots: &[AmdRoots],
    now: time::OffsetDateTime,
) -> Result<(Product, VekInfo), SnpError> {
    let kind = report.signing_key;
    let vek = vek_info(kind, vek_der)?;
    let vek_cert =
        Certificate::from_der(vek_der).map_err(|e| SnpError::BadCertificate { what: "VEK", reason: e.to_string() })?;
    let signs = |r: &AmdRoots| -> Result<Option<Vec<u8>>, SnpError> {
        let (signer, signer_der) = signer_for(r, kind)?;
        Ok((&signer, &vek_cert).verify().is_ok().then(|| signer_der.to_vec()))
    };

    if let Some(p) = report.product {
        if !roots.iter().any(|r| r.product == p) {
            return Err(SnpError::NoRootsForProduct { product: p });
        }
    }
    let mut chosen = None;
    for r in roots.iter().filter(|r| report.product.is_none_or(|p| p == r.product)) {
        if let Some(signer_der) = signs(r)? {
            chosen = Some((r, signer_der));
            break;
        }
    }
    let Some((r, signer_der)) = chosen else {
        if let Some(p) = report.product {
            for other in roots.iter().filter(|r| r.product != p) {
                if signs(other)?.is_some() {
                    return Err(SnpError::WrongProduct { report: p, chain: other.product, kind });
                }
            }
        }
        let issuer = parse_cert("VEK", vek_der).map(|c| issuer_cn(&c)).unwrap_or_default();
        let expected = match kind {
            SigningKey::Vcek => "ASK",
            SigningKey::Vlek => "ASVK",
        };
        return Err(SnpError::VekNotSignedByAmd { kind, expected, issuer });
    };
    let product = r.product;

    if let Some(table) = table {
        let trusted_signer = signer_der.as_slice();
        for (kind_in_table, trusted) in [(CertKind::Ark, r.ark.as_slice()), (CertKind::Ask, trusted_signer)] {
            if let Some(supplied) = table.get(kind_in_table) {
                if supplied != trusted {
                    let subject = parse_cert("certificate table entry", supplied)
                        .map(|c| common_name(&c))
                        .unwrap_or_else(|_| "unparsable".into());
                    return Err(SnpError::ChainMismatch { kind: kind_in_table, subject, product });
                }
            }
        }
    }

    check_validity("ARK", &r.ark, now)?;
    check_validity(if kind == SigningKey::Vcek { "ASK" } else { "ASVK" }, &signer_der, now)?;
    check_validity(if kind == SigningKey::Vcek { "VCEK" } else { "VLEK" }, vek_der, now)?;

    if let Some(name) = &vek.product_name {
        if !name.starts_with(product.name()) {
            return Err(SnpError::ProductNameMismatch { kind, found: name.clone(), product });
        }
    }
    Ok((product, vek))
}

/// ECDSA P-384/SHA-384 over the exact received bytes 0..0x2A0 (not a re-encoding, so
/// reserved fields are covered too).
pub(super) fn verify_report_signature(report: &SnpReport, vek: &VekInfo) -> Result<(), SnpError> {
    use p384::ecdsa::signature::Verifier;
    let bad = || SnpError::BadReportSignature { kind: vek.kind };
    let cert = parse_cert("VEK", &vek.der)?;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
        .map_err(|e| SnpError::BadCertificate { what: "VEK", reason: format!("public key is not P-384: {e}") })?;
    let sig = p384::ecdsa::Signature::try_from(&report.report.signature).map_err(|_| bad())?;
    key.verify(report.signed_bytes(), &sig).map_err(|_| bad())
}

/// The VEK must certify exactly the report's REPORTED_TCB, and a VCEK exactly its chip.
pub(super) fn check_binding(report: &SnpReport, vek: &VekInfo, product: Product) -> Result<(), SnpError> {
    let tcb = &report.report.reported_tcb;
    let turin_fmc = (product == Product::Turin).then_some(tcb.fmc.unwrap_or(0));
    let components: [(&'static str, Option<u8>, Option<u8>); 5] = [
        ("bootloader", vek.bootloader, Some(tcb.bootloader)),
        ("tee", vek.tee, Some(tcb.tee)),
        ("snp", vek.snp, Some(tcb.snp)),
        ("microcode", vek.microcode, Some(tcb.microcode)),
        ("fmc", vek.fmc, turin_fmc),
    ];
    for (component, cert, rep) in components {
        match (cert, rep) {
            (Some(c), Some(r)) if c != r => {
                return Err(SnpError::TcbMismatch { kind: vek.kind, component, cert: c, report: r })
            }
            (None, Some(_)) => return Err(SnpError::MissingTcbExtension { kind: vek.kind, component }),
            _ => {}
        }
    }
    if vek.kind == SigningKey::Vcek {
        let chip = report.chip_id();
        if chip.iter().all(|&b| b == 0) {
            return Err(SnpError::ChipIdMasked);
        }
        let hwid = vek.hwid.as_deref().unwrap_or(&[]);
        // Turin hwIDs are 8 bytes; the report's CHIP_ID carries them zero-padded to 64.
        let matches = match hwid.len() {
            64 => hwid == chip.as_slice(),
            8 => product == Product::Turin && hwid == &chip[..8] && chip[8..].iter().all(|&b| b == 0),
            _ => false,
        };
        if !matches {
            return Err(SnpError::HwIdMismatch { cert: hex::encode(hwid), report: hex::encode(chip) });
        }
    }
    Ok(())
}
