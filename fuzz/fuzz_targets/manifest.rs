//! Manifest text from a user's file: parsing, then validation of what parsed, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(objects) = orch_core::parse_manifests(&text) {
        for mut obj in objects {
            orch_core::apply_defaults(&mut obj);
            let _ = orch_core::validate(&obj);
            let _ = obj.to_manifest();
        }
    }
});
