//! Log entry bytes from a disk or a peer: decoding never panics, and applying whatever decodes
//! to a fresh state never panics and keeps the state's invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = orch_core::codec::decode_entry(data) {
        let mut state = orch_core::State::new();
        let out = state.apply(1, entry.clone());
        assert_eq!(out.outcomes.len(), entry.requests.len());
        if let Err(e) = state.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
});
