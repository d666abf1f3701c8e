//! Delivery to Amazon DSP: credentials, tokens, the rate limit, retries with backoff, splitting
//! of 400s, and the disposition of every event of a batch. Attempts stop at the invocation's
//! cutoff. The wire is behind [`DspApi`]: HTTPS in production, [`double::ScriptedDsp`] in tests.

pub mod answer;
pub mod api;
pub mod credentials;
pub mod definitions;
pub mod double;
pub mod pacer;
mod region;
pub mod token;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use api::{DspApi, Endpoint, Https, Reply};
pub use region::Region;

use crate::batch::{Batch, DeletionBatch};
use crate::domain::{Cause, Disposition, Reason, Rejection};
use crate::event::{Deletion, Validated};
use crate::store::SecretStore;
use answer::Answer;
use api::Caller;
use credentials::CredentialCache;
use pacer::Pacer;
use token::{Token, TokenCache, TokenError};

/// The longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// First backoff step; doubles per attempt, with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest backoff step.
const BACKOFF_CAP: Duration = Duration::from_secs(20);

/// The delivery part of the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Secrets Manager secret name or ARN holding the DSP credentials.
    pub secret_id: String,
    /// Region forced by `DSP_REGION`; otherwise the secret's, else NA.
    pub region: Option<Region>,
    /// API base URL override.
    pub api_url: Option<String>,
    /// Token endpoint override.
    pub token_url: Option<String>,
    /// The deployment's request budget, shared by all concurrent invocations.
    pub max_requests_per_second: u32,
    /// How many invocations may send at the same time.
    pub concurrency: u32,
    /// 1..=10 attempts per request for 429/5xx/network failures.
    pub max_attempts: u32,
    /// How long fetched credentials are reused across warm invocations.
    pub secret_cache_ttl: Duration,
    /// Whether the advertiser's conversion definitions are listed from the DSP.
    pub lookup_definitions: bool,
    /// How long that list is reused across warm invocations.
    pub definitions_ttl: Duration,
}

/// The long-lived delivery state, built at cold start and kept across warm invocations.
pub struct Dsp {
    api: Arc<dyn DspApi>,
    credentials: CredentialCache,
    tokens: TokenCache,
    pacer: Pacer,
    settings: Settings,
    definitions: tokio::sync::Mutex<Option<(definitions::Listed, Instant)>>,
    refusal_warned: std::sync::atomic::AtomicBool,
}

impl Dsp {
    /// Delivery over HTTPS for `settings`, reading credentials through `secrets`. No network
    /// and no TLS set-up here: both wait for the first request.
    pub fn new(settings: &Settings, secrets: Arc<dyn SecretStore>) -> Self {
        Self::with_api(settings, secrets, Arc::new(Https::default()))
    }

    /// Delivery through `api`.
    pub fn with_api(
        settings: &Settings,
        secrets: Arc<dyn SecretStore>,
        api: Arc<dyn DspApi>,
    ) -> Self {
        Self {
            tokens: TokenCache::new(api.clone()),
            api,
            credentials: CredentialCache::new(
                secrets,
                settings.secret_id.clone(),
                settings.secret_cache_ttl,
            ),
            pacer: Pacer::new(settings.max_requests_per_second, settings.concurrency),
            settings: settings.clone(),
            definitions: tokio::sync::Mutex::new(None),
            refusal_warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn region(&self, token: &Token) -> Region {
        self.settings
            .region
            .or(token.credentials.region)
            .unwrap_or(Region::Na)
    }
}

/// Why a request stopped without an answer for its events.
enum Stop {
    /// Try again later (redeliver).
    Redeliver(Cause),
    /// The whole invocation fails.
    Fail(Cause),
}

/// One invocation's delivery: counters, the cutoff, and the failure that stops everything.
pub struct Session {
    dsp: Arc<Dsp>,
    cutoff: Instant,
    fatal: OnceLock<Cause>,
    requests: AtomicU64,
    throttled: AtomicU64,
}

impl Session {
    /// A session that makes no attempt after `cutoff`.
    pub fn new(dsp: Arc<Dsp>, cutoff: Instant) -> Self {
        Self {
            dsp,
            cutoff,
            fatal: OnceLock::new(),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// HTTP requests sent to the DSP, every attempt included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests the DSP throttled (a 429, or a per-event throttling code).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// The failure of the whole invocation, if there was one.
    pub fn fatal(&self) -> Option<&Cause> {
        self.fatal.get()
    }

    /// Delivers a batch: every event comes back with its disposition.
    pub async fn deliver(&self, batch: Batch) -> Vec<(Validated, Disposition)> {
        self.post_all(batch).await
    }

    /// Posts a batch of deletion requests: every entry comes back with its disposition, read
    /// by the same rules as events.
    pub async fn delete(&self, batch: DeletionBatch) -> Vec<(Deletion, Disposition)> {
        self.post_all(batch).await
    }

    /// Posts a batch, splitting it on a 400 until the entries that cause it are alone.
    async fn post_all<B: Entries>(&self, batch: B) -> Vec<(B::Entry, Disposition)> {
        let mut out = Vec::with_capacity(batch.len());
        let mut pending = vec![batch];
        while let Some(batch) = pending.pop() {
            let count = batch.len();
            let all = |d: Disposition| (0..count).map(|_| d.clone()).collect::<Vec<_>>();
            let dispositions = match self.send(&batch).await {
                Ok(Sent::Done(results)) => results,
                Ok(Sent::BadRequest(message)) if count == 1 => all(Disposition::Rejected(
                    Rejection::unreadable(Reason::DspBadRequest, message),
                )),
                Ok(Sent::BadRequest(_)) => {
                    let (head, tail) = batch.split();
                    pending.push(tail);
                    pending.push(head);
                    continue;
                }
                Err(Stop::Redeliver(cause)) => all(Disposition::Redeliver(cause)),
                Err(Stop::Fail(cause)) => {
                    let _ = self.fatal.set(cause.clone());
                    all(Disposition::Fail(cause))
                }
            };
            out.extend(batch.into_entries().into_iter().zip(dispositions));
        }
        out
    }

    fn time_left(&self) -> Option<Duration> {
        self.cutoff
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    async fn auth(&self, stale: Option<&Token>) -> Result<Token, Stop> {
        let timeout = self
            .time_left()
            .ok_or(Stop::Redeliver(Cause::OutOfTime))?
            .min(REQUEST_TIMEOUT);
        let credentials = &self.dsp.credentials;
        let creds = credentials
            .get(stale.map(|t| &t.credentials))
            .await
            .map_err(credentials_stop)?;
        match self.token(&creds, stale.map(|t| &t.access), timeout).await {
            Err(TokenError::Refused { .. }) if stale.is_none() => {
                // Perhaps rotated: read the secret again, once.
                let fresh = credentials
                    .get(Some(&creds))
                    .await
                    .map_err(credentials_stop)?;
                self.token(&fresh, None, timeout).await.map_err(token_stop)
            }
            other => other.map_err(token_stop),
        }
    }

    async fn token(
        &self,
        creds: &Arc<credentials::Credentials>,
        stale: Option<&credentials::Secret>,
        timeout: Duration,
    ) -> Result<Token, TokenError> {
        let settings = &self.dsp.settings;
        let region = settings.region.or(creds.region).unwrap_or(Region::Na);
        let url = settings.token_url.as_deref().unwrap_or(region.token_url());
        self.dsp.tokens.get(url, creds, stale, timeout).await
    }

    async fn send<B: Entries>(&self, batch: &B) -> Result<Sent<Vec<Disposition>>, Stop> {
        let count = batch.len();
        self.request(
            B::ENDPOINT,
            batch.body(),
            |reply| answer::classify(reply, count),
            |results| {
                results
                    .iter()
                    .any(|d| matches!(d, Disposition::Redeliver(c) if c.is_throttling()))
            },
        )
        .await
    }

    /// Posts `body` to `endpoint` until an answer says what became of it: authorization,
    /// the pacer, retries with backoff and `Retry-After`, re-authorization on a 401.
    /// `classify` reads a reply; `throttled` tells whether a read answer asks to slow down.
    async fn request<T>(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
        classify: impl Fn(&Reply) -> Answer<T>,
        throttled: impl Fn(&T) -> bool,
    ) -> Result<Sent<T>, Stop> {
        let mut attempt = 0u32;
        let mut refused: Option<Token> = None;
        let mut reauthorized = false;
        loop {
            if let Some(cause) = self.fatal() {
                return Err(Stop::Redeliver(Cause::InvocationFailed(Box::new(
                    cause.clone(),
                ))));
            }
            let token = match self.auth(refused.as_ref()).await {
                Ok(t) => t,
                Err(Stop::Redeliver(cause)) => {
                    attempt += 1;
                    self.pause(attempt, None, cause).await?;
                    continue;
                }
                Err(fail) => return Err(fail),
            };
            refused = None;
            let left = self.time_left().ok_or(Stop::Redeliver(Cause::OutOfTime))?;
            if tokio::time::timeout(left, self.dsp.pacer.until_ready())
                .await
                .is_err()
            {
                return Err(Stop::Redeliver(Cause::OutOfTime));
            }
            let timeout = self
                .time_left()
                .ok_or(Stop::Redeliver(Cause::OutOfTime))?
                .min(REQUEST_TIMEOUT);
            let creds = &token.credentials;
            let caller = Caller {
                api_url: self
                    .dsp
                    .settings
                    .api_url
                    .as_deref()
                    .unwrap_or(self.dsp.region(&token).api_url()),
                token: &token.access,
                client_id: &creds.client_id,
                profile_id: creds.profile_id.as_deref(),
                advertiser_id: &creds.advertiser_id,
            };
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let reply = match self
                .dsp
                .api
                .post(endpoint, caller, body.clone(), timeout)
                .await
            {
                Ok(reply) => reply,
                Err(cause @ Cause::Internal(_)) => return Err(Stop::Fail(cause)),
                Err(cause) => {
                    self.pause(attempt, None, cause).await?;
                    continue;
                }
            };
            let answer = classify(&reply);
            let slow_down = match &answer {
                Answer::Retry(cause) => cause.is_throttling(),
                Answer::Done(done) => throttled(done),
                _ => false,
            };
            if slow_down {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                self.dsp.pacer.throttled(reply.retry_after);
            } else {
                self.dsp.pacer.succeeded();
            }
            match answer {
                Answer::Done(done) => return Ok(Sent::Done(done)),
                Answer::BadRequest(message) => return Ok(Sent::BadRequest(message)),
                Answer::Unauthorized if !reauthorized => {
                    // Refresh the token and re-read the secret, once.
                    reauthorized = true;
                    refused = Some(token);
                }
                Answer::Unauthorized => return Err(Stop::Fail(Cause::Unauthorized)),
                Answer::Fatal(cause) => return Err(Stop::Fail(cause)),
                Answer::Retry(cause) => {
                    self.pause(attempt, reply.retry_after, cause).await?;
                }
            }
        }
    }

    /// Waits before attempt `attempt + 1`, or gives up when attempts or time run out.
    async fn pause(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        cause: Cause,
    ) -> Result<(), Stop> {
        if attempt >= self.dsp.settings.max_attempts {
            return Err(Stop::Redeliver(Cause::GaveUp {
                cause: Box::new(cause),
                attempts: attempt,
            }));
        }
        let step = BACKOFF_BASE
            .saturating_mul(1 << attempt.min(16))
            .min(BACKOFF_CAP);
        let jitter = Duration::from_millis(fastrand::u64(0..=step.as_millis() as u64));
        // Honour Retry-After, spread a little so that parallel requests do not return together.
        let delay = match retry_after {
            Some(r) => r + Duration::from_millis(fastrand::u64(0..=100)),
            None => jitter,
        };
        match self.time_left() {
            Some(left) if left > delay => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            _ => Err(Stop::Redeliver(Cause::NoTimeLeft(Box::new(cause)))),
        }
    }
}

/// A request's worth of entries (events or deletion requests), answered one disposition each.
trait Entries: Sized {
    /// One entry.
    type Entry;
    /// Where the request goes.
    const ENDPOINT: Endpoint;
    /// How many entries.
    fn len(&self) -> usize;
    /// The request body.
    fn body(&self) -> Vec<u8>;
    /// Two halves.
    fn split(self) -> (Self, Self);
    /// The entries, in request order.
    fn into_entries(self) -> Vec<Self::Entry>;
}

impl Entries for Batch {
    type Entry = Validated;
    const ENDPOINT: Endpoint = Endpoint::EventData;
    fn len(&self) -> usize {
        self.events.len()
    }
    fn body(&self) -> Vec<u8> {
        Batch::body(self)
    }
    fn split(self) -> (Self, Self) {
        Batch::split(self)
    }
    fn into_entries(self) -> Vec<Validated> {
        self.events
    }
}

impl Entries for DeletionBatch {
    type Entry = Deletion;
    const ENDPOINT: Endpoint = Endpoint::Delete;
    fn len(&self) -> usize {
        self.requests.len()
    }
    fn body(&self) -> Vec<u8> {
        DeletionBatch::body(self)
    }
    fn split(self) -> (Self, Self) {
        DeletionBatch::split(self)
    }
    fn into_entries(self) -> Vec<Deletion> {
        self.requests
    }
}

/// What a request came to, short of a failure.
enum Sent<T> {
    /// The answer, read.
    Done(T),
    /// A 400 for the whole request.
    BadRequest(String),
}

fn credentials_stop(e: credentials::CredentialsError) -> Stop {
    if e.is_transient() {
        Stop::Redeliver(Cause::Credentials(e.to_string()))
    } else {
        Stop::Fail(Cause::Credentials(e.to_string()))
    }
}

fn token_stop(e: TokenError) -> Stop {
    match e {
        TokenError::Refused { .. } => Stop::Fail(Cause::Token(e.to_string())),
        TokenError::Unavailable(_) => Stop::Redeliver(Cause::Token(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
