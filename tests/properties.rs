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

/// One record of a deletion object: what the DSP will say of it, or what is wrong with it here.
#[derive(Clone, Debug)]
enum Deletion {
    Accepted,
    RejectedByDsp,
    Transient,
    Unlisted,
    Invalid,
    Garbage(String),
}

fn deletion() -> impl Strategy<Value = Deletion> {
    prop_oneof![
        4 => Just(Deletion::Accepted),
        1 => Just(Deletion::RejectedByDsp),
        1 => Just(Deletion::Transient),
        1 => Just(Deletion::Unlisted),
        1 => Just(Deletion::Invalid),
        1 => "[^\n\r]{1,30}".prop_map(Deletion::Garbage),
    ]
}

/// The record's line. MAIDs travel as given, so the fake DSP reads each verdict from the value.
fn render_deletion(d: &Deletion, i: usize) -> String {
    let maid = |verdict: &str| {
        json!({"matchKeys": [{"type": "MAID", "values": [format!("{verdict}-{i}")]},
                                                    {"type": "EMAIL", "values": [format!("p{i}@example.com")]}]})
    };
    match d {
        Deletion::Accepted => maid("ok").to_string(),
        Deletion::RejectedByDsp => maid("rej").to_string(),
        Deletion::Transient => maid("tmp").to_string(),
        Deletion::Unlisted => maid("omit").to_string(),
        Deletion::Invalid => {
            json!({"userIdentifier": format!("p{i}@example.com"), "conversionType": "purchase"})
                .to_string()
        }
        Deletion::Garbage(g) if g.trim().is_empty() => "x".into(),
        Deletion::Garbage(g) => g.clone(),
    }
}

/// A 207 for a deletion request, each entry answered by its MAID's verdict.
fn answer_deletions(body: &Value) -> dsp_conversions::dsp::Reply {
    let (mut success, mut error) = (Vec::new(), Vec::new());
    for (i, entry) in body["deletionRequests"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let maid = entry["matchKeys"][0]["values"][0].as_str().unwrap();
        let index = i + 1;
        match maid.split('-').next().unwrap() {
            "ok" => success.push(json!({"index": index, "message": "Success"})),
            "rej" => {
                error.push(json!({"index": index, "code": "INVALID_ARGUMENT", "message": "no"}))
            }
            "tmp" => {
                error.push(json!({"index": index, "code": "INTERNAL_ERROR", "message": "later"}))
            }
            _ => {}
        }
    }
    dsp_conversions::dsp::Reply::new(207, json!({"success": success, "error": error}).to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_deletion_record_is_counted_exactly_once(records in prop::collection::vec(deletion(), 0..120), max in 1usize..=100) {
        use dsp_conversions::dsp::double::{Scripted, ScriptedDsp};

        let text: String = records.iter().enumerate().map(|(i, d)| render_deletion(d, i) + "\n").collect();
        let count = |f: fn(&Deletion) -> bool| records.iter().filter(|d| f(d)).count() as u64;
        let accepted = count(|d| matches!(d, Deletion::Accepted));
        let redelivered = count(|d| matches!(d, Deletion::Transient | Deletion::Unlisted));
        let received = records.len() as u64;

        let store = Arc::new(Memory::default());
        store.put("b", "deletions/in.ndjson", text);
        store.secrets.lock().unwrap().insert("dsp/creds".into(),
            r#"{"client_id":"cid","client_secret":"cs","refresh_token":"rt","advertiser_id":"adv"}"#.into());
        let max_text = max.to_string();
        let config = Config::from_lookup(|name| match name {
            "DSP_SECRET_ID" => Some("dsp/creds".into()),
            "DSP_LOOKUP_DEFINITIONS" => Some("false".into()),
            "DSP_MAX_EVENTS_PER_REQUEST" => Some(max_text.clone()),
            "DSP_MAX_REQUESTS_PER_SECOND" => Some("1000".into()),
            "RETRY_QUEUE_URL" => Some("retry".into()),
            _ => None,
        }).unwrap();
        let api = ScriptedDsp::new();
        api.set_default(Scripted::With(Box::new(answer_deletions)));
        let dsp = Arc::new(Dsp::with_api(&config.dsp, store.clone(), api.clone()));
        let pipeline = Pipeline::new(Arc::new(config), store.clone(), store.clone(), dsp);
        let payload = support::s3_event(&[("b", "deletions/in.ndjson")]);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let report = runtime.block_on(pipeline.run(
            trigger::parse(payload).unwrap(),
            Invocation { request_id: "p".into(), started: time::OffsetDateTime::now_utc(), cutoff: Instant::now() + Duration::from_secs(60) },
            None,
        ));
        let d = report.deletions;
        prop_assert_eq!(report.totals.received, 0);
        prop_assert_eq!(d.received, received);
        prop_assert_eq!(d.accepted + d.rejected + d.redelivered, d.received);
        prop_assert_eq!(d.accepted, accepted);
        prop_assert_eq!(d.redelivered, redelivered);
        // Every redelivered request went to the retry queue, hashed, in messages within the limit.
        prop_assert_eq!(d.queued, redelivered);
        let messages = store.messages.lock().unwrap().clone();
        let mut queued = 0;
        for (_, body) in &messages {
            prop_assert!(!body.contains("@example.com"));
            let body: Value = serde_json::from_str(body).unwrap();
            let entries = body["deletionRequests"].as_array().unwrap();
            prop_assert!(!entries.is_empty() && entries.len() <= max);
            queued += entries.len() as u64;
        }
        prop_assert_eq!(queued, redelivered);
        for call in api.posts() {
            prop_assert_eq!(call.endpoint, Some(dsp_conversions::dsp::Endpoint::Delete));
        }
    }
}
