//! Properties of the whole read side: whatever the mix of valid, invalid and unreadable records,
//! every record is counted exactly once (valid or rejected), and no request exceeds the limit or
//! mixes sources.

// Each test file compiles its own copy of the support modules it needs and uses part of each;
// what this file leaves unused, another test file uses.
#[allow(dead_code)]
mod support {
    mod assertions;
    mod payloads;
    mod process;
    pub use assertions::Shared;
    pub use payloads::s3_event;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use dsp_conversions::config::Config;
use dsp_conversions::dsp::Dsp;
use dsp_conversions::pipeline::{Invocation, Pipeline};
use dsp_conversions::store::Memory;
use dsp_conversions::trigger;
use proptest::prelude::*;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Debug)]
enum Line {
    Valid { ad_tag: bool },
    Invalid,
    Garbage(String),
    Blank,
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        4 => any::<bool>().prop_map(|ad_tag| Line::Valid { ad_tag }),
        2 => Just(Line::Invalid),
        1 => "[^\n\r]{0,40}".prop_map(Line::Garbage),
        1 => Just(Line::Blank),
    ]
}

fn render(line: &Line, i: usize) -> String {
    let now = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&Rfc3339)
        .unwrap();
    let event = |extra: Value| {
        let mut e = json!({"eventTime": now, "conversionType": "purchase", "countryCode": "US",
                           "userIdentifier": format!("u{i}@example.com")});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e.to_string()
    };
    match line {
        Line::Valid { ad_tag: true } => event(json!({"source": "AMAZON_AD_TAG"})),
        Line::Valid { ad_tag: false } => event(json!({})),
        Line::Invalid => event(json!({"currencyCode": "ABC"})),
        Line::Garbage(g) if g.trim().is_empty() => "x".into(),
        Line::Garbage(g) => g.clone(),
        Line::Blank => String::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_record_is_counted_exactly_once(lines in prop::collection::vec(line(), 0..150), max in 1usize..=100) {
        let text: String = lines.iter().enumerate().map(|(i, l)| render(l, i) + "\n").collect();
        let records = lines.iter().filter(|l| !matches!(l, Line::Blank)).count() as u64;
        let valid = lines.iter().filter(|l| matches!(l, Line::Valid { .. })).count() as u64;

        let store = Arc::new(Memory::default());
        store.put("b", "in.ndjson", text);
        let max_text = max.to_string();
        let config = Config::from_lookup(|name| match name {
            "DSP_SECRET_ID" => Some("unused".into()),
        "DSP_LOOKUP_DEFINITIONS" => Some("false".into()),
            "DRY_RUN" => Some("true".into()),
            "DSP_DEFAULT_CONVERSION_DEFINITION_ID" => Some("d".into()),
            "DSP_MAX_EVENTS_PER_REQUEST" => Some(max_text.clone()),
            _ => None,
        }).unwrap();
        let dsp = Arc::new(Dsp::new(&config.dsp, store.clone()));
        let pipeline = Pipeline::new(Arc::new(config), store.clone(), store.clone(), dsp);
        let payload = support::s3_event(&[("b", "in.ndjson")]);
        let bodies = support::Shared::default();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let report = runtime.block_on(pipeline.run(
            trigger::parse(payload).unwrap(),
            Invocation { request_id: "p".into(), started: time::OffsetDateTime::now_utc(), cutoff: Instant::now() + Duration::from_secs(60) },
            Some(Box::new(bodies.clone())),
        ));
        let t = report.totals;
        prop_assert_eq!(t.received, records);
        prop_assert_eq!(t.valid_unsent, valid);
        prop_assert_eq!(t.rejected, records - valid);
        prop_assert_eq!(t.accepted + t.redelivered, 0);

        let sent = bodies.json_lines();
        let mut events = 0u64;
        for body in &sent {
            let data = body["eventData"].as_array().unwrap();
            prop_assert!(!data.is_empty() && data.len() <= max);
            events += data.len() as u64;
        }
        prop_assert_eq!(events, valid);
        prop_assert_eq!(report.requests as usize, sent.len());
    }
}
