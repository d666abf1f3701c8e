//! Every sample payload in `events/` is the AWS event type it claims to be, and the function's
//! own trigger parser reads it.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use dsp_conversions::trigger::{self, Input, Mode};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("JSON")
}

#[test]
fn every_payload_parses_as_its_aws_type() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        let payload = load(&name);
        let mode = if name.starts_with("sqs-") {
            let event: SqsEvent =
                serde_json::from_value(payload.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!event.records.is_empty(), "{name}");
            for m in &event.records {
                if m.body.as_deref().is_some_and(|b| b.contains("\"aws:s3\"")) {
                    let inner: S3Event = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
                    assert!(!inner.records.is_empty());
                }
            }
            Mode::Sqs
        } else if name.starts_with("s3-") {
            let event: S3Event =
                serde_json::from_value(payload.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!event.records.is_empty(), "{name}");
            Mode::Objects
        } else if name.starts_with("eventbridge-") {
            let event: EventBridgeEvent =
                serde_json::from_value(payload.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(event.detail_type, "Object Created");
            Mode::Objects
        } else {
            panic!("{name}: unknown kind of payload");
        };
        let work = trigger::parse(payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(work.mode, mode, "{name}");
        assert!(
            work.units
                .iter()
                .all(|u| !matches!(u.input, Input::Unreadable(_)))
                || name == "sqs-mixed-invalid.json",
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, 9);
}

#[test]
fn the_url_encoded_key_is_decoded() {
    let work = trigger::parse(load("s3-put-csv-gz.json")).unwrap();
    assert_eq!(
        work.units[0].input,
        Input::Object {
            bucket: "dsp-conversions-uploads".into(),
            key: "incoming/daily export+1.csv.gz".into()
        }
    );
}
