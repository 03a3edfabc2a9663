//! Initdata as the host delivers it (TOML or base64): never panics; whatever parses has launch
//! values of the field sizes, and its documents survive a build/parse round trip.
#![no_main]

use initdata::{build, Field, Initdata};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(init) = Initdata::parse(data) else { return };
    assert_eq!(init.launch_value(Field::SnpHostData).len(), 32);
    assert_eq!(init.launch_value(Field::TdxMrConfigId).len(), 48);
    let text = build(init.algorithm(), init.documents());
    let again = Initdata::parse_toml(text.as_bytes()).expect("built initdata parses");
    assert_eq!(again.documents(), init.documents(), "round trip of {text:?}");
});
