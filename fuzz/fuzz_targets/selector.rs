//! Label selector strings from the command line: parsing never panics, and what parses prints
//! to a string that parses to the same selector.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(selector) = text.parse::<orch_core::Selector>() {
        let again: orch_core::Selector = selector.to_string().parse().expect("printed selector parses");
        assert_eq!(again, selector);
    }
});
