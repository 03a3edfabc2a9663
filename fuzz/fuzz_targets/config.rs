//! The mesh config grammar and its sources (env-file, kernel command line): never panics,
//! and whatever parses renders back to text that parses to the same configuration
//! (including the identity extensions: `#mtls#id1|id2`, `#any`, egress identities).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh::config::{self, Ctx, Input, Sources};

const CTX: Ctx<'static> = Ctx { setting: "FUZZ", origin: "fuzz" };

fn input(path: &str, text: &str) -> Option<Input> {
    Some(Input { path: path.into(), text: text.to_string() })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = config::parse_ingress(text, &CTX);
    let _ = config::parse_egress(text, &CTX);
    let _ = config::parse_admin_port(text, &CTX);

    // The same bytes as an env-file and as a kernel command line, through the full pipeline.
    let sources = Sources { env_file: input("/fuzz.env", text), cmdline: input("/fuzz/cmdline", text), ..Sources::default() };
    let Ok(resolved) = sources.resolve() else { return };
    let Ok(Some(cfg)) = config::parse(&resolved) else { return };
    // The identity rules in words (config check, /config) exist for whatever parses.
    let plan = mesh::proxy::Plan::from_config(&cfg);
    let _ = (plan.identity_rules(), plan.identity_warnings());
    let rendered = cfg.to_string();
    let again = Sources { env_file: input("/rendered.env", &rendered), ..Sources::default() };
    let reparsed = config::parse(&again.resolve().expect("rendered env-file resolves")).expect("rendered config parses");
    assert_eq!(reparsed.as_ref(), Some(&cfg), "round trip of {rendered:?}");
});
