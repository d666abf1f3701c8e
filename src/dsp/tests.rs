//! Delivery against the scripted DSP: retries and backoff, `Retry-After`, splitting of 400s,
//! re-authorization, whole-invocation failures, per-event codes and the deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::double::{Scripted, ScriptedDsp};
use super::*;
use crate::event::Source;
use crate::store::Memory;

const SECRET: &str =
    r#"{"client_id":"cid","client_secret":"cs","refresh_token":"rt","advertiser_id":"adv"}"#;

fn settings(max_attempts: u32) -> Settings {
    Settings {
        secret_id: "dsp/creds".into(),
        region: None,
        api_url: Some("http://127.0.0.1:9".into()),
        token_url: Some("http://127.0.0.1:9/auth/o2/token".into()),
        max_requests_per_second: 1000,
        concurrency: 1,
        lookup_definitions: true,
        definitions_ttl: Duration::from_secs(900),
        max_attempts,
        secret_cache_ttl: Duration::from_secs(300),
    }
}

fn dsp(max_attempts: u32) -> (Arc<Dsp>, Arc<ScriptedDsp>) {
    let secrets = Arc::new(Memory::default());
    secrets
        .secrets
        .lock()
        .unwrap()
        .insert("dsp/creds".into(), SECRET.into());
    let api = ScriptedDsp::new();
    let dsp = Dsp::with_api(&settings(max_attempts), secrets, api.clone());
    (Arc::new(dsp), api)
}

fn event(name: &str, record: u64) -> Validated {
    let mut v = crate::batch::tests::event(Source::ServerToServer, record);
    v.event.name = name.into();
    v
}

fn batch(names: &[&str]) -> Batch {
    Batch {
        source: Source::ServerToServer,
        events: names
            .iter()
            .enumerate()
            .map(|(i, n)| event(n, i as u64 + 1))
            .collect(),
    }
}

fn session(dsp: &Arc<Dsp>, time: Duration) -> Session {
    Session::new(dsp.clone(), Instant::now() + time)
}

/// The dispositions by record number.
fn by_record(results: Vec<(Validated, Disposition)>) -> HashMap<u64, Disposition> {
    results
        .into_iter()
        .map(|(e, d)| (e.origin.position.record.unwrap_or(0), d))
        .collect()
}

fn error_body(message: &str) -> Value {
    json!({"message": message, "requestId": "req-1", "errors": []})
}

#[tokio::test]
async fn everything_accepted_in_one_request_with_the_contract_headers() {
    let (dsp, api) = dsp(5);
    let s = session(&dsp, Duration::from_secs(10));
    let results = s.deliver(batch(&["a", "b", "c"])).await;
    assert!(results.iter().all(|(_, d)| *d == Disposition::Accepted));
    assert_eq!(s.requests(), 1);
    let posts = api.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].endpoint, Some(Endpoint::EventData));
    assert_eq!(posts[0].token.as_deref(), Some("token-1"));
    assert_eq!(posts[0].body["source"], "SERVER_TO_SERVER");
    assert_eq!(super::double::events(&posts[0].body).len(), 3);
    assert_eq!(api.token_grants(), 1);
}

#[tokio::test]
async fn server_errors_and_network_failures_are_retried_with_backoff() {
    let (dsp, api) = dsp(5);
    api.push(Scripted::status(500, error_body("boom")))
        .push(Scripted::NoAnswer)
        .push(Scripted::status(503, error_body("busy")));
    let s = session(&dsp, Duration::from_secs(30));
    let started = Instant::now();
    let results = s.deliver(batch(&["a"])).await;
    assert_eq!(results[0].1, Disposition::Accepted);
    assert_eq!(s.requests(), 4);
    assert_eq!(s.throttled(), 0);
    // Full jitter: some waiting may round to zero, but never more than the capped steps.
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn attempts_run_out_into_redelivery() {
    let (dsp, api) = dsp(2);
    api.set_default(Scripted::status(500, error_body("down")));
    let s = session(&dsp, Duration::from_secs(30));
    let results = s.deliver(batch(&["a", "b"])).await;
    assert_eq!(s.requests(), 2);
    for (_, d) in &results {
        assert!(
            matches!(d, Disposition::Redeliver(Cause::GaveUp { attempts: 2, .. })),
            "{d:?}"
        );
    }
    assert!(s.fatal().is_none());
}

#[tokio::test]
async fn retry_after_is_waited_out_and_throttling_counted() {
    let (dsp, api) = dsp(5);
    api.push(Scripted::throttled(Some(Duration::from_millis(700))));
    let s = session(&dsp, Duration::from_secs(30));
    let results = s.deliver(batch(&["a"])).await;
    assert_eq!(results[0].1, Disposition::Accepted);
    let posts = api.posts();
    assert_eq!(posts.len(), 2);
    let waited = posts[1].at - posts[0].at;
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert_eq!((s.requests(), s.throttled()), (2, 1));
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_redelivers_at_once() {
    let (dsp, api) = dsp(5);
    api.push(Scripted::throttled(Some(Duration::from_secs(60))));
    let s = session(&dsp, Duration::from_secs(2));
    let started = Instant::now();
    let results = s.deliver(batch(&["a"])).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    match &results[0].1 {
        Disposition::Redeliver(cause @ Cause::NoTimeLeft(_)) => assert!(cause.is_throttling()),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.requests(), 1);
}

#[tokio::test]
async fn nothing_is_sent_after_the_cutoff() {
    let (dsp, api) = dsp(5);
    let s = Session::new(dsp.clone(), Instant::now());
    let results = s.deliver(batch(&["a", "b"])).await;
    for (_, d) in &results {
        assert!(
            matches!(d, Disposition::Redeliver(c) if c.to_string().contains("time ran out")),
            "{d:?}"
        );
    }
    assert!(api.calls().is_empty());
    assert_eq!(s.requests(), 0);
}

#[tokio::test]
async fn a_slow_answer_is_cut_at_the_deadline() {
    let (dsp, api) = dsp(5);
    api.set_default(Scripted::Reply(Reply::new(503, "{}")));
    api.push(Scripted::Delayed(
        Duration::from_millis(300),
        Box::new(Scripted::status(500, error_body("slow"))),
    ));
    let s = session(&dsp, Duration::from_millis(500));
    let results = s.deliver(batch(&["a"])).await;
    assert!(
        matches!(results[0].1, Disposition::Redeliver(_)),
        "{:?}",
        results[0].1
    );
    assert!(s.requests() >= 1);
}

#[tokio::test]
async fn a_400_is_split_until_the_bad_events_are_isolated() {
    let (dsp, api) = dsp(5);
    api.set_default(Scripted::With(Box::new(|body| {
        let bad = super::double::events(body)
            .iter()
            .any(|e| e["name"] == "bad");
        if bad {
            Reply::new(
                400,
                json!({"message": "name is invalid", "code": "BAD_REQUEST"}).to_string(),
            )
        } else {
            let success: Vec<Value> = (1..=super::double::events(body).len())
                .map(|i| json!({"index": i}))
                .collect();
            Reply::new(207, json!({"success": success}).to_string())
        }
    })));
    let s = session(&dsp, Duration::from_secs(10));
    let names = ["ok", "ok", "bad", "ok", "ok", "ok", "bad", "ok"];
    let results = by_record(s.deliver(batch(&names)).await);
    assert_eq!(results.len(), names.len());
    for (i, name) in names.iter().enumerate() {
        let d = &results[&(i as u64 + 1)];
        if *name == "bad" {
            match d {
                Disposition::Rejected(r) => {
                    assert_eq!(r.reason.code(), "DSP_BAD_REQUEST");
                    assert!(r.message.contains("name is invalid"), "{}", r.message);
                }
                other => panic!("record {}: {other:?}", i + 1),
            }
        } else {
            assert_eq!(*d, Disposition::Accepted, "record {}", i + 1);
        }
    }
    // 8 → 4+4 → 2+2+2+2 → 1+1 twice: 1 + 2 + 4 + 4 requests.
    assert_eq!(s.requests(), 11);
}

#[tokio::test]
async fn a_401_refreshes_the_token_once() {
    let (dsp, api) = dsp(5);
    api.push(Scripted::status(401, error_body("expired")));
    let s = session(&dsp, Duration::from_secs(10));
    let results = s.deliver(batch(&["a"])).await;
    assert_eq!(results[0].1, Disposition::Accepted);
    let tokens: Vec<_> = api.posts().into_iter().map(|c| c.token).collect();
    assert_eq!(tokens, [Some("token-1".into()), Some("token-2".into())]);
    assert_eq!(api.token_grants(), 2);
}

#[tokio::test]
async fn a_401_after_a_fresh_token_fails_the_invocation() {
    let (dsp, api) = dsp(5);
    api.set_default(Scripted::status(401, error_body("no")));
    let s = session(&dsp, Duration::from_secs(10));
    let results = s.deliver(batch(&["a", "b"])).await;
    assert!(results
        .iter()
        .all(|(_, d)| *d == Disposition::Fail(Cause::Unauthorized)));
    assert_eq!(s.fatal(), Some(&Cause::Unauthorized));
    assert_eq!(s.requests(), 2);
    // Later batches of the same invocation are not sent at all.
    let later = s.deliver(batch(&["c"])).await;
    assert!(matches!(
        later[0].1,
        Disposition::Redeliver(Cause::InvocationFailed(_))
    ));
    assert_eq!(s.requests(), 2);
}

#[tokio::test]
async fn a_403_fails_the_invocation_without_retrying() {
    let (dsp, api) = dsp(5);
    api.push(Scripted::status(
        403,
        json!({"code": "FORBIDDEN", "message": "not allowed"}),
    ));
    let s = session(&dsp, Duration::from_secs(10));
    let results = s.deliver(batch(&["a"])).await;
    match &results[0].1 {
        Disposition::Fail(Cause::Refused(m)) => {
            assert!(m.contains("HTTP 403") && m.contains("not allowed"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(s.fatal().is_some());
    assert_eq!(s.requests(), 1);
}

#[tokio::test]
async fn login_with_amazon_refusing_the_credentials_fails_the_invocation() {
    let (dsp, api) = dsp(5);
    api.push_token(Scripted::status(400, json!({"error": "invalid_grant"})))
        .push_token(Scripted::status(400, json!({"error": "invalid_grant"})));
    let s = session(&dsp, Duration::from_secs(10));
    let results = s.deliver(batch(&["a"])).await;
    match &results[0].1 {
        Disposition::Fail(Cause::Token(m)) => assert!(m.contains("invalid_grant"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The secret was read again and a second grant tried before giving up.
    assert_eq!(api.token_grants(), 2);
    assert!(api.posts().is_empty());
}

#[tokio::test]
async fn per_event_codes_decide_between_rejection_and_redelivery() {
    let (dsp, api) = dsp(5);
    api.push(Scripted::per_event(|e| match e["name"].as_str() {
        Some("bad") => Some(("INVALID_ARGUMENT".into(), "bad value".into())),
        Some("slow") => Some(("THROTTLED".into(), "slow down".into())),
        Some("broken") => Some(("InternalError".into(), "oops".into())),
        _ => None,
    }));
    let s = session(&dsp, Duration::from_secs(10));
    let results = by_record(s.deliver(batch(&["ok", "bad", "slow", "broken"])).await);
    assert_eq!(results[&1], Disposition::Accepted);
    assert!(
        matches!(&results[&2], Disposition::Rejected(r) if r.reason.code() == "DSP_INVALID_ARGUMENT")
    );
    assert!(matches!(
        &results[&3],
        Disposition::Redeliver(Cause::DspThrottled(_))
    ));
    assert!(matches!(
        &results[&4],
        Disposition::Redeliver(Cause::DspTransient(_))
    ));
    assert_eq!(s.requests(), 1);
    // A throttling code slows the pacer down like a 429.
    assert_eq!(s.throttled(), 1);
}

#[tokio::test]
async fn a_missing_secret_key_fails_the_invocation_naming_it() {
    let secrets = Arc::new(Memory::default());
    secrets
        .secrets
        .lock()
        .unwrap()
        .insert("dsp/creds".into(), r#"{"client_id":"cid"}"#.into());
    let api = ScriptedDsp::new();
    let dsp = Arc::new(Dsp::with_api(&settings(5), secrets, api.clone()));
    let s = session(&dsp, Duration::from_secs(10));
    let results = s.deliver(batch(&["a"])).await;
    match &results[0].1 {
        Disposition::Fail(Cause::Credentials(m)) => {
            assert!(
                m.contains("dsp/creds") && m.contains("client_secret"),
                "{m}"
            );
            assert!(!m.contains("cid"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(api.calls().is_empty());
}

fn page(ids: &[(&str, &str, &str)], next: Option<&str>) -> Scripted {
    let list: Vec<Value> = ids
        .iter()
        .map(|(id, name, source)| {
            json!({"conversionDefinitionId": id, "name": name, "conversionType": "OFF_AMAZON_PURCHASES",
                   "source": source, "sourceType": "x", "countingMethod": "ALL"})
        })
        .collect();
    let mut body = json!({"conversionDefinitions": list});
    if let Some(n) = next {
        body["nextToken"] = n.into();
    }
    Scripted::status(200, body)
}

#[tokio::test]
async fn definitions_are_listed_page_by_page_and_cached() {
    let (dsp, api) = dsp(5);
    api.push(page(&[("1", "Purchase", "SERVER_TO_SERVER")], Some("p2")))
        .push(page(
            &[("2", "Sign-up", "AMAZON_AD_TAG"), ("3", "App", "MMP")],
            None,
        ));
    let s = session(&dsp, Duration::from_secs(10));
    let listed = s.definitions().await.unwrap();
    let definitions::Listed::Definitions(all) = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(all.list().len(), 3);
    assert_eq!(all.by_id("2").map(|d| &*d.name), Some("Sign-up"));
    let posts = api.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].endpoint, Some(Endpoint::ListDefinitions));
    assert_eq!(posts[0].body, json!({"maxResults": 100}));
    assert_eq!(posts[1].body, json!({"maxResults": 100, "nextToken": "p2"}));
    // A second invocation within the cache's lifetime asks nothing.
    let again = session(&dsp, Duration::from_secs(10));
    assert!(matches!(
        again.definitions().await,
        Ok(definitions::Listed::Definitions(_))
    ));
    assert_eq!(api.posts().len(), 2);
}

#[tokio::test]
async fn a_refused_listing_falls_back_without_failing() {
    let (dsp, api) = dsp(5);
    api.push(Scripted::status(403, error_body("not allowed")));
    let s = session(&dsp, Duration::from_secs(10));
    assert!(matches!(
        s.definitions().await,
        Ok(definitions::Listed::Refused)
    ));
    assert!(s.fatal().is_none());
    assert!(matches!(
        s.definitions().await,
        Ok(definitions::Listed::Refused)
    ));
    assert_eq!(api.posts().len(), 1, "the refusal is cached too");
}

#[tokio::test]
async fn a_listing_that_keeps_failing_is_transient() {
    let (dsp, api) = dsp(2);
    api.set_default(Scripted::status(503, error_body("down")));
    let s = session(&dsp, Duration::from_secs(10));
    let e = s.definitions().await.unwrap_err();
    assert!(matches!(e, Cause::GaveUp { .. }), "{e:?}");
    assert!(s.fatal().is_none());
}
