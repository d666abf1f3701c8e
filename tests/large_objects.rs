//! A file far larger than one invocation, end to end: uploaded to moto's S3, announced through
//! the conversions queue (S3 → SQS), and imported by the real binary under the runtime emulator
//! in a chain of one-second invocations that continue one another through the queue, with
//! ranged reads of the object and `If-Match` on its ETag.

#[allow(dead_code)]
mod support {
    pub mod assertions;
    pub mod fake_dsp;
    pub mod function;
    pub mod moto;
    pub mod payloads;
    mod process;
}

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::fake_dsp::FakeDsp;
use support::function::{function_env, Function};
use support::moto::{Clients, Moto};
use support::payloads::{s3_event, simple_event};

const UPLOADS: &str = "uploads";
const REJECTS: &str = "rejects";

struct World {
    _moto: Moto,
    dsp: FakeDsp,
    clients: Clients,
    queue: String,
    function: Function,
}

impl World {
    async fn new() -> Self {
        let moto = Moto::start();
        let dsp = FakeDsp::start();
        let clients = moto.clients().await;
        clients.bucket(UPLOADS).await;
        clients.bucket(REJECTS).await;
        clients.secret("dsp/creds", support::fake_dsp::SECRET).await;
        let queue = clients.queue("conversions").await;
        let env = function_env(
            &moto,
            &dsp,
            &[
                ("RETRY_QUEUE_URL", queue.as_str()),
                ("REJECTS_BUCKET", REJECTS),
                ("DSP_MAX_EVENTS_PER_REQUEST", "10"),
                ("DSP_MAX_REQUESTS_PER_SECOND", "20"),
                ("DSP_MAX_IN_FLIGHT", "2"),
            ],
        );
        // One second per invocation: a quarter of it is kept back, so each delivers ~150 events.
        let function = Function::start(&env, 1);
        Self {
            _moto: moto,
            dsp,
            clients,
            queue,
            function,
        }
    }

    /// Plays the SQS trigger until the queue is empty; returns how many invocations it took.
    async fn drain(&self) -> usize {
        let mut invocations = 0;
        loop {
            let bodies = self.clients.drain(&self.queue).await;
            if bodies.is_empty() {
                return invocations;
            }
            for chunk in bodies.chunks(10) {
                invocations += 1;
                assert!(invocations < 500, "the chain does not end");
                let records: Vec<Value> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, body)| {
                        json!({"messageId": format!("m{invocations}-{i}"), "receiptHandle": "r",
                               "body": body, "attributes": {}, "messageAttributes": {},
                               "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                               "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:conversions"})
                    })
                    .collect();
                let r = self.function.invoke(&json!({"Records": records})).await;
                let failed = r.body["batchItemFailures"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{r:?}\n{}", self.function.logs()));
                for f in failed {
                    let id = f["itemIdentifier"].as_str().unwrap();
                    let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
                    self.clients.send(&self.queue, &chunk[i]).await;
                }
            }
        }
    }

    /// Announces `key` on the queue the way S3 does.
    async fn notify(&self, key: &str) {
        let body = s3_event(&[(UPLOADS, key)]).to_string();
        self.clients.send(&self.queue, &body).await;
    }
}

/// `n` events with dedupe ids `big-1..`, every 50th invalid (a bad currency).
fn lines(n: usize) -> (String, BTreeSet<u64>) {
    let mut text = String::new();
    let mut invalid = BTreeSet::new();
    for i in 1..=n {
        let mut e = simple_event(&format!("user{i}@example.com"), &format!("big-{i}"));
        if i % 50 == 0 {
            e["currencyCode"] = "XYZ".into();
            invalid.insert(i as u64);
        }
        text.push_str(&e.to_string());
        text.push('\n');
    }
    (text, invalid)
}

#[tokio::test]
async fn a_file_twenty_invocations_long_is_imported_exactly_once_through_the_queue() {
    let w = World::new().await;
    let n = 4000;
    let (text, invalid) = lines(n);
    w.clients
        .put(UPLOADS, "daily/conversions.ndjson", text.into_bytes())
        .await;
    w.notify("daily/conversions.ndjson").await;
    let invocations = w.drain().await;
    assert!(invocations >= 20, "only {invocations} invocations");

    // A request cut at an invocation's cutoff may have been taken: its events are sent again
    // and the DSP keeps one of each (the fake counts the others as duplicates).
    let accepted: BTreeSet<String> = w.dsp.accepted_ids().await.into_iter().collect();
    let expected: BTreeSet<String> = (1..=n as u64)
        .filter(|r| !invalid.contains(r))
        .map(|r| format!("big-{r}"))
        .collect();
    assert_eq!(accepted.len(), expected.len());
    assert_eq!(accepted, expected);

    // Each invalid line rejected once, with its record and line as in one pass.
    let mut rejected: Vec<(u64, u64)> = w
        .clients
        .ndjson_lines(REJECTS)
        .await
        .iter()
        .map(|l| {
            assert_eq!(l["origin"]["key"], "daily/conversions.ndjson");
            (
                l["origin"]["record"].as_u64().unwrap(),
                l["origin"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    rejected.sort_unstable();
    let want: Vec<(u64, u64)> = invalid.iter().map(|r| (*r, *r)).collect();
    assert_eq!(rejected, want);
    let logs = w.function.logs();
    assert!(logs.contains("continues in a later invocation"), "{logs}");
}

#[tokio::test]
async fn an_object_replaced_mid_chain_drops_its_continuation() {
    let w = World::new().await;
    let (text, _) = lines(3000);
    w.clients
        .put(UPLOADS, "daily/replaced.ndjson", text.into_bytes())
        .await;
    // The first invocation, directly from S3: it cannot finish and answers where it stopped.
    let r = w
        .function
        .invoke(&s3_event(&[(UPLOADS, "daily/replaced.ndjson")]))
        .await;
    let resume_at = r.body["resumeAt"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(resume_at > 1);
    // A new upload replaces it (it would have its own notification).
    w.clients
        .put(UPLOADS, "daily/replaced.ndjson", lines(5).0.into_bytes())
        .await;
    w.drain().await;
    let accepted = w.dsp.accepted_ids().await;
    // What the first invocation read was delivered (directly or as leftovers); nothing after.
    assert!(
        accepted.len() as u64 >= resume_at - 1 - (resume_at - 1) / 50,
        "{} < {resume_at}",
        accepted.len()
    );
    assert!(!accepted.iter().any(|id| {
        id.strip_prefix("big-")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= resume_at)
    }));
    let logs = w.function.logs();
    assert!(
        logs.contains("continuation dropped") && logs.contains("daily/replaced.ndjson"),
        "{logs}"
    );
}
