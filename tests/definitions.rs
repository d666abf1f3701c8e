//! Conversion definitions read from the DSP, end to end: the real binary lists them from the fake
//! DSP, resolves names, sends each event under its definition's source, rejects what the DSP
//! would before sending, and falls back once when the credentials may not list them.

#[allow(dead_code)]
mod support {
    pub mod assertions;
    pub mod fake_dsp;
    pub mod function;
    pub mod moto;
    pub mod payloads;
    mod process;
}

use std::collections::BTreeMap;

use serde_json::{json, Value};
use support::fake_dsp::{FakeDsp, SECRET};
use support::function::{function_env, Function};
use support::moto::Moto;
use support::payloads::{simple_event, sqs_event};

const REJECTS: &str = "rejects";

async fn world(map: &str, extra: &[(&str, &str)]) -> (Moto, FakeDsp, Function) {
    let moto = Moto::start();
    let dsp = FakeDsp::start();
    let clients = moto.clients().await;
    clients.secret("dsp/creds", SECRET).await;
    clients.bucket(REJECTS).await;
    dsp.control(
        "config",
        json!({"conversion_definitions": [
            {"conversionDefinitionId": "111", "name": "Web purchase", "conversionType": "OFF_AMAZON_PURCHASES", "source": "AMAZON_AD_TAG"},
            {"conversionDefinitionId": "222", "name": "Store purchase", "conversionType": "OFF_AMAZON_PURCHASES", "source": "SERVER_TO_SERVER"},
            {"conversionDefinitionId": "333", "name": "Sign-up", "conversionType": "SIGN_UP", "source": "SERVER_TO_SERVER"},
            {"conversionDefinitionId": "444", "name": "App install", "conversionType": "OTHER", "source": "MMP"}
        ], "definitions_page_size": 2}),
    )
    .await;
    let mut env = vec![
        ("DSP_LOOKUP_DEFINITIONS", "true"),
        ("DSP_CONVERSION_DEFINITIONS", map),
        ("REJECTS_BUCKET", REJECTS),
    ];
    env.extend_from_slice(extra);
    let f = Function::start(&function_env(&moto, &dsp, &env), 30);
    (moto, dsp, f)
}

fn event(kind: &str, dedupe: &str, extra: &[(&str, Value)]) -> String {
    let mut e = simple_event(&format!("{dedupe}@example.com"), dedupe);
    e["conversionType"] = kind.into();
    for (k, v) in extra {
        e[*k] = v.clone();
    }
    e.to_string()
}

#[tokio::test]
async fn a_mixed_batch_goes_out_under_each_definitions_source() {
    let (moto, dsp, f) = world(
        r#"{"web":"Web purchase","store":"222","ghost":"Nothing like it"}"#,
        &[],
    )
    .await;
    let bodies = [
        event("web", "w1", &[]),
        event("store", "s1", &[]),
        event("sign-up", "u1", &[("conversionValue", json!(-12.5))]),
        event("web", "w2", &[("source", json!("SERVER_TO_SERVER"))]),
        event("ghost", "g1", &[]),
        event("App install", "a1", &[]),
        event("web", "w3", &[("conversionValue", json!(-3))]),
    ];
    let r = f.invoke(&sqs_event(&bodies)).await;
    assert_eq!(r.body, json!({"batchItemFailures": []}), "{}", f.logs());

    // One request per source, nothing rejected by the DSP.
    let state = dsp.state().await;
    let mut requests: Vec<(String, u64)> = state["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            assert_eq!(q["failed"], 0, "{q}");
            (
                q["source"].as_str().unwrap().to_owned(),
                q["events"].as_u64().unwrap(),
            )
        })
        .collect();
    requests.sort();
    assert_eq!(
        requests,
        [
            ("AMAZON_AD_TAG".to_owned(), 1),
            ("SERVER_TO_SERVER".to_owned(), 2)
        ]
    );
    let by_id: BTreeMap<String, String> = state["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["clientDedupeId"].as_str().unwrap().to_owned(),
                e["conversionDefinitionId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        by_id,
        BTreeMap::from([
            ("s1".to_owned(), "222".to_owned()),
            ("u1".to_owned(), "333".to_owned()),
            ("w1".to_owned(), "111".to_owned()),
        ])
    );
    // The listing was followed page by page.
    assert_eq!(state["definition_requests"].as_array().unwrap().len(), 2);

    // The rest rejected before anything was sent, each with its reason.
    let rejects = moto.clients().await.ndjson_lines(REJECTS).await;
    let mut reasons: Vec<(String, String)> = rejects
        .iter()
        .map(|l| {
            (
                l["origin"]["messageId"].as_str().unwrap().to_owned(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("m4".to_owned(), "SOURCE_MISMATCH".to_owned()),
            ("m5".to_owned(), "UNKNOWN_CONVERSION_DEFINITION".to_owned()),
            ("m6".to_owned(), "UNSUPPORTED_SOURCE".to_owned()),
            ("m7".to_owned(), "INVALID_VALUE".to_owned()),
        ]
    );
    let ghost = rejects
        .iter()
        .find(|l| l["reason"] == "UNKNOWN_CONVERSION_DEFINITION")
        .unwrap();
    let message = ghost["message"].as_str().unwrap();
    assert!(
        message.contains("ghost") && message.contains("Nothing like it"),
        "{message}"
    );
}

#[tokio::test]
async fn a_refused_listing_falls_back_to_ids_with_one_warning() {
    let (_moto, dsp, f) = world(
        r#"{"store":"222"}"#,
        &[("DEFINITIONS_CACHE_TTL_SECONDS", "0")],
    )
    .await;
    dsp.control("config", json!({"definitions_list_status": 403}))
        .await;
    for id in ["s1", "s2"] {
        let r = f.invoke(&sqs_event(&[event("store", id, &[])])).await;
        assert_eq!(r.body, json!({"batchItemFailures": []}), "{}", f.logs());
    }
    assert_eq!(dsp.accepted_ids().await, ["s1", "s2"]);
    let warnings = f.logs().matches("refused to list").count();
    assert_eq!(warnings, 1, "{}", f.logs());
}

#[tokio::test]
async fn a_listing_that_fails_for_now_redelivers_the_events() {
    let (_moto, dsp, f) = world(r#"{"store":"222"}"#, &[("DSP_MAX_ATTEMPTS", "2")]).await;
    dsp.control(
        "faults",
        json!({"target": "list", "status": 503, "count": 10}),
    )
    .await;
    let r = f.invoke(&sqs_event(&[event("store", "s1", &[])])).await;
    assert_eq!(
        r.body,
        json!({"batchItemFailures": [{"itemIdentifier": "m1"}]}),
        "{}",
        f.logs()
    );
    assert!(dsp.accepted_ids().await.is_empty());
}
