//! Snapshot bytes from a disk or a peer: restoring never panics. The fuzz input is used both
//! as a whole snapshot and as a payload wrapped in a valid header (so that the decoder behind
//! the digest check is reached); whatever restores must re-encode and restore to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch_core::State;

fuzz_target!(|data: &[u8]| {
    let _ = State::from_snapshot(data);
    let mut wrapped = b"ORCHSNAP".to_vec();
    wrapped.push(orch_core::codec::FORMAT_VERSION);
    wrapped.extend_from_slice(&(data.len() as u64).to_le_bytes());
    wrapped.extend_from_slice(blake3::hash(data).as_bytes());
    wrapped.extend_from_slice(data);
    if let Ok(state) = State::from_snapshot(&wrapped) {
        let again = State::from_snapshot(&state.to_snapshot()).expect("a re-encoded state restores");
        assert_eq!(again, state);
    }
});
