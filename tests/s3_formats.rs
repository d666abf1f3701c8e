//! Reading real objects from S3 (moto) in every format, through the same pipeline the function
//! runs, in dry-run mode; the request bodies that would be sent are checked byte for byte.

// Each test file compiles its own copy of the support modules it needs and uses part of each;
// what this file leaves unused, another test file uses.
#[allow(dead_code)]
mod support {
    pub mod assertions;
    pub mod moto;
    pub mod payloads;
    mod process;
    pub use assertions::Shared;
}

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsp_conversions::aws::Aws;
use dsp_conversions::config::Config;
use dsp_conversions::dsp::Dsp;
use dsp_conversions::pipeline::{Invocation, Pipeline, Report};
use dsp_conversions::trigger;
use serde_json::{json, Value};
use support::assertions::dedupe_ids;
use support::moto::Moto;
use support::payloads::{s3_event, simple_event};

const BUCKET: &str = "uploads";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn events(n: usize, tag: &str) -> Vec<Value> {
    (0..n)
        .map(|i| simple_event(&format!("user{i}@example.com"), &format!("{tag}-{i}")))
        .collect()
}

fn ndjson(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>()
        .into_bytes()
}

fn csv(events: &[Value]) -> Vec<u8> {
    let mut text = String::from("clientDedupeId,userIdentifier,eventTime,conversionType,conversionValue,currencyCode,countryCode\n");
    for e in events {
        text.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            e["clientDedupeId"].as_str().unwrap(),
            e["userIdentifier"].as_str().unwrap(),
            e["eventTime"].as_str().unwrap(),
            e["conversionType"].as_str().unwrap(),
            e["conversionValue"],
            e["currencyCode"].as_str().unwrap(),
            e["countryCode"].as_str().unwrap(),
        ));
    }
    text.into_bytes()
}

async fn run(moto: &Moto, payload: Value) -> (Report, Vec<Value>) {
    let config = Config::from_lookup(|name| match name {
        "DSP_SECRET_ID" => Some("unused".into()),
        "DSP_LOOKUP_DEFINITIONS" => Some("false".into()),
        "DRY_RUN" => Some("true".into()),
        "DSP_MAX_EVENTS_PER_REQUEST" => Some("10".into()),
        "DSP_CONVERSION_DEFINITIONS" => Some(r#"{"purchase":"def-1"}"#.into()),
        _ => None,
    })
    .unwrap();
    let aws = Arc::new(Aws::from_config(&moto.sdk_config().await));
    let dsp = Arc::new(Dsp::new(&config.dsp, aws.clone()));
    let pipeline = Pipeline::new(Arc::new(config), aws.clone(), aws, dsp);
    let work = trigger::parse(payload).expect("payload");
    let invocation = Invocation {
        request_id: "test".into(),
        started: time::OffsetDateTime::now_utc(),
        cutoff: Instant::now() + Duration::from_secs(60),
    };
    let out = support::Shared::default();
    let report = pipeline
        .run(work, invocation, Some(Box::new(out.clone())))
        .await;
    (report, out.json_lines())
}

#[tokio::test]
async fn every_format_from_s3() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    clients.bucket(BUCKET).await;
    let mut expected = Vec::new();
    let mut objects = Vec::new();
    let mut put = |key: &'static str, tag: &str, encode: fn(&[Value]) -> Vec<u8>| {
        let evs = events(7, tag);
        expected.extend(
            evs.iter()
                .map(|e| e["clientDedupeId"].as_str().unwrap().to_owned()),
        );
        objects.push((key, encode(&evs)));
    };
    put("in/a.ndjson", "ndjson", ndjson);
    put("in/b.jsonl.gz", "jsonlgz", |e| gzip(&ndjson(e)));
    put("in/c.json", "array", |e| serde_json::to_vec(e).unwrap());
    put("in/d.json", "request", |e| {
        serde_json::to_vec(&json!({"source": "AMAZON_AD_TAG", "eventData": e})).unwrap()
    });
    put("in/e.csv", "csv", csv);
    put("in/f.csv.gz", "csvgz", |e| gzip(&csv(e)));
    put("in/g h é.ndjson.gz", "unicode", |e| gzip(&ndjson(e)));
    for (key, bytes) in objects {
        clients.put(BUCKET, key, bytes).await;
    }
    // Compressed without a .gz suffix: Content-Encoding tells.
    let evs = events(7, "encoded");
    expected.extend(
        evs.iter()
            .map(|e| e["clientDedupeId"].as_str().unwrap().to_owned()),
    );
    clients
        .s3
        .put_object()
        .bucket(BUCKET)
        .key("in/i.json")
        .content_encoding("gzip")
        .body(gzip(&serde_json::to_vec(&evs).unwrap()).into())
        .send()
        .await
        .unwrap();
    expected.sort();

    let keys = [
        "in/a.ndjson",
        "in/b.jsonl.gz",
        "in/c.json",
        "in/d.json",
        "in/e.csv",
        "in/f.csv.gz",
        "in/g+h+%C3%A9.ndjson.gz",
        "in/i.json",
    ];
    let payload = s3_event(&keys.iter().map(|k| (BUCKET, *k)).collect::<Vec<_>>());
    let (report, bodies) = run(&moto, payload).await;

    assert_eq!(report.totals.received, 56, "{report:?}");
    assert_eq!(report.totals.valid_unsent, 56);
    assert_eq!(report.totals.rejected, 0, "{:?}", report.reasons);
    assert!(report.failure.is_none(), "{report:?}");
    assert_eq!(dedupe_ids(&bodies), expected);
    // 7 AMAZON_AD_TAG events in one request, 49 others in requests of at most 10.
    assert_eq!(report.requests, 1 + 5);
    assert_eq!(bodies.len(), 6);
    for b in &bodies {
        let n = b["eventData"].as_array().unwrap().len();
        assert!((1..=10).contains(&n));
    }
    let ad_tag: Vec<_> = bodies
        .iter()
        .filter(|b| b["source"] == "AMAZON_AD_TAG")
        .collect();
    assert_eq!(ad_tag.len(), 1);
    assert_eq!(ad_tag[0]["eventData"].as_array().unwrap().len(), 7);
    // What is sent: hashed, never raw.
    let text = serde_json::to_string(&bodies).unwrap();
    assert!(!text.contains("@example.com"));
}

#[tokio::test]
async fn bad_objects_are_rejected_with_their_origin() {
    let moto = Moto::start();
    let clients = moto.clients().await;
    clients.bucket(BUCKET).await;
    let good = ndjson(&events(3, "good"));
    let truncated = gzip(&good);
    clients
        .put(
            BUCKET,
            "in/truncated.ndjson.gz",
            truncated[..truncated.len() - 12].to_vec(),
        )
        .await;
    clients.put(BUCKET, "in/notes.txt", b"hello".to_vec()).await;
    clients
        .put(
            BUCKET,
            "in/extra.csv",
            b"eventTime,email\n2026-11-28T00:00:00Z,a@b.c\n".to_vec(),
        )
        .await;
    let mut mixed = good.clone();
    mixed.extend(b"{\"eventTime\": \"2026-11-28T09:30:00\", \"conversionType\": \"purchase\"}\n");
    clients.put(BUCKET, "in/mixed.ndjson", mixed).await;
    let payload = s3_event(&[
        (BUCKET, "in/truncated.ndjson.gz"),
        (BUCKET, "in/notes.txt"),
        (BUCKET, "in/extra.csv"),
        (BUCKET, "in/mixed.ndjson"),
        (BUCKET, "in/deleted.ndjson"),
    ]);
    let (report, bodies) = run(&moto, payload).await;
    let reasons: Vec<(&str, u64)> = report
        .reasons
        .iter()
        .map(|(k, v)| (k.as_str(), v.count))
        .collect();
    assert_eq!(
        reasons,
        [
            ("CORRUPT_GZIP", 1),
            ("INVALID_TIMESTAMP", 1),
            ("OBJECT_NOT_FOUND", 1),
            ("UNKNOWN_FIELD", 1),
            ("UNSUPPORTED_FORMAT", 1)
        ],
        "{report:?}"
    );
    assert_eq!(
        report.reasons["INVALID_TIMESTAMP"].examples,
        ["s3://uploads/in/mixed.ndjson line 4 record 4"]
    );
    assert!(report.reasons["UNKNOWN_FIELD"]
        .message
        .contains("\"email\""));
    // The 3 good events of mixed.ndjson, and whatever of the truncated gzip came through.
    assert_eq!(
        report.totals.received,
        report.totals.valid_unsent + report.totals.rejected
    );
    assert!(report.totals.valid_unsent >= 3);
    assert_eq!(dedupe_ids(&bodies).len() as u64, report.totals.valid_unsent);
}
