//! Test support: real local services on free loopback ports (moto_server, the fake DSP, the
//! Lambda runtime emulator running the real binary), stopped when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process whose output is collected, killed on drop.
pub struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd`, collecting stdout and stderr; returns the first stdout line too when
    /// `first_line` is set (e.g. `LISTENING <port>`).
    fn spawn(mut cmd: Command, first_line: bool) -> (Self, Option<String>) {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let first = first_line.then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("first line");
            line.trim().to_owned()
        });
        for stream in [
            Box::new(stdout) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        (Self { child, output }, first)
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listening_port(line: Option<String>) -> u16 {
    let line = line.unwrap_or_default();
    line.strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected LISTENING, got {line:?}"))
}

/// moto_server: S3, SQS and Secrets Manager.
pub struct Moto {
    _proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto_server on a free port.
    pub fn start() -> Self {
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let (proc, _) = Proc::spawn(cmd, false);
        wait_for_port(port);
        Self {
            _proc: proc,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The SDK configuration for it.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// The function's environment for it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// Clients.
    pub async fn clients(&self) -> Clients {
        Clients::for_endpoint(&self.endpoint).await
    }
}

/// The SDK configuration for an emulator at `endpoint`.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// SDK clients for test setup and inspection.
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    /// Clients of the emulator at `endpoint`.
    pub async fn for_endpoint(endpoint: &str) -> Self {
        let config = sdk_config(endpoint).await;
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build();
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
        }
    }

    pub async fn bucket(&self, name: &str) {
        self.s3
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket");
    }

    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .expect("put object");
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("get object");
        out.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .to_vec()
    }

    /// All keys of a bucket.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The lines of every object in a bucket, parsed.
    pub async fn ndjson_lines(&self, bucket: &str) -> Vec<Value> {
        let mut lines = Vec::new();
        for key in self.keys(bucket).await {
            let bytes = self.get(bucket, &key).await;
            for line in String::from_utf8(bytes).unwrap().lines() {
                lines.push(serde_json::from_str(line).expect("NDJSON line"));
            }
        }
        lines
    }

    /// `(messageId, record)` of every line of the rejects objects in `bucket`.
    pub async fn rejected_origins(
        &self,
        bucket: &str,
    ) -> std::collections::BTreeSet<(String, u64)> {
        self.ndjson_lines(bucket)
            .await
            .iter()
            .map(|l| {
                (
                    l["origin"]["messageId"].as_str().unwrap().to_owned(),
                    l["origin"]["record"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    pub async fn queue(&self, name: &str) -> String {
        let out = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("create queue");
        out.queue_url().expect("url").to_owned()
    }

    /// Every message waiting in a queue (removed).
    pub async fn drain(&self, url: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            let messages = out.messages();
            if messages.is_empty() {
                return bodies;
            }
            for m in messages {
                bodies.push(m.body().unwrap_or_default().to_owned());
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }

    pub async fn secret(&self, id: &str, value: &str) {
        let exists = self
            .secrets
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .is_ok();
        if exists {
            self.secrets
                .put_secret_value()
                .secret_id(id)
                .secret_string(value)
                .send()
                .await
                .expect("put secret");
        } else {
            self.secrets
                .create_secret()
                .name(id)
                .secret_string(value)
                .send()
                .await
                .expect("create secret");
        }
    }
}

/// The fake DSP and Login with Amazon (`tools/fake_dsp.py`).
pub struct FakeDsp {
    proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
}

/// The fake DSP's default credentials, as the function's secret.
pub const SECRET: &str = r#"{"client_id":"demo-client-id","client_secret":"demo-client-secret","refresh_token":"demo-refresh-token","advertiser_id":"demo-advertiser"}"#;

impl FakeDsp {
    pub fn start() -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg(root().join("tools/fake_dsp.py"))
            .args(["--port", "0", "--quiet"]);
        let (proc, line) = Proc::spawn(cmd, true);
        let port = listening_port(line);
        Self {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// The function's environment for it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DSP_API_URL".into(), self.url.clone()),
            (
                "DSP_TOKEN_URL".into(),
                format!("{}/auth/o2/token", self.url),
            ),
        ]
    }

    pub async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_control/{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("control");
        assert!(r.status().is_success(), "control {path}: {}", r.status());
        r.json().await.expect("control json")
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_control/state", self.url))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("json")
    }

    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// The `clientDedupeId` of every stored event, sorted (duplicates kept: the fake stores
    /// each id once, so a duplicate here is a bug).
    pub async fn accepted_ids(&self) -> Vec<String> {
        sorted_dedupe_ids(self.state().await["accepted"].as_array().unwrap())
    }
}

/// The real `dsp-conversions` binary under the runtime emulator.
pub struct Function {
    proc: Proc,
    /// The emulator's base URL.
    pub url: String,
    http: reqwest::Client,
}

/// The answer to one invocation.
#[derive(Debug)]
pub struct Invoked {
    /// HTTP status of the invoke call (200, or 502 when the function gave no answer).
    pub status: u16,
    /// Whether the function reported an error.
    pub error: bool,
    /// The body.
    pub body: Value,
    /// How long it took.
    pub elapsed: Duration,
}

impl Function {
    /// Starts the function with `env` (on top of a clean environment) and a deadline of
    /// `timeout` seconds per invocation.
    pub fn start(env: &[(String, String)], timeout: u64) -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg(root().join("tools/lambda_emulator.py"))
            .args(["--port", "0", "--timeout", &timeout.to_string(), "--"])
            .arg(env!("CARGO_BIN_EXE_dsp-conversions"));
        cmd.env_clear();
        for key in ["PATH", "HOME", "TMPDIR"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("RUST_BACKTRACE", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, line) = Proc::spawn(cmd, true);
        let port = listening_port(line);
        Self {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn invoke(&self, payload: &Value) -> Invoked {
        let start = Instant::now();
        let r = self
            .http
            .post(format!("{}/2015-03-31/functions/_/invocations", self.url))
            .json(payload)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("invoke");
        let status = r.status().as_u16();
        let error = r.headers().contains_key("x-amz-function-error");
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Invoked {
            status,
            error,
            body,
            elapsed: start.elapsed(),
        }
    }

    /// Everything the function (and the emulator) logged.
    pub fn logs(&self) -> String {
        self.proc.output()
    }

    /// The summary log lines (text format), parsed into `key=value` pairs.
    pub fn summaries(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.logs()
            .lines()
            .filter(|l| {
                l.contains(" summary ")
                    || l.ends_with(" summary")
                    || l.contains("summary received=")
            })
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }
}

/// The standard environment of the function against moto and the fake DSP.
pub fn function_env(moto: &Moto, dsp: &FakeDsp, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.extend(dsp.env());
    env.push(("DSP_SECRET_ID".into(), "dsp/creds".into()));
    env.push((
        "DSP_CONVERSION_DEFINITIONS".into(),
        r#"{"purchase":"582947103856","signup":"582947103857"}"#.into(),
    ));
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).into(), (*v).into()));
    }
    env
}

/// An RFC 3339 time `minutes_ago` minutes ago.
pub fn minutes_ago(minutes: i64) -> String {
    (OffsetDateTime::now_utc() - time::Duration::minutes(minutes))
        .format(&Rfc3339)
        .unwrap()
}

/// Shifts every RFC 3339 timestamp with an offset in `text` by one delta, so that the newest
/// becomes an hour ago (sample files carry fixed dates).
pub fn refresh_timestamps(text: &str) -> String {
    let re = |s: &str| -> Option<(usize, usize, OffsetDateTime)> {
        // Finds the next `YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`.
        let bytes = s.as_bytes();
        let mut i = 0;
        while i + 20 <= bytes.len() {
            if bytes[i].is_ascii_digit()
                && bytes.get(i + 4) == Some(&b'-')
                && bytes.get(i + 10) == Some(&b'T')
            {
                let mut end = i + 19;
                if bytes.get(end) == Some(&b'.') {
                    end += 1;
                    while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                        end += 1;
                    }
                }
                let end = match bytes.get(end) {
                    Some(b'Z') => end + 1,
                    Some(b'+' | b'-') => end + 6,
                    _ => {
                        i += 1;
                        continue;
                    }
                };
                if let Some(t) = s
                    .get(i..end)
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                {
                    return Some((i, end, t));
                }
            }
            i += 1;
        }
        None
    };
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some((a, b, t)) = re(&text[offset..]) {
        found.push((offset + a, offset + b, t));
        offset += b;
    }
    let Some(newest) = found.iter().map(|f| f.2).max() else {
        return text.to_owned();
    };
    let delta = OffsetDateTime::now_utc() - time::Duration::hours(1) - newest;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (a, b, t) in found {
        out.push_str(&text[last..a]);
        out.push_str(&(t + delta).format(&Rfc3339).unwrap());
        last = b;
    }
    out.push_str(&text[last..]);
    out
}

/// A sample payload or data file from `events/`, timestamps refreshed.
pub fn sample(path: &str) -> String {
    refresh_timestamps(&std::fs::read_to_string(root().join("events").join(path)).expect("sample"))
}

/// An SQS event with these bodies (ids `m1`, `m2`, …).
pub fn sqs_event(bodies: &[String]) -> Value {
    sqs_event_with(
        bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("m{}", i + 1), b.clone(), None))
            .collect(),
    )
}

/// An SQS event of `(id, body, FIFO group)`.
pub fn sqs_event_with(messages: Vec<(String, String, Option<&str>)>) -> Value {
    let fifo = messages.iter().any(|m| m.2.is_some());
    let arn = if fifo {
        "arn:aws:sqs:us-east-1:123456789012:q.fifo"
    } else {
        "arn:aws:sqs:us-east-1:123456789012:q"
    };
    let records: Vec<Value> = messages
        .into_iter()
        .map(|(id, body, group)| {
            let mut attributes = json!({"ApproximateReceiveCount": "1", "SentTimestamp": "1764322200000",
                "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1764322200001"});
            if let Some(g) = group {
                attributes["MessageGroupId"] = json!(g);
            }
            json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body, "attributes": attributes,
                   "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": arn,
                   "awsRegion": "us-east-1"})
        })
        .collect();
    json!({"Records": records})
}

/// An S3 event notification for these `(bucket, url-encoded key)`s.
pub fn s3_event(objects: &[(&str, &str)]) -> Value {
    let records: Vec<Value> = objects
        .iter()
        .map(|(bucket, key)| {
            json!({"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                   "eventTime": "2026-11-28T09:30:00.000Z", "eventName": "ObjectCreated:Put",
                   "userIdentity": {"principalId": "AWS:EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                   "responseElements": {}, "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                   "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": format!("arn:aws:s3:::{bucket}")},
                   "object": {"key": key, "size": 1, "eTag": "0", "sequencer": "0"}}})
        })
        .collect();
    json!({"Records": records})
}

/// A simple-shape event with a fresh timestamp.
pub fn simple_event(email: &str, dedupe: &str) -> Value {
    json!({"eventTime": minutes_ago(30), "conversionType": "purchase", "conversionValue": 19.99,
           "currencyCode": "USD", "countryCode": "US", "userIdentifier": email, "clientDedupeId": dedupe})
}

/// Fails if any of `needles` appears in `haystack` (logs must never carry secrets, tokens or
/// raw identifiers).
pub fn assert_no_leaks(haystack: &str, needles: &[String]) {
    for n in needles.iter().filter(|n| !n.is_empty()) {
        assert!(
            !haystack.contains(n.as_str()),
            "logs contain {n:?}:\n{haystack}"
        );
    }
}

/// What must never be logged in tests against the fake DSP: its credentials and tokens.
pub async fn secrets_of(dsp: &FakeDsp) -> Vec<String> {
    let mut needles: Vec<String> = vec!["demo-client-secret".into(), "demo-refresh-token".into()];
    if let Some(tokens) = dsp.state().await["issued_tokens"].as_array() {
        needles.extend(tokens.iter().filter_map(|t| t.as_str().map(str::to_owned)));
    }
    needles
}

/// Reads a file of the crate.
pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(root().join(path)).expect("file")
}

/// A writer whose bytes can be read afterwards (request bodies of a dry run).
#[derive(Clone, Default)]
pub struct Shared(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    /// The lines written, parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The `clientDedupeId` of `events`, sorted (duplicates kept).
pub fn sorted_dedupe_ids<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    let mut ids: Vec<String> = events
        .into_iter()
        .map(|e| e["clientDedupeId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The `clientDedupeId` of every event of request bodies (or retry-queue messages), sorted.
pub fn dedupe_ids(bodies: &[Value]) -> Vec<String> {
    sorted_dedupe_ids(
        bodies
            .iter()
            .flat_map(|b| b["eventData"].as_array().unwrap()),
    )
}
