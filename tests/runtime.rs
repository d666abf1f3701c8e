//! The real binary under a Lambda Runtime API: cold start, configuration, the runtime contract,
//! and a dry run of every sample payload in `events/`.

// Each test file compiles its own copy of the support modules it needs and uses part of each;
// what this file leaves unused, another test file uses.
#[allow(dead_code)]
mod support {
    pub mod assertions;
    pub mod fake_dsp;
    pub mod function;
    pub mod moto;
    pub mod payloads;
    mod process;
}

use serde_json::{json, Value};
use support::assertions::assert_no_leaks;
use support::fake_dsp::FakeDsp;
use support::function::{function_env, Function};
use support::moto::{Clients, Moto};
use support::payloads::{read, refresh_timestamps, sample, simple_event, sqs_event};

const UPLOADS: &str = "dsp-conversions-uploads";

async fn upload_samples(clients: &Clients) {
    clients.bucket(UPLOADS).await;
    let files = [
        (
            "conversions.ndjson",
            "incoming/2026/11/28/conversions.ndjson",
        ),
        ("conversions.json", "incoming/2026/11/28/conversions.json"),
        ("conversions.csv", "incoming/2026/11/28/conversions.csv"),
    ];
    for (file, key) in files {
        clients
            .put(UPLOADS, key, sample(&format!("data/{file}")).into_bytes())
            .await;
    }
    let gz = read("events/data/daily export+1.csv.gz");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, refresh_timestamps(&text).as_bytes()).unwrap();
    clients
        .put(
            UPLOADS,
            "incoming/daily export+1.csv.gz",
            e.finish().unwrap(),
        )
        .await;
}

fn payload(name: &str) -> Value {
    serde_json::from_str(&sample(name)).expect("payload")
}

#[tokio::test]
async fn dry_run_of_every_sample_payload() {
    let moto = Moto::start();
    let dsp = FakeDsp::start();
    let clients = moto.clients().await;
    upload_samples(&clients).await;
    let f = Function::start(&function_env(&moto, &dsp, &[("DRY_RUN", "true")]), 30);

    for name in [
        "sqs-dsp-request.json",
        "sqs-simple-events.json",
        "sqs-mixed-invalid.json",
        "sqs-fifo.json",
        "sqs-s3-notification.json",
    ] {
        let r = f.invoke(&payload(name)).await;
        assert_eq!(
            (r.status, r.error),
            (200, false),
            "{name}: {r:?}\n{}",
            f.logs()
        );
        assert_eq!(r.body, json!({"batchItemFailures": []}), "{name}");
    }
    let expect = |received: u64, rejected: u64, requests: u64| json!({"received": received, "accepted": 0, "rejected": rejected, "redelivered": 0, "requests": requests, "dryRun": true, "resumeAt": null});
    let cases = [
        ("s3-put.json", expect(11, 1, 1)), // without the definitions list, one source
        ("s3-put-csv-gz.json", expect(5, 0, 1)),
        ("eventbridge-object-created.json", expect(8, 1, 1)),
    ];
    for (name, expected) in cases {
        let r = f.invoke(&payload(name)).await;
        assert_eq!(
            (r.status, r.error),
            (200, false),
            "{name}: {r:?}\n{}",
            f.logs()
        );
        assert_eq!(r.body, expected, "{name}");
    }

    // Nothing was posted, nothing written.
    let state = dsp.state().await;
    assert_eq!(state["requests"], json!([]));
    assert_eq!(state["token_requests"], 0);
    let logs = f.logs();
    let summaries = f.summaries();
    assert_eq!(summaries.len(), 8, "{logs}");
    assert!(
        summaries
            .iter()
            .all(|s| s.get("dry_run").map(String::as_str) == Some("true")),
        "{logs}"
    );
    // sqs-mixed-invalid: 3 messages, 2 rejected (a bad country code, a body that is not JSON)
    let mixed = &summaries[2];
    assert_eq!(
        (mixed["received"].as_str(), mixed["rejected"].as_str()),
        ("3", "2"),
        "{logs}"
    );
    assert!(logs.contains("\"_aws\""), "EMF record missing: {logs}");
    assert_no_leaks(
        &logs,
        &["alice@example.com".into(), "+1 206 555 0100".into()],
    );
}

#[tokio::test]
async fn a_bad_configuration_stops_start_up_naming_the_variable() {
    let moto = Moto::start();
    let dsp = FakeDsp::start();
    let f = Function::start(
        &function_env(&moto, &dsp, &[("DSP_MAX_EVENTS_PER_REQUEST", "500")]),
        10,
    );
    let r = f.invoke(&sqs_event(&["{}".into()])).await;
    assert_eq!(r.status, 502, "{r:?}");
    let logs = f.logs();
    assert!(
        logs.contains("DSP_MAX_EVENTS_PER_REQUEST") && logs.contains("from 1 to 100"),
        "{logs}"
    );
}

#[tokio::test]
async fn an_unsupported_payload_fails_the_invocation_with_a_clear_error() {
    let moto = Moto::start();
    let dsp = FakeDsp::start();
    let f = Function::start(&function_env(&moto, &dsp, &[("DRY_RUN", "true")]), 10);
    let r = f.invoke(&json!({"hello": "world"})).await;
    assert!(r.error, "{r:?}");
    assert!(
        r.body.to_string().contains("unsupported Lambda payload"),
        "{r:?}"
    );
    // The function keeps serving.
    let r = f
        .invoke(&sqs_event(&[
            simple_event("a@example.com", "d1").to_string()
        ]))
        .await;
    assert_eq!(r.body, json!({"batchItemFailures": []}));
}
