//! The fake DSP and Login with Amazon (`tools/fake_dsp.py`) on a free loopback port: its control
//! endpoints, what it stored, and the credentials and tokens that must never be logged.

use std::process::Command;

use serde_json::Value;

use super::assertions::sorted_dedupe_ids;
use super::process::{root, Proc};

/// The fake DSP's default credentials, as the function's secret.
pub const SECRET: &str = r#"{"client_id":"demo-client-id","client_secret":"demo-client-secret","refresh_token":"demo-refresh-token","advertiser_id":"demo-advertiser"}"#;

/// The fake DSP and Login with Amazon (`tools/fake_dsp.py`).
pub struct FakeDsp {
    proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
}

impl FakeDsp {
    /// Starts the fake on a port it picks.
    pub fn start() -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg(root().join("tools/fake_dsp.py"))
            .args(["--port", "0", "--quiet"]);
        let (proc, port) = Proc::spawn_listening(cmd);
        Self {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// The function's environment for it.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DSP_API_URL".into(), self.url.clone()),
            (
                "DSP_TOKEN_URL".into(),
                format!("{}/auth/o2/token", self.url),
            ),
        ]
    }

    /// Posts `body` to `/_control/{path}` (`config`, `faults`, `reset`, `rotate`, …) and returns
    /// the answer.
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

    /// `/_control/state`: stored events, requests, issued tokens and counters.
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

    /// Everything the fake printed.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// The `clientDedupeId` of every stored event, sorted (duplicates kept: the fake stores
    /// each id once, so a duplicate here is a bug).
    pub async fn accepted_ids(&self) -> Vec<String> {
        sorted_dedupe_ids(self.state().await["accepted"].as_array().unwrap())
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
