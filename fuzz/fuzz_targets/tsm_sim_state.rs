//! tsm-sim's configfs-tsm model driven by arbitrary operation sequences (what any local
//! process may write into the simulated inblob/privlevel files): never panics, and the
//! kernel invariants hold: generation counts accepted writes, blobs need a 64-byte inblob.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tsm_sim::inject::Injector;
use tsm_sim::signer::{Evidence, Provider, SignError};
use tsm_sim::tsm_state::{Attr, TsmState};

/// Cheap stand-in for the signer: the model, not the cryptography, is under test here.
struct Echo;
impl Provider for Echo {
    fn name(&self) -> &'static str {
        "sev_guest"
    }
    fn privlevel_floor(&self) -> Option<u32> {
        Some(1)
    }
    fn has_auxblob(&self) -> bool {
        true
    }
    fn generate(&self, report_data: &[u8; 64], _privlevel: u32) -> Result<Evidence, SignError> {
        Ok(Evidence { outblob: report_data.to_vec(), auxblob: Vec::new() })
    }
}

fuzz_target!(|data: &[u8]| {
    let state = TsmState::new(Arc::new(Echo), Injector::default(), Duration::ZERO);
    let Ok(id) = state.mkdir("fuzz") else { return };
    let mut accepted = 0u64;
    let mut last_inblob: Option<Vec<u8>> = None;
    let mut rest = data;
    // Each step: an op byte (low 2 bits pick the operation), a length byte (0..=71, so both
    // the exact 64 and the too-long cases occur), then that many argument bytes.
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len) % 72;
        let (arg, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        match *op & 3 {
            0 => {
                if state.write_inblob(id, arg).is_ok() {
                    accepted += 1;
                    last_inblob = Some(arg.to_vec());
                }
            }
            1 => {
                if state.write_privlevel(id, arg).is_ok() {
                    accepted += 1;
                }
            }
            2 => {
                let out = state.read(id, Attr::Outblob);
                match &last_inblob {
                    Some(b) if b.len() == 64 => assert_eq!(out.as_deref().ok(), Some(b.as_slice())),
                    _ => assert!(out.is_err()),
                }
            }
            _ => {
                let g = state.read(id, Attr::Generation).expect("generation is always readable");
                assert_eq!(String::from_utf8(g).expect("text"), format!("{accepted}\n"));
            }
        }
    }
});
