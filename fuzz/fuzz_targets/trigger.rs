//! The trigger parser on arbitrary payloads: an error or units of work, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = dsp_conversions::trigger::parse(payload);
    }
});
