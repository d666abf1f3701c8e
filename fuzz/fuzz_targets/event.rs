//! Event validation on arbitrary JSON objects.
#![no_main]

mod common;

use dsp_conversions::event::RawEvent;
use dsp_conversions::origin::Position;
use dsp_conversions::read::RecordSink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(raw) = RawEvent::from_json(text) {
        let mut sink = common::Validate::new();
        sink.record(Position::at(1, Some(1)), &raw, None);
        sink.record(Position::at(2, None), &raw, Some("AMAZON_AD_TAG"));
    }
});
