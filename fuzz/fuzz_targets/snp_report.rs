//! SEV-SNP report parser and the verification path up to the crypto: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = tee::snp::SnpReport::parse(data) {
        let _ = report.reported_tcb_raw();
        let _ = report.debug_allowed();
    }
    let _ = tee::snp::SnpReport::parse_azure_hcl(data);
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
