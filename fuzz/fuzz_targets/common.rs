//! A sink that validates every record, as the pipeline does, and checks the accounting.

use std::sync::Arc;

use dsp_conversions::event::EventDefaults;
use dsp_conversions::event::{self, Rules};
use dsp_conversions::read::RawEvent;
use dsp_conversions::domain::{Origin, Position, Unit};
use dsp_conversions::domain::Rejection;
use dsp_conversions::read::RecordSink;

pub struct Validate {
    pub rules: Rules,
    pub unit: Arc<Unit>,
    pub records: u64,
}

impl Validate {
    pub fn new() -> Self {
        let defaults = EventDefaults {
            default_conversion_definition_id: Some("d".into()),
            country_code: Some("US".into()),
            ..Default::default()
        };
        Self {
            rules: Rules::new(defaults, time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000)),
            unit: Arc::new(Unit::file(0, "fuzz")),
            records: 0,
        }
    }
}

impl RecordSink for Validate {
    fn record(&mut self, position: Position, raw: &RawEvent<'_>, source: Option<&str>) {
        self.records += 1;
        let origin = Origin { unit: self.unit.clone(), position };
        if let Ok(v) = event::validate(raw, source, &self.rules, &origin) {
            // What is sent must be JSON, and identifiers must be hashed or MAID/RAMP ids.
            let mut body = Vec::new();
            v.event.write_json(&mut body);
            serde_json::from_slice::<serde_json::Value>(&body).expect("the event is JSON");
            for key in &v.event.match_keys {
                for value in &key.values {
                    assert!(!key.kind.is_hashed() || event::match_key::is_sha256_hex(&value.to_string()));
                }
            }
        }
    }

    fn invalid(&mut self, _position: Position, _rejection: Rejection) {
        self.records += 1;
    }
}
