//! The guest's offset reader ([`tsm::launch_fields`]) agrees with `tee`'s full parsers on
//! real SNP reports and TDX quotes (v4, v5 TD 1.5) from `../shared/vectors`.

#![allow(unused_crate_dependencies)] // a test crate sees every dev-dependency of its package
use tsm::{launch_fields, Provider};

fn read(rel: &str) -> Vec<u8> {
    let path = test_vectors::dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn snp_host_data_and_report_data_match_the_full_parser() {
    for rel in [
        "snp/oak/genoa_report.bin",
        "snp/oak/turin_report.bin",
        "snp/trustee/test-report.bin",
        "snp/trustee/test-vlek-report.bin",
    ] {
        let blob = read(rel);
        let full = tee::snp::SnpReport::parse(&blob).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let f = launch_fields(Provider::SevGuest, &blob).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(f.launch_value, full.report.host_data.to_vec(), "{rel}: HOST_DATA");
        assert_eq!(f.report_data, full.report.report_data, "{rel}: REPORT_DATA");
    }
}

#[test]
fn tdx_mrconfigid_and_report_data_match_the_full_parser() {
    for rel in ["tdx/dcap-qvl/tdx_quote", "tdx/go-tdx-guest/quote_v5_sample.dat"] {
        let blob = read(rel);
        let full = tee::tdx::TdxQuote::parse(&blob).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let f = launch_fields(Provider::TdxGuest, &blob).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(f.launch_value, full.td.mr_config_id.to_vec(), "{rel}: MRCONFIGID");
        assert_eq!(f.report_data, full.td.report_data, "{rel}: REPORTDATA");
    }
}
