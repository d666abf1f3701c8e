//! The real `dsp-conversions` binary under the runtime emulator (`tools/lambda_emulator.py`):
//! its environment against moto and the fake DSP, its invocations and its logs.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fake_dsp::FakeDsp;
use super::moto::Moto;
use super::process::{root, Proc};

/// The real `dsp-conversions` binary under the runtime emulator.
pub struct Function {
    proc: Proc,
    /// The emulator's base URL.
    url: String,
    http: reqwest::Client,
    /// Invocations answered so far.
    invocations: std::sync::atomic::AtomicUsize,
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
        let (proc, port) = Proc::spawn_listening(cmd);
        Self {
            invocations: std::sync::atomic::AtomicUsize::new(0),
            proc,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// Invokes the function once with `payload`, as Lambda would.
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
        self.invocations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Invoked {
            status,
            error,
            body,
            elapsed: start.elapsed(),
        }
    }

    /// Everything the function (and the emulator) logged. The logs arrive through a pipe read
    /// by another thread: this waits (a few seconds at most, on a loaded machine) until every
    /// invocation answered so far has its summary line.
    pub fn logs(&self) -> String {
        let wanted = self.invocations.load(std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let logs = self.proc.output();
            if logs.lines().filter(|l| is_summary(l)).count() >= wanted || Instant::now() > deadline
            {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The summary log lines (text format), parsed into `key=value` pairs.
    pub fn summaries(&self) -> Vec<HashMap<String, String>> {
        self.logs()
            .lines()
            .filter(|l| is_summary(l))
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
    // The definitions are static here (ids from the map); tests of the lookup turn it on.
    env.push(("DSP_LOOKUP_DEFINITIONS".into(), "false".into()));
    env.push((
        "DSP_CONVERSION_DEFINITIONS".into(),
        r#"{"purchase":"582947103856","signup":"582947103857","web_signup":"582947103859"}"#.into(),
    ));
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).into(), (*v).into()));
    }
    env
}

/// Whether a log line is an invocation's summary line (text format).
fn is_summary(line: &str) -> bool {
    line.contains(" summary ") || line.ends_with(" summary") || line.contains("summary received=")
}
