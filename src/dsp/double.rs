//! An in-process stand-in for Login with Amazon and the DSP, for tests: it answers each call
//! with the next scripted reply (or a default), and records every call for assertions. Delivery
//! logic — retries, `Retry-After`, splitting, re-authorization — is tested against it without a
//! network or a subprocess.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{Caller, DspApi, Endpoint, Grant, Reply};
use crate::domain::Cause;
use crate::store::BoxFuture;

/// How the double answers one call.
pub enum Scripted {
    /// This reply.
    Reply(Reply),
    /// A 207 that accepts every event of the request.
    AllAccepted,
    /// A reply made from the request's body (parsed JSON).
    With(Box<dyn Fn(&Value) -> Reply + Send + Sync>),
    /// No answer at all: a network failure.
    NoAnswer,
    /// The same, after a delay.
    Delayed(Duration, Box<Scripted>),
}

impl Scripted {
    /// A reply with `status` and a JSON body.
    pub fn status(status: u16, body: Value) -> Self {
        Scripted::Reply(Reply::new(status, body.to_string()))
    }

    /// A 429 with `Retry-After`.
    pub fn throttled(retry_after: Option<Duration>) -> Self {
        Scripted::Reply(Reply {
            retry_after,
            ..Reply::new(429, json!({"message": "Too Many Requests"}).to_string())
        })
    }

    /// A 207 built per event: `verdict(event)` is `None` to accept it, or `Some((code, message))`
    /// to list it under `error`.
    pub fn per_event(
        verdict: impl Fn(&Value) -> Option<(String, String)> + Send + Sync + 'static,
    ) -> Self {
        Scripted::With(Box::new(move |body| {
            let (mut success, mut error) = (Vec::new(), Vec::new());
            for (i, event) in events(body).iter().enumerate() {
                match verdict(event) {
                    None => success.push(json!({"index": i + 1, "message": "accepted"})),
                    Some((code, message)) => {
                        error.push(json!({"index": i + 1, "code": code, "message": message}))
                    }
                }
            }
            Reply::new(207, json!({"success": success, "error": error}).to_string())
        }))
    }

    fn answer<'a>(&'a self, body: &'a Value) -> BoxFuture<'a, Result<Reply, Cause>> {
        Box::pin(async move {
            match self {
                Scripted::Reply(reply) => Ok(reply.clone()),
                Scripted::AllAccepted => {
                    let success: Vec<Value> = (1..=events(body).len())
                        .map(|i| json!({"index": i, "message": "accepted"}))
                        .collect();
                    Ok(Reply::new(
                        207,
                        json!({"success": success, "error": []}).to_string(),
                    ))
                }
                Scripted::With(make) => Ok(make(body)),
                Scripted::NoAnswer => Err(Cause::Network(
                    "network error: connection reset (scripted)".into(),
                )),
                Scripted::Delayed(delay, then) => {
                    tokio::time::sleep(*delay).await;
                    then.answer(body).await
                }
            }
        })
    }
}

/// The entries of a request body: its events, or its deletion requests.
pub fn events(body: &Value) -> &[Value] {
    body["eventData"]
        .as_array()
        .or_else(|| body["deletionRequests"].as_array())
        .map_or(&[], Vec::as_slice)
}

/// One call the double received.
#[derive(Clone, Debug)]
pub struct Call {
    /// The endpoint, or `None` for the token grant.
    pub endpoint: Option<Endpoint>,
    /// The bearer token sent (DSP calls).
    pub token: Option<String>,
    /// The body, parsed (DSP calls).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    posts: VecDeque<Scripted>,
    tokens: VecDeque<Scripted>,
    default_post: Option<Arc<Scripted>>,
    calls: Vec<Call>,
    issued: u32,
}

/// The scripted DSP and Login with Amazon.
#[derive(Default)]
pub struct ScriptedDsp {
    state: Mutex<State>,
}

impl ScriptedDsp {
    /// A double that accepts everything until told otherwise.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers the next DSP call with `reply` (replies are used in the order pushed).
    pub fn push(&self, reply: Scripted) -> &Self {
        self.state().posts.push_back(reply);
        self
    }

    /// Answers the next token grant with `reply`; otherwise a fresh token is issued.
    pub fn push_token(&self, reply: Scripted) -> &Self {
        self.state().tokens.push_back(reply);
        self
    }

    /// How DSP calls are answered once the pushed replies are used up (default: all accepted).
    pub fn set_default(&self, reply: Scripted) -> &Self {
        self.state().default_post = Some(Arc::new(reply));
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The DSP calls so far.
    pub fn posts(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.endpoint.is_some())
            .collect()
    }

    /// How many token grants were asked for.
    pub fn token_grants(&self) -> usize {
        self.calls().iter().filter(|c| c.endpoint.is_none()).count()
    }

    fn record(&self, call: Call) {
        self.state().calls.push(call);
    }
}

impl DspApi for ScriptedDsp {
    fn token<'a>(
        &'a self,
        _grant: Grant<'a>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Reply, Cause>> {
        Box::pin(async move {
            self.record(Call {
                endpoint: None,
                token: None,
                body: Value::Null,
                at: Instant::now(),
            });
            let scripted = {
                let mut state = self.state();
                state.issued += 1;
                let issued = state.issued;
                state.tokens.pop_front().unwrap_or_else(|| {
                    Scripted::status(
                        200,
                        json!({"access_token": format!("token-{issued}"), "expires_in": 3600, "token_type": "bearer"}),
                    )
                })
            };
            scripted.answer(&Value::Null).await
        })
    }

    fn post<'a>(
        &'a self,
        endpoint: Endpoint,
        caller: Caller<'a>,
        body: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Reply, Cause>> {
        Box::pin(async move {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.record(Call {
                endpoint: Some(endpoint),
                token: Some(caller.token.expose().to_owned()),
                body: body.clone(),
                at: Instant::now(),
            });
            let next = self.state().posts.pop_front();
            match next {
                Some(scripted) => scripted.answer(&body).await,
                None => {
                    let default = self.state().default_post.clone();
                    match default {
                        Some(scripted) => scripted.answer(&body).await,
                        None => Scripted::AllAccepted.answer(&body).await,
                    }
                }
            }
        })
    }
}
