//! The corpus of bad inputs in `tests/fixtures/bad/`: each file, read through the function's own
//! pipeline, ends exactly as `expected.json` says (received, valid, requests, and every rejection
//! with its reason and position), and nothing else in the file is lost.

// Each test file compiles its own copy of the support modules it needs and uses part of each;
// what this file leaves unused, another test file uses.
#[allow(dead_code)]
mod support {
    mod payloads;
    mod process;
    pub use payloads::{s3_event, sqs_event};
    pub use process::root;
}

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsp_conversions::config::Config;
use dsp_conversions::domain::Unit;
use dsp_conversions::dsp::Dsp;
use dsp_conversions::pipeline::{Invocation, Pipeline, Report};
use dsp_conversions::store::{
    BoxFuture, LocalFiles, Memory, Object, ObjectStore, OpenError, Part, StoreError,
};
use dsp_conversions::trigger::{self, Input, Mode, Work, WorkUnit};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Deserialize, Debug)]
struct Expected {
    received: u64,
    valid: u64,
    requests: u64,
    rejected: BTreeMap<String, Vec<String>>,
}

fn fixtures() -> PathBuf {
    support::root().join("tests/fixtures/bad")
}

/// Replaces `{{now±N(h|d)[:naive|:±hh:mm]}}` with real times.
fn with_times(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{now") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closed placeholder") + start;
        let spec = &rest[start + 5..end];
        let (shift, format) = spec.split_once(':').unwrap_or((spec, ""));
        let (sign, amount) = shift.split_at(1);
        let (n, unit) = amount.split_at(amount.len() - 1);
        let n: i64 = n.parse().unwrap();
        let d = if unit == "d" {
            time::Duration::days(n)
        } else {
            time::Duration::hours(n)
        };
        let t = if sign == "-" {
            OffsetDateTime::now_utc() - d
        } else {
            OffsetDateTime::now_utc() + d
        };
        let text = match format {
            "" => t.format(&Rfc3339).unwrap(),
            "naive" => t.format(&Rfc3339).unwrap()[..19].to_owned(),
            offset => {
                let o = time::UtcOffset::parse(
                    offset,
                    time::macros::format_description!("[offset_hour]:[offset_minute]"),
                )
                .unwrap();
                t.to_offset(o).format(&Rfc3339).unwrap()
            }
        };
        out.push_str(&text);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name| match name {
        "DSP_SECRET_ID" => Some("unused".into()),
        "DSP_LOOKUP_DEFINITIONS" => Some("false".into()),
        "DRY_RUN" => Some("true".into()),
        "DSP_CONVERSION_DEFINITIONS" => Some(r#"{"purchase":"def-1"}"#.into()),
        "MAX_OBJECT_BYTES" => Some((1 << 20).to_string()),
        other => vars.get(other).cloned(),
    })
    .unwrap()
}

async fn run(config: Config, objects: Arc<dyn ObjectStore>, work: Work) -> Report {
    let memory = Arc::new(Memory::default());
    let dsp = Arc::new(Dsp::new(&config.dsp, memory.clone()));
    let pipeline = Pipeline::new(Arc::new(config), objects, memory, dsp);
    let invocation = Invocation {
        request_id: "bad-inputs".into(),
        started: OffsetDateTime::now_utc(),
        cutoff: Instant::now() + Duration::from_secs(60),
    };
    pipeline.run(work, invocation, None).await
}

/// The work of reading one local file, as `dsp-conversions-check` does.
fn file_work(path: &Path) -> Work {
    let key = path.to_string_lossy().into_owned();
    Work {
        mode: Mode::Objects,
        units: vec![WorkUnit {
            unit: Arc::new(Unit::file(0, &key)),
            input: Input::Object {
                bucket: String::new(),
                key,
            },
        }],
        messages: Vec::new(),
    }
}

async fn check_file(path: &Path) -> Report {
    run(config(&[]), Arc::new(LocalFiles), file_work(path)).await
}

/// The positions of each reason's rejections, without the path.
fn rejected(report: &Report, path: &Path) -> BTreeMap<String, Vec<String>> {
    let prefix = path.to_string_lossy().into_owned();
    report
        .reasons
        .iter()
        .map(|(code, s)| {
            let at = s
                .examples
                .iter()
                .map(|e| e.strip_prefix(&prefix).unwrap_or(e).trim().to_owned())
                .collect();
            (code.clone(), at)
        })
        .collect()
}

#[tokio::test]
async fn every_bad_input_ends_as_expected() {
    let expected: BTreeMap<String, Expected> =
        serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "expected.json" {
            continue;
        }
        let want = expected
            .get(&name)
            .unwrap_or_else(|| panic!("{name} has no entry in expected.json"));
        let raw = std::fs::read(fixtures().join(&name)).unwrap();
        let bytes = match String::from_utf8(raw) {
            Ok(text) => with_times(&text).into_bytes(),
            Err(e) if name.ends_with(".gz") => e.into_bytes(),
            Err(_) => raw_invalid_utf8(&name),
        };
        let path = dir.path().join(&name);
        std::fs::write(&path, bytes).unwrap();
        let report = check_file(&path).await;
        let t = &report.totals;
        let got = (
            t.received,
            t.valid_unsent,
            report.requests,
            rejected(&report, &path),
        );
        assert_eq!(
            got,
            (
                want.received,
                want.valid,
                want.requests,
                want.rejected.clone()
            ),
            "{name}: {report:?}"
        );
        assert_eq!(
            t.received,
            t.valid_unsent + t.rejected,
            "{name}: every record counted once"
        );
        assert!(report.failure.is_none(), "{name}: {report:?}");
        checked += 1;
    }
    assert_eq!(checked, expected.len());
}

/// A fixture that is not UTF-8, with fresh times and its invalid bytes intact.
fn raw_invalid_utf8(name: &str) -> Vec<u8> {
    let raw = std::fs::read(fixtures().join(name)).unwrap();
    let mut out = Vec::new();
    for line in raw.split_inclusive(|b| *b == b'\n') {
        match std::str::from_utf8(line) {
            Ok(text) => out.extend(with_times(text).into_bytes()),
            Err(_) => out.extend(line),
        }
    }
    out
}

fn event(dedupe: &str) -> String {
    json!({"eventTime": with_times("{{now-1h}}"), "conversionType": "purchase", "countryCode": "US",
           "userIdentifier": "ann@example.com", "clientDedupeId": dedupe})
    .to_string()
}

#[tokio::test]
async fn a_ten_megabyte_line_is_one_rejection_and_costs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.ndjson");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{}", event("a")).unwrap();
    writeln!(f, "{{\"conversionType\": \"{}\"}}", "x".repeat(10 << 20)).unwrap();
    writeln!(f, "{}", event("b")).unwrap();
    drop(f);
    let vars = [];
    let work = file_work(&path);
    let mut config = config(&vars);
    config.max_object_bytes = 100 << 20;
    let report = run(config, Arc::new(LocalFiles), work).await;
    assert_eq!((report.totals.received, report.totals.valid_unsent), (3, 2));
    assert_eq!(
        rejected(&report, &path),
        BTreeMap::from([(
            "RECORD_TOO_LARGE".to_owned(),
            vec!["line 2 record 2".to_owned()]
        )])
    );
}

#[tokio::test]
async fn a_truncated_gzip_keeps_what_came_before_and_rejects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.ndjson.gz");
    let text: String = (0..200).map(|i| event(&format!("t{i}")) + "\n").collect();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    let gz = e.finish().unwrap();
    std::fs::write(&path, &gz[..gz.len() * 2 / 3]).unwrap();
    let report = check_file(&path).await;
    let t = &report.totals;
    assert!(t.valid_unsent > 0 && t.valid_unsent < 200, "{report:?}");
    assert_eq!(t.rejected, 1);
    assert_eq!(report.reasons["CORRUPT_GZIP"].count, 1);
    assert_eq!(t.received, t.valid_unsent + 1);
}

#[tokio::test]
async fn a_missing_file_is_one_rejection() {
    let path = fixtures().join("does-not-exist.ndjson");
    let report = check_file(&path).await;
    assert_eq!((report.totals.received, report.totals.rejected), (1, 1));
    assert!(report.reasons.contains_key("OBJECT_NOT_FOUND"));
}

/// An object store that may not read one bucket.
struct Forbidden(Memory);

impl ObjectStore for Forbidden {
    fn open<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        part: Part<'a>,
    ) -> BoxFuture<'a, Result<Object, OpenError>> {
        if bucket == "forbidden" {
            return Box::pin(async { Err(OpenError::Denied("AccessDenied".into())) });
        }
        self.0.open(bucket, key, part)
    }
    fn put_file<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.put_file(bucket, key, path)
    }
}

#[tokio::test]
async fn an_s3_notification_for_an_unreadable_bucket_redelivers_only_its_message() {
    let notification = support::s3_event(&[("forbidden", "in/a.ndjson")]).to_string();
    let payload = support::sqs_event(&[event("ok"), notification]);
    let work = trigger::parse(payload).unwrap();
    let report = run(config(&[]), Arc::new(Forbidden(Memory::default())), work).await;
    assert_eq!(report.failed_messages, ["m2"]);
    assert_eq!((report.totals.received, report.totals.valid_unsent), (1, 1));
}

#[tokio::test]
async fn a_request_of_101_events_is_split_and_nothing_is_rejected() {
    let events: Vec<serde_json::Value> = (0..101)
        .map(|i| serde_json::from_str(&event(&format!("e{i}"))).unwrap())
        .collect();
    let payload = support::sqs_event(&[json!({"eventData": events}).to_string()]);
    let report = run(
        config(&[]),
        Arc::new(Memory::default()),
        trigger::parse(payload).unwrap(),
    )
    .await;
    assert_eq!(
        (
            report.totals.received,
            report.totals.valid_unsent,
            report.requests
        ),
        (101, 101, 2)
    );
    assert!(report.failed_messages.is_empty());
}
