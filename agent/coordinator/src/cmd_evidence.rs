//! `podmesh-coordinator evidence verify`: inspect and verify TEE evidence files offline and
//! print the verified claims as JSON (the same `tee::verify` path the coordinator uses).
//!
//! Input formats are sniffed: SNP reports raw (1184 bytes), hex text, or an Azure HCL report;
//! VCEK/VLEK as DER or PEM (first certificate of a bundle); TDX quotes raw or hex text.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tee::{Evidence, TrustConfig, VerifiedClaims};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify an SNP report or a TDX quote and print the claims as JSON.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("platform").required(true).args(["snp", "tdx"]))]
pub struct VerifyArgs {
    /// SEV-SNP attestation report (raw, hex text, or Azure HCL report).
    #[arg(long, value_name = "REPORT")]
    pub snp: Option<PathBuf>,
    /// VCEK or VLEK certificate (DER or PEM) for --snp.
    #[arg(long, requires = "snp")]
    pub vcek: Option<PathBuf>,
    /// GHCB certificate table (configfs-tsm auxblob) for --snp.
    #[arg(long, requires = "snp")]
    pub cert_table: Option<PathBuf>,
    /// TDX quote (raw or hex text; trailing padding is fine).
    #[arg(long, value_name = "QUOTE", requires = "collateral")]
    pub tdx: Option<PathBuf>,
    /// TDX collateral directory (collateral.json, or PCS files; see tee::tdx::load_collateral_dir).
    #[arg(long, requires = "tdx")]
    pub collateral: Option<PathBuf>,
    /// Judge certificate and collateral validity at this time (RFC 3339) instead of now.
    #[arg(long, value_parser = parse_rfc3339)]
    pub at: Option<time::OffsetDateTime>,
    /// Accept guests that allow debugging.
    #[arg(long)]
    pub allow_debug: bool,
    /// Accepted TDX TCB statuses (repeatable); default UpToDate and SWHardeningNeeded.
    #[arg(long = "tcb-status")]
    pub tcb_statuses: Vec<String>,
}

fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2026-11-24T12:00:00Z"))
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Verify(v) => {
            let claims = verify_files(&v)?;
            println!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(())
        }
    }
}

/// Reads the files named in `args` and verifies them with production trust anchors.
pub fn verify_files(args: &VerifyArgs) -> Result<VerifiedClaims> {
    let mut trust = TrustConfig::production()?;
    trust.snp_policy.allow_debug = args.allow_debug;
    trust.tdx_policy.allow_debug = args.allow_debug;
    if !args.tcb_statuses.is_empty() {
        trust.tdx_policy.accepted_tcb_statuses = args.tcb_statuses.clone();
    }
    let evidence = match (&args.snp, &args.tdx, &args.collateral) {
        (Some(report), None, _) => Evidence::Snp {
            report: snp_report(report)?,
            vek: args.vcek.as_deref().map(certificate_der).transpose()?,
            cert_table: args.cert_table.as_deref().map(read).transpose()?,
        },
        (None, Some(quote), Some(dir)) => Evidence::Tdx {
            quote: maybe_hex(read(quote)?),
            collateral: Box::new(
                tee::tdx::load_collateral_dir(dir).with_context(|| format!("TDX collateral {}", dir.display()))?,
            ),
        },
        _ => bail!("pass either --snp REPORT or --tdx QUOTE --collateral DIR"),
    };
    let now = args.at.unwrap_or_else(time::OffsetDateTime::now_utc);
    Ok(tee::verify(&evidence, &trust, now)?)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Hex text (optionally 0x-prefixed, whitespace ignored) becomes bytes; anything else is raw.
fn maybe_hex(bytes: Vec<u8>) -> Vec<u8> {
    let text: String = match std::str::from_utf8(&bytes) {
        Ok(t) => t.split_whitespace().collect(),
        Err(_) => return bytes,
    };
    let text = text.strip_prefix("0x").unwrap_or(&text);
    match hex::decode(text) {
        Ok(decoded) if !decoded.is_empty() => decoded,
        _ => bytes,
    }
}

fn snp_report(path: &Path) -> Result<Vec<u8>> {
    let bytes = maybe_hex(read(path)?);
    if bytes.starts_with(b"HCLA") {
        let report = tee::snp::SnpReport::parse_azure_hcl(&bytes)
            .with_context(|| format!("Azure HCL report {}", path.display()))?;
        return Ok(report.raw);
    }
    Ok(bytes)
}

fn certificate_der(path: &Path) -> Result<Vec<u8>> {
    let bytes = read(path)?;
    if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
        return Ok(pem.contents);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(clap::Subcommand)]
    enum Top {
        #[command(subcommand)]
        Evidence(Command),
    }

    use test_vectors::dir as vectors;

    fn parse(argv: &[&str]) -> VerifyArgs {
        let Top::Evidence(Command::Verify(v)) = Cli::try_parse_from(argv).unwrap().cmd;
        v
    }

    #[test]
    fn snp_hex_report_with_der_vcek_and_azure_hcl_with_pem_bundle() {
        let v = vectors();
        let hexr = v.join("snp/virtee-sev/report_milan.hex");
        let vcek = v.join("snp/virtee-sev/vcek_milan.der");
        let args = parse(&[
            "x",
            "evidence",
            "verify",
            "--snp",
            hexr.to_str().unwrap(),
            "--vcek",
            vcek.to_str().unwrap(),
            "--at",
            "2026-11-24T00:00:00Z",
        ]);
        let claims = verify_files(&args).unwrap();
        assert_eq!(claims.product, "Milan");
        let hcl = v.join("snp/trustee-az-snp-vtpm/hcl-report.bin");
        let pem = v.join("snp/trustee-az-snp-vtpm/vcek.pem");
        let args = parse(&["x", "evidence", "verify", "--snp", hcl.to_str().unwrap(), "--vcek", pem.to_str().unwrap()]);
        assert!(verify_files(&args).is_ok());
    }

    #[test]
    fn tdx_quote_with_collateral_dir_and_time() {
        let v = vectors();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(v.join("tdx/dcap-qvl/tdx_quote_collateral.json"), dir.path().join("collateral.json")).unwrap();
        let quote = v.join("tdx/dcap-qvl/tdx_quote");
        let (quote, collateral) = (quote.to_str().unwrap(), dir.path().to_str().unwrap());
        let at = |time| parse(&["x", "evidence", "verify", "--tdx", quote, "--collateral", collateral, "--at", time]);
        assert_eq!(verify_files(&at("2025-07-01T00:00:00Z")).unwrap().product, "TDX v4 TD1.0");
        let e = verify_files(&at("2026-11-24T00:00:00Z")).unwrap_err();
        assert!(format!("{e:#}").contains("not valid at"), "{e:#}");
    }

    #[test]
    fn bad_arguments_are_rejected() {
        assert!(Cli::try_parse_from(["x", "evidence", "verify"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "evidence", "verify", "--snp", "a", "--tdx", "b", "--collateral", "c"]).is_err()
        );
        assert!(Cli::try_parse_from(["x", "evidence", "verify", "--tdx", "b"]).is_err());
        assert!(Cli::try_parse_from(["x", "evidence", "verify", "--snp", "a", "--at", "yesterday"]).is_err());
        let args = parse(&["x", "evidence", "verify", "--snp", "/nonexistent/report.bin"]);
        assert!(format!("{:#}", verify_files(&args).unwrap_err()).contains("/nonexistent/report.bin"));
    }
}
