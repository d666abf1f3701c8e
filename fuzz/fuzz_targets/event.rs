//! Event validation on arbitrary JSON objects, and the record scanner held to serde_json: the
//! fast path must accept exactly what serde_json accepts, with the same fields.
#![no_main]

mod common;

use dsp_conversions::read::record::FIELD_NAMES;
use dsp_conversions::read::RawEvent;
use dsp_conversions::domain::Position;
use dsp_conversions::read::RecordSink;
use libfuzzer_sys::fuzz_target;

/// Every field slot's text and string value, comparable across the two parsers.
fn fields(event: &RawEvent<'_>) -> Vec<Option<(String, String)>> {
    let mut copy = *event;
    (0..FIELD_NAMES.len())
        .map(|i| {
            copy.field_mut(i)
                .and_then(|f| *f)
                .map(|f| (f.text().to_owned(), format!("{:?}", f.as_str())))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = RawEvent::from_json(text);
    let reference = serde_json::from_str::<RawEvent<'_>>(text);
    match (&parsed, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(fields(a), fields(b), "{text:?}"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the parsers disagree on {text:?}"),
    }
    if let Ok(raw) = parsed {
        let mut sink = common::Validate::new();
        sink.record(Position::at(1, Some(1)), &raw, None);
        sink.record(Position::at(2, None), &raw, Some("AMAZON_AD_TAG"));
    }
});
