//! Label and field selector strings from the command line: parsing never panics, and what
//! parses prints to a string that parses to the same selector.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(selector) = text.parse::<orch_core::Selector>() {
        let again: orch_core::Selector = selector.to_string().parse().expect("printed selector parses");
        assert_eq!(again, selector);
    }
    for kind in [None, Some(orch_core::Kind::Pod), Some(orch_core::Kind::Event)] {
        if let Ok(fields) = orch_core::fields::FieldSelector::parse(&text, kind) {
            let again =
                orch_core::fields::FieldSelector::parse(&fields.to_string(), kind).expect("printed selector parses");
            assert_eq!(again, fields);
        }
    }
});
