//! Delivery against moto (S3, SQS, Secrets Manager) and the fake DSP, through the real binary
//! under the runtime emulator: every event accepted, rejected with its reason, or redelivered.

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

use std::collections::HashSet;

use serde_json::{json, Value};
use support::assertions::{assert_no_leaks, dedupe_ids};
use support::fake_dsp::{secrets_of, FakeDsp, SECRET};
use support::function::{function_env, Function, Invoked};
use support::moto::{Clients, Moto};
use support::payloads::{s3_event, simple_event, sqs_event, sqs_event_with};

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
        Self { moto, dsp, clients }
    }

    async fn with_secret() -> Self {
        let w = Self::new().await;
        w.clients.secret("dsp/creds", SECRET).await;
        w
    }

    fn function(&self, extra: &[(&str, &str)], timeout: u64) -> Function {
        let mut env = vec![("REJECTS_BUCKET", REJECTS)];
        env.extend_from_slice(extra);
        Function::start(&function_env(&self.moto, &self.dsp, &env), timeout)
    }

    /// Checks the logs of `f` for credentials, tokens and the raw identifiers used.
    async fn assert_no_leaks(&self, f: &Function, identifiers: &[&str]) {
        let mut needles = secrets_of(&self.dsp).await;
        needles.extend(identifiers.iter().map(|s| s.to_string()));
        assert_no_leaks(&f.logs(), &needles);
        assert_no_leaks(&self.dsp.output(), &needles[2..]);
    }

    async fn accepted_ids(&self) -> Vec<String> {
        self.dsp.accepted_ids().await
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

fn body(events: &[Value]) -> String {
    json!({"eventData": events}).to_string()
}

#[tokio::test]
async fn all_accepted() {
    let w = World::with_secret().await;
    let f = w.function(&[], 30);
    let bodies = vec![
        simple_event("ann@example.com", "a1").to_string(),
        body(&[
            simple_event("bob@example.com", "b1"),
            simple_event("cy@example.com", "b2"),
        ]),
        json!([simple_event("dee@example.com", "c1")]).to_string(),
    ];
    let r = f.invoke(&sqs_event(&bodies)).await;
    assert_eq!(r.body, json!({"batchItemFailures": []}), "{}", f.logs());
    assert_eq!(w.accepted_ids().await, ["a1", "b1", "b2", "c1"]);
    let state = w.dsp.state().await;
    assert_eq!(state["requests"].as_array().unwrap().len(), 1);
    assert_eq!(state["token_requests"], 1);
    // Hashed on the wire.
    let sent = state["accepted"].to_string();
    assert!(!sent.contains("@example.com"), "{sent}");
    // No rejects, no object.
    assert!(w.clients.keys(REJECTS).await.is_empty());
    let s = &f.summaries()[0];
    assert_eq!(
        (
            s["received"].as_str(),
            s["accepted"].as_str(),
            s["requests"].as_str()
        ),
        ("4", "4", "1")
    );
    w.assert_no_leaks(&f, &["ann@example.com", "bob@example.com"])
        .await;
}

#[tokio::test]
async fn mixed_valid_and_invalid_events() {
    let w = World::with_secret().await;
    let f = w.function(&[("DSP_MAX_EVENTS_PER_REQUEST", "4")], 30);
    let mut bad_country = simple_event("eve@example.com", "bad-country");
    bad_country["countryCode"] = json!("USA");
    let mut dsp_reject = simple_event("fay@example.com", "dsp-reject");
    dsp_reject["conversionType"] = json!("__reject__");
    dsp_reject["conversionDefinitionId"] = json!("582947103856");
    let mut bad_request = simple_event("gus@example.com", "bad-request");
    bad_request["conversionType"] = json!("__bad_request__");
    bad_request["conversionDefinitionId"] = json!("582947103856");
    let bodies = vec![
        body(&[
            simple_event("ann@example.com", "ok-1"),
            bad_country,
            simple_event("bob@example.com", "ok-2"),
        ]),
        "not json at all".to_owned(),
        body(&[
            dsp_reject,
            simple_event("cy@example.com", "ok-3"),
            bad_request,
            simple_event("dee@example.com", "ok-4"),
        ]),
    ];
    let r = f.invoke(&sqs_event(&bodies)).await;
    // Rejections are permanent: no message is redelivered.
    assert_eq!(r.body, json!({"batchItemFailures": []}), "{}", f.logs());
    assert_eq!(w.accepted_ids().await, ["ok-1", "ok-2", "ok-3", "ok-4"]);

    let keys = w.clients.keys(REJECTS).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let today = time::OffsetDateTime::now_utc().date();
    let prefix = format!(
        "rejected/{:04}/{:02}/{:02}/",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    assert!(
        keys[0].starts_with(&prefix) && keys[0].ends_with(".ndjson"),
        "{keys:?}"
    );
    let mut lines = w.clients.ndjson_lines(REJECTS).await;
    lines.sort_by_key(|l| l["reason"].as_str().unwrap().to_owned());
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
                "DSP_BAD_REQUEST".to_owned(),
                json!({"messageId": "m3", "record": 3})
            ),
            (
                "DSP_INVALID_ARGUMENT".to_owned(),
                json!({"messageId": "m3", "record": 1})
            ),
            (
                "INVALID_COUNTRY_CODE".to_owned(),
                json!({"messageId": "m1", "record": 2})
            ),
            (
                "INVALID_JSON".to_owned(),
                json!({"messageId": "m2", "record": 1})
            ),
        ]
    );
    assert!(
        lines[0]["message"].as_str().unwrap().contains("index"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1]["message"].as_str().unwrap().contains("name"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[3]["event"], Value::Null);
    assert_eq!(lines[2]["event"]["countryCode"], "USA");
    let text = serde_json::to_string(&lines).unwrap();
    for raw in ["eve@example.com", "fay@example.com", "gus@example.com"] {
        assert!(!text.contains(raw), "raw identifier in the rejects: {text}");
    }
    let s = &f.summaries()[0];
    assert_eq!(
        (
            s["received"].as_str(),
            s["accepted"].as_str(),
            s["rejected"].as_str(),
            s["redelivered"].as_str()
        ),
        ("8", "4", "4", "0")
    );
    w.assert_no_leaks(
        &f,
        &[
            "eve@example.com",
            "fay@example.com",
            "gus@example.com",
            "ann@example.com",
        ],
    )
    .await;
}

#[tokio::test]
async fn server_errors_fail_every_message_before_the_deadline() {
    let w = World::with_secret().await;
    w.dsp
        .control("faults", json!({"status": 500, "count": 1000}))
        .await;
    let f = w.function(&[("DSP_MAX_ATTEMPTS", "10")], 8);
    let bodies: Vec<String> = (0..3)
        .map(|i| simple_event("ann@example.com", &format!("e{i}")).to_string())
        .collect();
    let r = f.invoke(&sqs_event(&bodies)).await;
    assert_eq!(failures(&r), ["m1", "m2", "m3"], "{}", f.logs());
    assert!(
        r.elapsed.as_secs_f64() < 8.0,
        "answered after the deadline: {:?}",
        r.elapsed
    );
    assert!(w.accepted_ids().await.is_empty());
    let s = &f.summaries()[0];
    assert_eq!(
        (s["redelivered"].as_str(), s["rejected"].as_str()),
        ("3", "0")
    );
    w.assert_no_leaks(&f, &["ann@example.com"]).await;
}

#[tokio::test]
async fn a_429_storm_ends_with_everything_accepted() {
    let w = World::with_secret().await;
    w.dsp
        .control(
            "faults",
            json!({"status": 429, "retry_after": 1, "count": 3}),
        )
        .await;
    let f = w.function(&[], 30);
    let bodies: Vec<String> = (0..5)
        .map(|i| simple_event("ann@example.com", &format!("e{i}")).to_string())
        .collect();
    let r = f.invoke(&sqs_event(&bodies)).await;
    assert_eq!(r.body, json!({"batchItemFailures": []}), "{}", f.logs());
    assert_eq!(w.accepted_ids().await, ["e0", "e1", "e2", "e3", "e4"]);
    let s = &f.summaries()[0];
    assert_eq!(
        (s["throttled"].as_str(), s["requests"].as_str()),
        ("3", "4")
    );
    // Retry-After was honoured: three waits of a second.
    assert!(r.elapsed.as_secs_f64() >= 3.0, "{:?}", r.elapsed);
}

#[tokio::test]
async fn token_expiry_and_secret_rotation() {
    let w = World::with_secret().await;
    let f = w.function(&[], 30);
    let one = |id: &str| sqs_event(&[simple_event("ann@example.com", id).to_string()]);
    assert_eq!(failures(&f.invoke(&one("t1")).await), Vec::<String>::new());
    // The DSP stops honouring the token: refreshed once, and the request goes through.
    w.dsp.control("expire_tokens", json!({})).await;
    assert_eq!(
        failures(&f.invoke(&one("t2")).await),
        Vec::<String>::new(),
        "{}",
        f.logs()
    );
    // Credentials rotated (and the secret updated): the cached ones fail, the secret is re-read.
    w.dsp
        .control("rotate", json!({"refresh_token": "rotated-refresh-token"}))
        .await;
    w.clients
        .secret(
            "dsp/creds",
            &SECRET.replace("demo-refresh-token", "rotated-refresh-token"),
        )
        .await;
    assert_eq!(
        failures(&f.invoke(&one("t3")).await),
        Vec::<String>::new(),
        "{}",
        f.logs()
    );
    assert_eq!(w.accepted_ids().await, ["t1", "t2", "t3"]);
    assert_eq!(w.dsp.state().await["token_requests"], 3);
    let mut needles = vec!["rotated-refresh-token"];
    needles.push("ann@example.com");
    w.assert_no_leaks(&f, &needles).await;
}

#[tokio::test]
async fn a_missing_or_malformed_secret_fails_the_batch_and_recovers_once_fixed() {
    let w = World::new().await;
    let f = w.function(&[("SECRET_CACHE_TTL_SECONDS", "0")], 30);
    let event = sqs_event(&[
        simple_event("ann@example.com", "s1").to_string(),
        simple_event("bob@example.com", "s2").to_string(),
    ]);
    let r = f.invoke(&event).await;
    assert_eq!(failures(&r), ["m1", "m2"]);
    assert!(
        f.logs().contains(r#"cannot read secret \"dsp/creds\""#)
            || f.logs().contains("cannot read secret \"dsp/creds\""),
        "{}",
        f.logs()
    );

    w.clients.secret("dsp/creds", r#"{"client_id":"demo-client-id","client_secret":"demo-client-secret","advertiser_id":"demo-advertiser"}"#).await;
    let r = f.invoke(&event).await;
    assert_eq!(failures(&r), ["m1", "m2"]);
    assert!(f.logs().contains("refresh_token"), "{}", f.logs());

    w.clients.secret("dsp/creds", SECRET).await;
    let r = f.invoke(&event).await;
    assert_eq!(failures(&r), Vec::<String>::new(), "{}", f.logs());
    assert_eq!(w.accepted_ids().await, ["s1", "s2"]);
    w.assert_no_leaks(&f, &["ann@example.com"]).await;
}

#[tokio::test]
async fn fifo_groups_fail_from_the_first_failed_message() {
    let w = World::with_secret().await;
    // The first event (message a1, group A) fails transiently.
    w.dsp
        .control("faults", json!({"event_errors": {"1": "INTERNAL_ERROR"}}))
        .await;
    let f = w.function(&[], 30);
    let messages = vec![
        (
            "a1".to_owned(),
            simple_event("ann@example.com", "a1").to_string(),
            Some("A"),
        ),
        (
            "b1".to_owned(),
            simple_event("bob@example.com", "b1").to_string(),
            Some("B"),
        ),
        (
            "a2".to_owned(),
            simple_event("cy@example.com", "a2").to_string(),
            Some("A"),
        ),
        (
            "b2".to_owned(),
            simple_event("dee@example.com", "b2").to_string(),
            Some("B"),
        ),
    ];
    let r = f.invoke(&sqs_event_with(messages)).await;
    assert_eq!(failures(&r), ["a1", "a2"], "{}", f.logs());
    assert_eq!(w.accepted_ids().await, ["a2", "b1", "b2"]);
}

#[tokio::test]
async fn s3_import_with_rejects_and_leftovers_for_the_retry_queue() {
    let w = World::with_secret().await;
    let queue = w.clients.queue("retry").await;
    let mut lines: Vec<String> = (0..5)
        .map(|i| simple_event(&format!("u{i}@example.com"), &format!("r{i}")).to_string())
        .collect();
    lines.insert(2, r#"{"eventTime":"2026-11-28T09:30:00Z","conversionType":"purchase","userIdentifier":"x@example.com","countryCode":"US","currencyCode":"XYZ"}"#.into());
    w.clients
        .put(UPLOADS, "in/day 1.ndjson", lines.join("\n").into_bytes())
        .await;
    // Every DSP attempt fails: the valid events go to the retry queue.
    w.dsp
        .control("faults", json!({"status": 503, "count": 1000}))
        .await;
    let f = w.function(
        &[
            ("DSP_MAX_ATTEMPTS", "2"),
            ("RETRY_QUEUE_URL", &queue),
            ("DSP_MAX_EVENTS_PER_REQUEST", "3"),
        ],
        30,
    );
    let r = f.invoke(&s3_event(&[(UPLOADS, "in/day+1.ndjson")])).await;
    assert!(!r.error, "{r:?}\n{}", f.logs());
    assert_eq!(
        r.body,
        json!({"received": 6, "accepted": 0, "rejected": 1, "redelivered": 5, "requests": 4, "dryRun": false, "resumeAt": null})
    );
    let rejects = w.clients.ndjson_lines(REJECTS).await;
    assert_eq!(rejects.len(), 1);
    assert_eq!(
        rejects[0]["origin"],
        json!({"bucket": UPLOADS, "key": "in/day 1.ndjson", "record": 3, "line": 3})
    );
    assert_eq!(rejects[0]["reason"], "INVALID_CURRENCY_CODE");
    assert!(!rejects[0].to_string().contains("x@example.com"));

    let retries = w.clients.drain(&queue).await;
    let retried: Vec<Value> = retries
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(dedupe_ids(&retried), ["r0", "r1", "r2", "r3", "r4"]);
    assert!(retried.iter().all(
        |m| m["source"] == "SERVER_TO_SERVER" && m["eventData"].as_array().unwrap().len() <= 3
    ));
    assert!(
        !retries.concat().contains("@example.com"),
        "identifiers must travel hashed"
    );

    // Once the DSP is back, the retry messages deliver, dedupe ids kept.
    w.dsp.control("reset", json!({})).await;
    let r = f.invoke(&sqs_event(&retries)).await;
    assert_eq!(failures(&r), Vec::<String>::new(), "{}", f.logs());
    assert_eq!(w.accepted_ids().await, ["r0", "r1", "r2", "r3", "r4"]);
    w.assert_no_leaks(&f, &["u0@example.com", "x@example.com"])
        .await;
}

#[tokio::test]
async fn s3_import_without_retry_queue_fails_so_lambda_retries() {
    let w = World::with_secret().await;
    w.clients
        .put(
            UPLOADS,
            "in/a.ndjson",
            simple_event("ann@example.com", "x1")
                .to_string()
                .into_bytes(),
        )
        .await;
    w.dsp
        .control("faults", json!({"status": 500, "count": 1000}))
        .await;
    let f = w.function(&[("DSP_MAX_ATTEMPTS", "1")], 30);
    let r = f.invoke(&s3_event(&[(UPLOADS, "in/a.ndjson")])).await;
    assert!(r.error, "{r:?}");
    assert!(
        r.body.to_string().contains("could not be delivered"),
        "{r:?}"
    );
}

#[tokio::test]
async fn redelivery_loop_under_random_faults_accepts_every_valid_event_exactly_once() {
    let w = World::with_secret().await;
    w.dsp
        .control(
            "faults",
            json!({"random": {"seed": 7, "p429": 0.15, "p500": 0.1, "p503": 0.05, "pdrop": 0.05, "pslow": 0.05,
                              "slow_ms": 1500, "p_event_transient": 0.05, "retry_after": 0}}),
        )
        .await;
    let f = w.function(
        &[
            ("DSP_MAX_ATTEMPTS", "2"),
            ("DSP_MAX_EVENTS_PER_REQUEST", "7"),
            ("DSP_MAX_REQUESTS_PER_SECOND", "50"),
        ],
        20,
    );
    let mut valid = HashSet::new();
    let mut messages: Vec<(String, String)> = Vec::new();
    for m in 0..20 {
        let events: Vec<Value> = (0..5)
            .map(|e| {
                let id = format!("m{m}-e{e}");
                let mut ev = simple_event(&format!("u{m}{e}@example.com"), &id);
                if e == 4 && m % 3 == 0 {
                    ev["countryCode"] = json!("ZZ");
                } else {
                    valid.insert(id);
                }
                ev
            })
            .collect();
        messages.push((format!("msg-{m}"), body(&events)));
    }
    let mut pending = messages.clone();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds <= 30, "still failing after 30 rounds: {pending:?}");
        let event = sqs_event_with(
            pending
                .iter()
                .map(|(id, b)| (id.clone(), b.clone(), None))
                .collect(),
        );
        let r = f.invoke(&event).await;
        let failed: HashSet<String> = failures(&r).into_iter().collect();
        pending.retain(|(id, _)| failed.contains(id));
    }
    let accepted = w.accepted_ids().await;
    let unique: HashSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "stored twice");
    assert_eq!(unique, valid.iter().collect::<HashSet<_>>());
    let rejects = w.clients.ndjson_lines(REJECTS).await;
    let rejected = w.clients.rejected_origins(REJECTS).await;
    let expected: std::collections::BTreeSet<(String, u64)> = (0..20)
        .filter(|m| m % 3 == 0)
        .map(|m| (format!("msg-{m}"), 5))
        .collect();
    assert_eq!(rejected, expected);
    assert!(rejects
        .iter()
        .all(|l| l["reason"] == "INVALID_COUNTRY_CODE"));
    w.assert_no_leaks(&f, &["u00@example.com"]).await;
}
