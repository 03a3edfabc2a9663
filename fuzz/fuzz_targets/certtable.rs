//! GHCB certificate table parser: never panics; what parses re-encodes to a table that
//! parses to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = tee::certtable::CertTable::parse(data) {
        let encoded = table.encode().expect("a parsed table encodes");
        assert_eq!(tee::certtable::CertTable::parse(&encoded).expect("re-parse"), table);
    }
});
