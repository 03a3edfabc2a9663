//! TDX quote parser: must never panic, and a parsed quote never claims more bytes than given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = tee::tdx::TdxQuote::parse(data) {
        assert!(q.raw.len() + q.trailing == data.len());
        let _ = q.debug();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tee::tdx::collateral_from_dcap_json(text);
    }
});
