//! Fault injection: random DSP failures, dropped and slow connections, tokens revoked mid-batch
//! and credentials rotated mid-invocation, with SQS redelivery simulated across invocations.
//! After every run: each valid event accepted exactly once (by dedupe id), each invalid one in the
//! rejects with its reason, nothing else; and no invocation outlives its deadline.

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

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::assertions::assert_no_leaks;
use support::fake_dsp::{secrets_of, FakeDsp, SECRET};
use support::function::{function_env, Function};
use support::moto::{Clients, Moto};
use support::payloads::{simple_event, sqs_event_with};

const REJECTS: &str = "rejects";
const TIMEOUT: u64 = 6;

struct Batch {
    messages: Vec<(String, String)>,
    valid: BTreeSet<String>,
    invalid: BTreeSet<(String, u64)>,
}

/// 16 messages of 4 events; every fifth event is invalid (an unknown currency).
fn batch() -> Batch {
    let mut messages = Vec::new();
    let mut valid = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    for m in 0..16 {
        let id = format!("msg-{m}");
        let events: Vec<Value> = (0..4)
            .map(|e| {
                let dedupe = format!("m{m}e{e}");
                let mut ev = simple_event(&format!("user{m}.{e}@example.com"), &dedupe);
                if (m * 4 + e) % 5 == 4 {
                    ev["currencyCode"] = json!("XXX");
                    invalid.insert((id.clone(), e as u64 + 1));
                } else {
                    valid.insert(dedupe);
                }
                ev
            })
            .collect();
        messages.push((id, json!({"eventData": events}).to_string()));
    }
    Batch {
        messages,
        valid,
        invalid,
    }
}

/// Redelivers failed messages until none is left, checking the deadline of every invocation.
async fn redeliver_until_done(f: &Function, batch: &Batch) -> usize {
    let mut pending = batch.messages.clone();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(
            rounds <= 40,
            "messages still failing after 40 rounds: {pending:?}\n{}",
            f.logs()
        );
        let event = sqs_event_with(
            pending
                .iter()
                .map(|(id, b)| (id.clone(), b.clone(), None))
                .collect(),
        );
        let r = f.invoke(&event).await;
        assert_eq!((r.status, r.error), (200, false), "{r:?}\n{}", f.logs());
        assert!(
            r.elapsed < Duration::from_secs(TIMEOUT),
            "outlived its deadline: {:?}",
            r.elapsed
        );
        let failed: HashSet<String> = r.body["batchItemFailures"]
            .as_array()
            .expect("an SQS response")
            .iter()
            .map(|x| x["itemIdentifier"].as_str().unwrap().to_owned())
            .collect();
        pending.retain(|(id, _)| failed.contains(id));
    }
    rounds
}

async fn check_invariant(dsp: &FakeDsp, clients: &Clients, batch: &Batch) {
    let accepted = dsp.accepted_ids().await;
    let unique: BTreeSet<String> = accepted.iter().cloned().collect();
    assert_eq!(unique.len(), accepted.len(), "an event was stored twice");
    assert_eq!(unique, batch.valid, "accepted ≠ valid");
    let lines = clients.ndjson_lines(REJECTS).await;
    let rejected = clients.rejected_origins(REJECTS).await;
    assert_eq!(rejected, batch.invalid, "rejected ≠ invalid");
    assert!(
        lines.iter().all(|l| l["reason"] == "INVALID_CURRENCY_CODE"),
        "{lines:?}"
    );
}

async fn world() -> (Moto, FakeDsp, Clients) {
    let moto = Moto::start();
    let dsp = FakeDsp::start();
    let clients = moto.clients().await;
    clients.bucket(REJECTS).await;
    clients.secret("dsp/creds", SECRET).await;
    (moto, dsp, clients)
}

fn function(moto: &Moto, dsp: &FakeDsp) -> Function {
    let env = function_env(
        moto,
        dsp,
        &[
            ("REJECTS_BUCKET", REJECTS),
            ("DSP_MAX_ATTEMPTS", "3"),
            ("DSP_MAX_EVENTS_PER_REQUEST", "9"),
            ("DSP_MAX_REQUESTS_PER_SECOND", "40"),
            ("SECRET_CACHE_TTL_SECONDS", "1"),
        ],
    );
    Function::start(&env, TIMEOUT)
}

#[tokio::test]
async fn random_transport_faults() {
    for seed in [1, 2] {
        let (moto, dsp, clients) = world().await;
        dsp.control(
            "faults",
            json!({"random": {"seed": seed, "p429": 0.15, "p500": 0.1, "p503": 0.1, "pdrop": 0.1, "pslow": 0.1,
                              "slow_ms": 2500, "p_event_transient": 0.05, "retry_after": 1}}),
        )
        .await;
        let f = function(&moto, &dsp);
        let b = batch();
        let rounds = redeliver_until_done(&f, &b).await;
        check_invariant(&dsp, &clients, &b).await;
        let faults = dsp.state().await["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["fault"].is_null())
            .count();
        // Retries inside an invocation may absorb them all (then one round is enough).
        assert!(
            faults > 0,
            "seed {seed}: no fault was exercised ({rounds} rounds)"
        );
        assert_no_leaks(&f.logs(), &secrets_of(&dsp).await);
        assert!(!f.logs().contains("user0.0@example.com"));
    }
}

#[tokio::test]
async fn tokens_revoked_mid_batch_and_credentials_rotated_mid_invocation() {
    let (moto, dsp, clients) = world().await;
    dsp.control("config", json!({"latency_ms": 150})).await;
    dsp.control(
        "faults",
        json!({"random": {"seed": 3, "p500": 0.1, "p_event_transient": 0.05}}),
    )
    .await;
    let f = function(&moto, &dsp);
    let stop = Arc::new(AtomicBool::new(false));
    // Meanwhile: tokens are revoked every 400 ms, and the credentials rotate twice.
    let chaos = {
        let (stop, url, endpoint) = (stop.clone(), dsp.url.clone(), moto.endpoint.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let clients = Clients::for_endpoint(&endpoint).await;
            let mut tick = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(400)).await;
                tick += 1;
                let _ = http
                    .post(format!("{url}/_control/expire_tokens"))
                    .json(&json!({}))
                    .send()
                    .await;
                if tick % 5 == 0 && tick <= 10 {
                    let token = format!("rotated-{tick}");
                    clients
                        .secret("dsp/creds", &SECRET.replace("demo-refresh-token", &token))
                        .await;
                    let _ = http
                        .post(format!("{url}/_control/rotate"))
                        .json(&json!({"refresh_token": token}))
                        .send()
                        .await;
                }
            }
        })
    };
    let b = batch();
    redeliver_until_done(&f, &b).await;
    stop.store(true, Ordering::Relaxed);
    chaos.await.unwrap();
    check_invariant(&dsp, &clients, &b).await;
    let state = dsp.state().await;
    let unauthorized = state["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 401)
        .count();
    assert!(
        unauthorized > 0 && state["token_requests"].as_u64().unwrap() > 2,
        "no token was revoked mid-run: {state}"
    );
    let mut needles = secrets_of(&dsp).await;
    needles.extend((1..=10).map(|t| format!("rotated-{t}")));
    assert_no_leaks(&f.logs(), &needles);
}

#[tokio::test]
async fn events_the_dsp_forgets_or_fails_transiently_are_redelivered() {
    let (moto, dsp, clients) = world().await;
    dsp.control(
        "faults",
        json!([{"omit": [1, 2]}, {"event_errors": {"3": "THROTTLED", "4": "ServiceUnavailable"}}, {"status": 400, "message": "bad"}]),
    )
    .await;
    let f = function(&moto, &dsp);
    let b = batch();
    redeliver_until_done(&f, &b).await;
    check_invariant(&dsp, &clients, &b).await;
}
