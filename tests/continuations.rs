//! Objects larger than one invocation, in process: each invocation reads and delivers what its
//! time allows, hands the rest on as leftovers and one continuation on the retry queue, and the
//! chain of invocations that follows ends with every event accepted or rejected exactly once,
//! with the record numbers, lines and dedupe ids of one uninterrupted pass.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsp_conversions::config::Config;
use dsp_conversions::domain::{Origin, Position, Unit};
use dsp_conversions::dsp::double::{events, Scripted, ScriptedDsp};
use dsp_conversions::dsp::{Dsp, Endpoint};
use dsp_conversions::pipeline::{Invocation, Pipeline, Report};
use dsp_conversions::store::{Memory, ObjectStore, Part};
use dsp_conversions::trigger;
use serde_json::{json, Value};
use time::OffsetDateTime;

const QUEUE: &str = "retry-queue";
const BUCKET: &str = "uploads";

struct Chain {
    memory: Arc<Memory>,
    api: Arc<ScriptedDsp>,
    pipeline: Pipeline,
    invocations: usize,
    reports: Vec<Report>,
}

impl Chain {
    fn new(extra: &[(&str, &str)]) -> Self {
        let memory = Arc::new(Memory::default());
        memory.secrets.lock().unwrap().insert(
            "dsp/creds".into(),
            r#"{"client_id":"c","client_secret":"s","refresh_token":"r","advertiser_id":"a"}"#
                .into(),
        );
        let mut vars: BTreeMap<&str, &str> = [
            ("DSP_SECRET_ID", "dsp/creds"),
            ("DSP_CONVERSION_DEFINITIONS", r#"{"purchase":"def-1"}"#),
            ("DSP_DEFAULT_COUNTRY_CODE", "US"),
            ("DSP_MAX_EVENTS_PER_REQUEST", "5"),
            ("DSP_MAX_REQUESTS_PER_SECOND", "1000"),
            ("DSP_MAX_IN_FLIGHT", "1"),
            ("REJECTS_BUCKET", "rejects"),
            ("RETRY_QUEUE_URL", QUEUE),
            ("DSP_LOOKUP_DEFINITIONS", "false"),
        ]
        .into_iter()
        .collect();
        vars.extend(extra.iter().copied());
        let config = Config::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap();
        let api = ScriptedDsp::new();
        // Each request takes a little time, so an invocation of a few tens of milliseconds
        // delivers only part of an object.
        api.set_default(Scripted::Delayed(
            Duration::from_millis(3),
            Box::new(Scripted::AllAccepted),
        ));
        let dsp = Arc::new(Dsp::with_api(&config.dsp, memory.clone(), api.clone()));
        let pipeline = Pipeline::new(Arc::new(config), memory.clone(), memory.clone(), dsp);
        Self {
            memory,
            api,
            pipeline,
            invocations: 0,
            reports: Vec::new(),
        }
    }

    async fn invoke(&mut self, payload: Value, time: Duration) -> Report {
        self.invocations += 1;
        let work = trigger::parse(payload).unwrap();
        let invocation = Invocation {
            request_id: format!("invocation-{}", self.invocations),
            started: OffsetDateTime::now_utc(),
            cutoff: Instant::now() + time,
        };
        let report = self.pipeline.run(work, invocation, None).await;
        self.reports.push(report.clone());
        report
    }

    /// The messages on the retry queue, taken off it.
    fn take_messages(&self) -> Vec<String> {
        std::mem::take(&mut *self.memory.messages.lock().unwrap())
            .into_iter()
            .map(|(url, body)| {
                assert_eq!(url, QUEUE);
                body
            })
            .collect()
    }

    /// Plays the SQS trigger until the retry queue is empty: batches of up to 10 messages,
    /// failed ones back on the queue.
    async fn drain(&mut self, time: Duration) {
        let mut pending = self.take_messages();
        while !pending.is_empty() {
            assert!(self.invocations < 2000, "the chain does not end");
            let batch: Vec<String> = pending.drain(..pending.len().min(10)).collect();
            let records: Vec<Value> = batch
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    json!({"messageId": format!("m{}-{i}", self.invocations), "body": body,
                           "eventSource": "aws:sqs", "attributes": {}})
                })
                .collect();
            let report = self.invoke(json!({"Records": records}), time).await;
            for failed in &report.failed_messages {
                let i: usize = failed.rsplit('-').next().unwrap().parse().unwrap();
                pending.push(batch[i].clone());
            }
            pending.extend(self.take_messages());
        }
    }

    /// Every event the DSP accepted, by dedupe id, with how many times.
    fn accepted(&self) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for call in self.api.posts() {
            for e in events(&call.body) {
                *seen
                    .entry(e["clientDedupeId"].as_str().unwrap().to_owned())
                    .or_insert(0) += 1;
            }
        }
        seen
    }
}

fn s3_event(key: &str) -> Value {
    json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-28T09:30:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {}, "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
        "bucket": {"name": BUCKET, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": "arn:aws:s3:::uploads"},
        "object": {"key": key, "size": 1, "eTag": "0", "sequencer": "0"}}}]})
}

fn simple(i: usize) -> Value {
    let at = (OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({"eventTime": at, "conversionType": "purchase", "userIdentifier": format!("user{i}@example.com")})
}

/// `n` events, one in 25 of them invalid (a bad currency); returns the text and the 1-based
/// records that are invalid.
fn ndjson(n: usize) -> (String, BTreeSet<u64>) {
    let mut text = String::new();
    let mut invalid = BTreeSet::new();
    for i in 1..=n {
        let mut e = simple(i);
        if i % 25 == 0 {
            e["currencyCode"] = "XYZ".into();
            invalid.insert(i as u64);
        }
        text.push_str(&e.to_string());
        text.push('\n');
        if i % 40 == 0 {
            // Blank lines are not records, but they count as lines.
            text.push('\n');
        }
    }
    (text, invalid)
}

fn csv(n: usize) -> (String, BTreeSet<u64>) {
    let at = (OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut text = String::from("eventTime,conversionType,userIdentifier,currencyCode\n");
    let mut invalid = BTreeSet::new();
    for i in 1..=n {
        let currency = if i % 25 == 0 {
            invalid.insert(i as u64);
            "XYZ"
        } else {
            ""
        };
        text.push_str(&format!("{at},purchase,user{i}@example.com,{currency}\n"));
    }
    (text, invalid)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The dedupe ids one uninterrupted pass derives for records `1..=n` of `key`.
async fn derived_ids(
    memory: &Memory,
    key: &str,
    records: impl Iterator<Item = u64>,
) -> BTreeSet<String> {
    let object = memory
        .open(BUCKET, key, Part::default())
        .await
        .ok()
        .unwrap();
    let mut unit = Unit::object(0, BUCKET, key, None);
    if let Some(rev) = object.revision {
        unit.identity = format!("{}#{rev}", unit.identity);
    }
    let unit = Arc::new(unit);
    records
        .map(|r| {
            Origin {
                unit: unit.clone(),
                position: Position::at(r, None),
            }
            .dedupe_id()
        })
        .collect()
}

/// Imports `bytes` as `key` through a chain of short invocations and checks the accounting.
async fn import_in_a_chain(
    key: &str,
    bytes: Vec<u8>,
    n: usize,
    invalid: &BTreeSet<u64>,
    min_hops: u64,
) {
    let mut chain = Chain::new(&[]);
    chain.memory.put(BUCKET, key, bytes);
    let first = chain
        .invoke(s3_event(key), Duration::from_millis(150))
        .await;
    assert!(first.failure.is_none(), "{first:?}");
    assert!(
        first.resume_at.is_some(),
        "one short invocation cannot finish {key}"
    );
    chain.drain(Duration::from_millis(150)).await;

    // Every valid event accepted exactly once, under the ids of one uninterrupted pass.
    let accepted = chain.accepted();
    // The DSP keeps the first event of each clientDedupeId. A request in flight when an
    // invocation's time runs out may have been taken and is sent again by the next one; that
    // stays rare.
    let resent = accepted.values().filter(|n| **n > 1).count();
    assert!(
        resent * 20 <= n,
        "{key}: {resent} events sent more than once"
    );
    let valid = (1..=n as u64).filter(|r| !invalid.contains(r));
    let expected = derived_ids(&chain.memory, key, valid).await;
    let got: BTreeSet<String> = accepted.into_keys().collect();
    assert_eq!(got.len(), n - invalid.len(), "{key}");
    assert_eq!(got, expected, "{key}");

    // Every invalid record rejected exactly once, with its record number.
    let mut rejected: Vec<u64> = Vec::new();
    for (_, body) in chain
        .memory
        .objects
        .lock()
        .unwrap()
        .iter()
        .filter(|((b, _), _)| b != BUCKET)
    {
        for line in String::from_utf8_lossy(body).lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            rejected.push(v["origin"]["record"].as_u64().unwrap());
        }
    }
    rejected.sort_unstable();
    let want: Vec<u64> = invalid.iter().copied().collect();
    assert_eq!(rejected, want, "{key}");

    // The totals add up: each record received once.
    let received: u64 = chain.reports.iter().map(|r| r.totals.received).sum();
    let continuations: u64 = chain.reports.iter().map(|r| r.continuations).sum();
    assert!(
        continuations >= min_hops,
        "{key}: only {continuations} hops"
    );
    assert!(received >= n as u64, "{key}");
}

#[tokio::test]
async fn ndjson_in_a_chain_of_ranged_reads() {
    let (text, invalid) = ndjson(5000);
    import_in_a_chain("big.ndjson", text.into_bytes(), 5000, &invalid, 20).await;
}

#[tokio::test]
async fn gzip_in_a_chain_of_re_reads() {
    let (text, invalid) = ndjson(5000);
    import_in_a_chain("big.ndjson.gz", gzip(text.as_bytes()), 5000, &invalid, 20).await;
}

#[tokio::test]
async fn csv_in_a_chain_of_ranged_reads_with_the_header_read_again() {
    let (text, invalid) = csv(5000);
    import_in_a_chain("big.csv", text.into_bytes(), 5000, &invalid, 20).await;
}

#[tokio::test]
async fn a_json_array_in_a_chain_of_re_reads() {
    // JSON is read again from the start and skipped up to the continuation (no ranged read):
    // smaller, so that a test build re-reads it well within one short invocation.
    let (text, invalid) = ndjson(1000);
    let array = format!(
        "[{}]",
        text.lines()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(",")
    );
    import_in_a_chain("big.json", array.into_bytes(), 1000, &invalid, 3).await;
}

#[tokio::test]
async fn an_object_replaced_mid_chain_drops_its_continuation() {
    let mut chain = Chain::new(&[]);
    let (text, _) = ndjson(3000);
    chain.memory.put(BUCKET, "day.ndjson", text.into_bytes());
    let first = chain
        .invoke(s3_event("day.ndjson"), Duration::from_millis(150))
        .await;
    let resume_at = first.resume_at.expect("continued");
    chain
        .memory
        .put(BUCKET, "day.ndjson", ndjson(10).0.into_bytes());
    chain.drain(Duration::from_millis(150)).await;
    // Only the leftovers of the first invocation were delivered after it; nothing of the rest.
    let accepted = chain.accepted().len() as u64;
    assert!(accepted < resume_at, "{accepted} >= {resume_at}");
    let dropped_quietly = chain.reports[1..]
        .iter()
        .all(|r| r.failure.is_none() && r.continuations == 0);
    assert!(dropped_quietly, "{:?}", chain.reports);
}

#[tokio::test]
async fn without_a_retry_queue_an_unfinished_import_fails_for_lambda_to_retry() {
    let mut chain = Chain::new(&[("RETRY_QUEUE_URL", "")]);
    let (text, _) = ndjson(3000);
    chain.memory.put(BUCKET, "day.ndjson", text.into_bytes());
    let report = chain
        .invoke(s3_event("day.ndjson"), Duration::from_millis(150))
        .await;
    assert_eq!(report.resume_at, None);
    assert!(report.failure.is_some(), "{report:?}");
    assert!(chain.take_messages().is_empty());
}

#[tokio::test]
async fn a_chain_past_its_hop_limit_is_dropped() {
    let mut chain = Chain::new(&[]);
    chain
        .memory
        .put(BUCKET, "day.ndjson", ndjson(10).0.into_bytes());
    let body = json!({"continuation": {"bucket": BUCKET, "key": "day.ndjson", "record": 3, "hop": 10_000}});
    let payload = json!({"Records": [{"messageId": "m1", "body": body.to_string(), "eventSource": "aws:sqs", "attributes": {}}]});
    let report = chain.invoke(payload, Duration::from_secs(5)).await;
    assert_eq!(report.continuations_dropped, 1);
    assert!(report.failed_messages.is_empty());
    assert_eq!(report.totals.received, 0);
    assert!(chain.api.posts().is_empty());
}

#[tokio::test]
async fn an_object_not_started_in_time_continues_at_record_1() {
    let mut chain = Chain::new(&[]);
    chain
        .memory
        .put(BUCKET, "a.ndjson", ndjson(10).0.into_bytes());
    let report = chain.invoke(s3_event("a.ndjson"), Duration::ZERO).await;
    assert_eq!(report.resume_at, Some(1), "{report:?}");
    assert_eq!(report.totals.received, 0);
    let messages = chain.take_messages();
    assert_eq!(messages.len(), 1);
    let c: Value = serde_json::from_str(&messages[0]).unwrap();
    assert_eq!(c["continuation"]["record"], 1);
    assert_eq!(c["continuation"]["hop"], 1);
}

#[tokio::test]
async fn a_deletion_file_in_a_chain_of_ranged_reads() {
    let mut chain = Chain::new(&[]);
    let n = 2000;
    let text: String = (1..=n)
        .map(|i| {
            json!({"matchKeys": [{"type": "MAID", "values": [format!("maid-{i}")]}]}).to_string()
                + "\n"
        })
        .collect();
    chain
        .memory
        .put(BUCKET, "deletions/big.ndjson", text.into_bytes());
    let first = chain
        .invoke(s3_event("deletions/big.ndjson"), Duration::from_millis(150))
        .await;
    assert!(first.failure.is_none(), "{first:?}");
    assert!(
        first.resume_at.is_some(),
        "one short invocation cannot finish"
    );
    chain.drain(Duration::from_millis(150)).await;

    // Every request posted to the deletion endpoint exactly once (MAIDs travel as given).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for call in chain.api.posts() {
        assert_eq!(call.endpoint, Some(Endpoint::Delete));
        for entry in events(&call.body) {
            let maid = entry["matchKeys"][0]["values"][0].as_str().unwrap();
            *seen.entry(maid.to_owned()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), n);
    assert!(
        seen.values().all(|c| *c == 1),
        "a deletion request was posted twice"
    );
    let accepted: u64 = chain.reports.iter().map(|r| r.deletions.accepted).sum();
    assert_eq!(accepted, n as u64);
    assert!(chain.reports.iter().all(|r| r.totals.received == 0));
}
