//! User deletion requests against moto and the fake DSP, through the real binary under the
//! runtime emulator: SQS `{"deletionRequests"}` bodies and S3 objects under `deletions/`, each
//! request accepted, rejected with its reason, or redelivered, and never a raw identifier out.

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

use std::io::Write;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::assertions::assert_no_leaks;
use support::fake_dsp::{secrets_of, FakeDsp, SECRET};
use support::function::{function_env, Function, Invoked};
use support::moto::{Clients, Moto};
use support::payloads::{s3_event, simple_event, sqs_event};

const REJECTS: &str = "rejects";
const UPLOADS: &str = "uploads";

struct World {
    moto: Moto,
    dsp: FakeDsp,
    clients: Clients,
}

impl World {
    async fn new() -> Self {
        let moto = Moto::start();
        let dsp = FakeDsp::start();
        let clients = moto.clients().await;
        clients.bucket(REJECTS).await;
        clients.bucket(UPLOADS).await;
        clients.secret("dsp/creds", SECRET).await;
        Self { moto, dsp, clients }
    }

    fn function(&self, extra: &[(&str, &str)]) -> Function {
        let mut env = vec![("REJECTS_BUCKET", REJECTS)];
        env.extend_from_slice(extra);
        Function::start(&function_env(&self.moto, &self.dsp, &env), 30)
    }

    /// No raw identifier (nor secret) in the function's logs, the fake DSP's output, the rejects
    /// report or `more` (retry messages).
    async fn assert_no_leaks(&self, f: &Function, identifiers: &[&str], more: &str) {
        let mut needles = secrets_of(&self.dsp).await;
        needles.extend(identifiers.iter().map(|s| s.to_string()));
        assert_no_leaks(&f.logs(), &needles);
        assert_no_leaks(&self.dsp.output(), &needles[2..]);
        let rejects = serde_json::to_string(&self.clients.ndjson_lines(REJECTS).await).unwrap();
        assert_no_leaks(&rejects, &needles[2..]);
        assert_no_leaks(more, &needles[2..]);
    }
}

fn failures(r: &Invoked) -> Vec<String> {
    let mut ids: Vec<String> = r.body["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not an SQS response: {r:?}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn by_email(email: &str) -> Value {
    json!({"matchKeys": [{"type": "EMAIL", "values": [email]}]})
}

fn deletions(entries: &[Value]) -> String {
    json!({ "deletionRequests": entries }).to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The last summary line's figure `key`.
fn figure(f: &Function, key: &str) -> String {
    f.summaries()
        .last()
        .and_then(|s| s.get(key))
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in the summary: {}", f.logs()))
}

#[tokio::test]
async fn an_sqs_body_of_250_is_three_requests_all_accepted() {
    let w = World::new().await;
    let f = w.function(&[]);
    // An event imported earlier, then its person's erasure: the DSP deletes it.
    let r = f
        .invoke(&sqs_event(&[
            simple_event("p7@example.com", "before").to_string()
        ]))
        .await;
    assert_eq!(failures(&r), Vec::<String>::new(), "{}", f.logs());

    let emails: Vec<String> = (0..250).map(|i| format!("P{i}@Example.com ")).collect();
    let entries: Vec<Value> = emails.iter().map(|e| by_email(e)).collect();
    let r = f
        .invoke(&sqs_event(&[
            deletions(&entries),
            simple_event("ann@example.com", "after").to_string(),
        ]))
        .await;
    assert_eq!(failures(&r), Vec::<String>::new(), "{}", f.logs());

    let state = w.dsp.state().await;
    // In completion order: the requests are in flight together.
    let mut sizes: Vec<u64> = state["deletion_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entries"].as_u64().unwrap())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 100, 100]);
    assert_eq!(state["deletions_count"], 250);
    // Normalized and hashed exactly as for events.
    let p7 = json!([{"type": "EMAIL", "values": [sha256("p7@example.com")]}]);
    assert!(state["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["matchKeys"] == p7));
    assert_eq!(state["events_deleted"], 1);
    assert_eq!(w.dsp.accepted_ids().await, ["after"]);

    // Reported apart from events.
    let summaries = f.summaries();
    let s = &summaries[1];
    assert_eq!(
        [
            &s["received"],
            &s["accepted"],
            &s["deletions_received"],
            &s["deletions_accepted"],
            &s["deletions_rejected"],
            &s["deletions_redelivered"],
            &s["requests"],
        ],
        ["1", "1", "250", "250", "0", "0", "4"]
    );
    let emf: Vec<Value> = f
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.last().unwrap()["DeletionsAccepted"], 250, "{emf:?}");
    assert_eq!(emf.last().unwrap()["Accepted"], 1);
    let raw: Vec<&str> = emails.iter().map(|e| e.trim()).collect();
    w.assert_no_leaks(&f, &raw, "").await;
}

#[tokio::test]
async fn per_entry_errors_and_invalid_records_are_rejections() {
    let w = World::new().await;
    let f = w.function(&[("DSP_MAX_EVENTS_PER_REQUEST", "4")]);
    let entries = vec![
        by_email("ann@example.com"),
        json!({"matchKeys": [{"type": "MAID", "values": ["__reject__"]}]}),
        json!({"userIdentifier": "bob@example.com", "eventTime": "2026-11-28T09:30:00Z"}),
        json!({"matchKeys": [{"type": "MAID", "values": ["__bad_request__"]}]}),
        json!({"countryCode": "US"}),
        json!({"matchKeys": [{"type": "EMAIL", "values": ["cy-at-example.com"]}]}),
        json!({"userIdentifier": "0151 2345 6789", "userIdentifierType": "PHONE", "countryCode": "DE"}),
    ];
    let r = f
        .invoke(&sqs_event(&[
            deletions(&entries),
            "{\"deletionRequests\": 5}".into(),
        ]))
        .await;
    // Rejections are permanent: nothing is redelivered.
    assert_eq!(failures(&r), Vec::<String>::new(), "{}", f.logs());
    let state = w.dsp.state().await;
    let stored: Vec<Value> = state["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["matchKeys"].clone())
        .collect();
    assert_eq!(
        stored,
        [
            json!([{"type": "EMAIL", "values": [sha256("ann@example.com")]}]),
            json!([{"type": "PHONE", "values": [sha256("4915123456789")]}]),
        ]
    );

    let mut lines = w.clients.ndjson_lines(REJECTS).await;
    lines.sort_by_key(|l| {
        (
            l["origin"]["messageId"].to_string(),
            l["origin"]["record"].as_u64(),
        )
    });
    let summary: Vec<(String, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().unwrap().to_owned(),
                l["origin"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "DSP_INVALID_ARGUMENT".into(),
                json!({"messageId": "m1", "record": 2})
            ),
            (
                "UNKNOWN_FIELD".into(),
                json!({"messageId": "m1", "record": 3})
            ),
            (
                "DSP_BAD_REQUEST".into(),
                json!({"messageId": "m1", "record": 4})
            ),
            (
                "MISSING_FIELD".into(),
                json!({"messageId": "m1", "record": 5})
            ),
            (
                "INVALID_MATCH_KEY".into(),
                json!({"messageId": "m1", "record": 6})
            ),
            ("INVALID_JSON".into(), json!({"messageId": "m2"})),
        ]
    );
    assert!(
        lines[1]["message"]
            .as_str()
            .unwrap()
            .contains("`eventTime`"),
        "{}",
        lines[1]
    );
    assert!(
        lines[4]["message"]
            .as_str()
            .unwrap()
            .contains("matchKeys[0].values[0]"),
        "{}",
        lines[4]
    );
    // The request as far as it was read, identifiers hashed (MAIDs too).
    assert_eq!(
        lines[0]["event"],
        json!({"matchKeys": [{"type": "MAID", "values": [sha256("__reject__")]}]})
    );
    assert_eq!(
        lines[1]["event"]["userIdentifier"],
        sha256("bob@example.com")
    );
    assert_eq!(
        [
            figure(&f, "deletions_received"),
            figure(&f, "deletions_accepted"),
            figure(&f, "deletions_rejected"),
            figure(&f, "deletions_redelivered"),
            figure(&f, "received"),
        ],
        ["8", "2", "6", "0", "0"]
    );
    w.assert_no_leaks(
        &f,
        &[
            "ann@example.com",
            "bob@example.com",
            "cy-at-example.com",
            "0151 2345 6789",
        ],
        "",
    )
    .await;
}

#[tokio::test]
async fn transient_answers_redeliver_the_message_of_the_deletions_only() {
    let w = World::new().await;
    let f = w.function(&[("DSP_MAX_ATTEMPTS", "2")]);
    let two = || deletions(&[by_email("ann@example.com"), by_email("bob@example.com")]);

    // A per-entry transient code redelivers the message; the other entry is accepted.
    w.dsp
        .control(
            "faults",
            json!({"target": "delete", "event_errors": {"2": "INTERNAL_ERROR"}}),
        )
        .await;
    let r = f.invoke(&sqs_event(&[two()])).await;
    assert_eq!(failures(&r), ["m1"], "{}", f.logs());
    assert_eq!(w.dsp.state().await["deletions_count"], 1);
    assert_eq!(
        [
            figure(&f, "deletions_accepted"),
            figure(&f, "deletions_redelivered")
        ],
        ["1", "1"]
    );

    // 500s: redelivered, and events are not held back by the deletions' failure.
    w.dsp
        .control(
            "faults",
            json!({"status": 500, "count": 1000, "target": "delete"}),
        )
        .await;
    let r = f
        .invoke(&sqs_event(&[
            two(),
            simple_event("cy@example.com", "e1").to_string(),
        ]))
        .await;
    assert_eq!(failures(&r), ["m1"], "{}", f.logs());
    assert_eq!(w.dsp.accepted_ids().await, ["e1"]);
    assert_eq!(
        w.dsp.state().await["deletion_requests"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        [
            figure(&f, "deletions_redelivered"),
            figure(&f, "redelivered"),
            figure(&f, "accepted")
        ],
        ["2", "0", "1"]
    );
    w.assert_no_leaks(
        &f,
        &["ann@example.com", "bob@example.com", "cy@example.com"],
        "",
    )
    .await;
}

#[tokio::test]
async fn s3_deletion_files_in_ndjson_and_csv_gzipped() {
    let w = World::new().await;
    let ndjson = [
        json!({"userIdentifier": "ann@example.com"}),
        json!({"matchKeys": [{"type": "EMAIL", "values": ["bob@example.com"]},
                             {"type": "PHONE", "values": ["+44 20 7946 0958"]}]}),
        json!({"userIdentifier": "cy@example.com", "conversionType": "purchase"}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    w.clients
        .put(
            UPLOADS,
            "deletions/day 1.ndjson.gz",
            gzip(ndjson.as_bytes()),
        )
        .await;
    let csv = "userIdentifier,userIdentifierType,countryCode\n\
               dee@example.com,,\n\
               020 7946 0958,PHONE,GB\n\
               eve@example.com,EMAIL,USA\n";
    w.clients
        .put(UPLOADS, "deletions/b.csv.gz", gzip(csv.as_bytes()))
        .await;
    // An events file in the same notification is imported as events.
    w.clients
        .put(
            UPLOADS,
            "in/e.ndjson",
            simple_event("fay@example.com", "e1")
                .to_string()
                .into_bytes(),
        )
        .await;
    let f = w.function(&[]);
    let r = f
        .invoke(&s3_event(&[
            (UPLOADS, "deletions/day+1.ndjson.gz"),
            (UPLOADS, "deletions/b.csv.gz"),
            (UPLOADS, "in/e.ndjson"),
        ]))
        .await;
    assert!(!r.error, "{r:?}\n{}", f.logs());
    assert_eq!(
        r.body,
        json!({"received": 7, "accepted": 5, "rejected": 2, "redelivered": 0, "requests": 2, "dryRun": false, "resumeAt": null})
    );
    let state = w.dsp.state().await;
    assert_eq!(state["deletions_count"], 4);
    assert_eq!(state["deletion_requests"].as_array().unwrap().len(), 1);
    let phone = json!({"type": "PHONE", "values": [sha256("442079460958")]});
    assert_eq!(state["deletions"][1]["matchKeys"][1], phone);
    assert_eq!(state["deletions"][3]["matchKeys"][0], phone);
    assert_eq!(w.dsp.accepted_ids().await, ["e1"]);

    let mut origins: Vec<(String, Value)> = w
        .clients
        .ndjson_lines(REJECTS)
        .await
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().unwrap().to_owned(),
                l["origin"].clone(),
            )
        })
        .collect();
    origins.sort_by_key(|o| o.0.clone());
    assert_eq!(
        origins,
        [
            (
                "INVALID_COUNTRY_CODE".into(),
                json!({"bucket": UPLOADS, "key": "deletions/b.csv.gz", "record": 3, "line": 4})
            ),
            (
                "UNKNOWN_FIELD".into(),
                json!({"bucket": UPLOADS, "key": "deletions/day 1.ndjson.gz", "record": 3, "line": 3})
            ),
        ]
    );
    assert_eq!(
        [
            figure(&f, "received"),
            figure(&f, "deletions_received"),
            figure(&f, "deletions_accepted")
        ],
        ["1", "6", "4"]
    );
    w.assert_no_leaks(
        &f,
        &[
            "ann@example.com",
            "bob@example.com",
            "cy@example.com",
            "dee@example.com",
            "eve@example.com",
            "020 7946 0958",
        ],
        "",
    )
    .await;
}

#[tokio::test]
async fn s3_leftovers_go_to_the_retry_queue_hashed_and_deliver_from_there() {
    let w = World::new().await;
    let queue = w.clients.queue("retry").await;
    let lines: Vec<String> = (0..5)
        .map(|i| json!({"userIdentifier": format!("u{i}@example.com")}).to_string())
        .collect();
    w.clients
        .put(UPLOADS, "deletions/x.ndjson", lines.join("\n").into_bytes())
        .await;
    w.dsp
        .control(
            "faults",
            json!({"status": 503, "count": 1000, "target": "delete"}),
        )
        .await;
    let f = w.function(&[
        ("DSP_MAX_ATTEMPTS", "2"),
        ("RETRY_QUEUE_URL", &queue),
        ("DSP_MAX_EVENTS_PER_REQUEST", "2"),
    ]);
    let r = f
        .invoke(&s3_event(&[(UPLOADS, "deletions/x.ndjson")]))
        .await;
    assert!(!r.error, "{r:?}\n{}", f.logs());
    assert_eq!(
        r.body,
        json!({"received": 5, "accepted": 0, "rejected": 0, "redelivered": 5, "requests": 6, "dryRun": false, "resumeAt": null})
    );
    let retries = w.clients.drain(&queue).await;
    let entries: Vec<Value> = retries
        .iter()
        .flat_map(|b| {
            let body: Value = serde_json::from_str(b).unwrap();
            let list = body["deletionRequests"].as_array().unwrap().clone();
            assert!(!list.is_empty() && list.len() <= 2, "{b}");
            list
        })
        .collect();
    let mut hashes: Vec<String> = entries
        .iter()
        .map(|e| e["matchKeys"][0]["values"][0].as_str().unwrap().to_owned())
        .collect();
    hashes.sort();
    let mut expected: Vec<String> = (0..5)
        .map(|i| sha256(&format!("u{i}@example.com")))
        .collect();
    expected.sort();
    assert_eq!(hashes, expected);

    // Once the DSP is back, the retry messages are passed through as already hashed.
    w.dsp.control("reset", json!({})).await;
    let r = f.invoke(&sqs_event(&retries)).await;
    assert_eq!(failures(&r), Vec::<String>::new(), "{}", f.logs());
    let state = w.dsp.state().await;
    assert_eq!(state["deletions_count"], 5);
    let mut stored: Vec<String> = state["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["matchKeys"][0]["values"][0].as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, expected);
    let raw: Vec<String> = (0..5).map(|i| format!("u{i}@example.com")).collect();
    let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
    w.assert_no_leaks(&f, &raw, &retries.concat()).await;
}

#[tokio::test]
async fn a_dry_run_counts_deletion_requests_and_posts_nothing() {
    let w = World::new().await;
    let lines: Vec<String> = (0..3)
        .map(|i| json!({"userIdentifier": format!("u{i}@example.com")}).to_string())
        .chain([json!({"countryCode": "US"}).to_string()])
        .collect();
    w.clients
        .put(
            UPLOADS,
            "deletions/dry.ndjson",
            lines.join("\n").into_bytes(),
        )
        .await;
    let f = w.function(&[("DRY_RUN", "true")]);
    let r = f
        .invoke(&s3_event(&[(UPLOADS, "deletions/dry.ndjson")]))
        .await;
    assert_eq!(
        r.body,
        json!({"received": 4, "accepted": 0, "rejected": 1, "redelivered": 0, "requests": 1, "dryRun": true, "resumeAt": null}),
        "{}",
        f.logs()
    );
    let state = w.dsp.state().await;
    assert_eq!(state["deletion_requests"], json!([]));
    assert!(w.clients.keys(REJECTS).await.is_empty());
    assert_eq!(
        [
            figure(&f, "deletions_valid_unsent"),
            figure(&f, "deletions_rejected")
        ],
        ["3", "1"]
    );
}
