//! SEV-SNP report parser and the verification path up to the crypto: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = tee::snp::SnpReport::parse(data) {
        let _ = report.reported_tcb_raw();
        let _ = report.debug_allowed();
    }
    let _ = tee::snp::SnpReport::parse_azure_hcl(data);
    // Random inputs rarely have exactly 1184 bytes: also parse the input fitted to that size,
    // so the header checks and the `sev` decoder see every input.
    let mut fitted = data.to_vec();
    fitted.resize(tee::snp::REPORT_LEN, 0);
    let _ = tee::snp::SnpReport::parse(&fitted);
    // Report followed by an arbitrary "certificate" exercises the chain/extension parsing.
    if data.len() > tee::snp::REPORT_LEN {
        let (report, vek) = data.split_at(tee::snp::REPORT_LEN);
        let ev = tee::Evidence::Snp { report: report.to_vec(), vek: Some(vek.to_vec()), cert_table: None };
        static TRUST: std::sync::OnceLock<Option<tee::TrustConfig>> = std::sync::OnceLock::new();
        if let Some(trust) = TRUST.get_or_init(|| tee::TrustConfig::production().ok()) {
            let _ = tee::verify(&ev, trust, time::OffsetDateTime::UNIX_EPOCH);
        }
    }
});
