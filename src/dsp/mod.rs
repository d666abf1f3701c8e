//! Delivery to Amazon DSP: credentials, tokens, the rate limit, retries with backoff, splitting
//! of 400s, and the per-event result of every batch. Attempts stop at the invocation's cutoff.

pub mod client;
pub mod credentials;
pub mod token;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::batch::Batch;
use crate::config::{Config, Region};
use crate::event::Validated;
use crate::outcome::{Reason, Rejection};
use crate::store::SecretStore;
use client::{Answer, EventResult, Request};
use credentials::CredentialCache;
use token::{Token, TokenCache, TokenError};

/// The longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// First backoff step; doubles per attempt, with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest backoff step.
const BACKOFF_CAP: Duration = Duration::from_secs(20);

/// The HTTPS client, built at its first use: building it loads the system's root certificates
/// (several milliseconds), which a cold start should not pay before an event needs delivering
/// (dry runs and all-rejected batches never do).
#[derive(Default)]
pub struct Http(OnceLock<reqwest::Client>);

impl Http {
    /// The client, built now if this is its first use.
    pub fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.0.get() {
            return Ok(client);
        }
        let built = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {}", crate::describe(&e)))?;
        Ok(self.0.get_or_init(|| built))
    }
}

/// The long-lived delivery state, built at cold start and kept across warm invocations.
pub struct Dsp {
    http: Arc<Http>,
    credentials: CredentialCache,
    tokens: TokenCache,
    limiter: DefaultDirectRateLimiter,
    region: Option<Region>,
    api_url: Option<String>,
    token_url: Option<String>,
    max_attempts: u32,
}

impl Dsp {
    /// Delivery for `config`, reading credentials through `secrets`. No network and no TLS
    /// set-up here: both wait for the first request.
    pub fn new(config: &Config, secrets: Arc<dyn SecretStore>) -> Self {
        let http = Arc::new(Http::default());
        let rate = NonZeroU32::new(config.max_requests_per_second).unwrap_or(NonZeroU32::MIN);
        // A burst of one spaces requests evenly, so no one-second window holds more than `rate`.
        let quota = Quota::per_second(rate).allow_burst(NonZeroU32::MIN);
        Self {
            tokens: TokenCache::new(http.clone()),
            http,
            credentials: CredentialCache::new(
                secrets,
                config.secret_id.clone(),
                config.secret_cache_ttl,
            ),
            limiter: RateLimiter::direct(quota),
            region: config.region,
            api_url: config.api_url.clone(),
            token_url: config.token_url.clone(),
            max_attempts: config.max_attempts,
        }
    }

    fn region(&self, token: &Token) -> Region {
        self.region
            .or(token.credentials.region)
            .unwrap_or(Region::Na)
    }
}

/// Why a batch could not be delivered.
enum Failure {
    /// Try again later (redeliver).
    Transient(String),
    /// The whole invocation fails.
    Fatal(String),
}

/// One invocation's delivery: counters, the cutoff, and the failure that stops everything.
pub struct Session {
    dsp: Arc<Dsp>,
    cutoff: Instant,
    fatal: OnceLock<String>,
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

    /// Requests answered 429.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// The failure of the whole invocation, if there was one.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.get().map(String::as_str)
    }

    /// Delivers a batch: every event comes back with its result.
    pub async fn deliver(&self, batch: Batch) -> Vec<(Validated, EventResult)> {
        let mut out = Vec::with_capacity(batch.events.len());
        let mut pending = vec![batch];
        while let Some(batch) = pending.pop() {
            match self.send(&batch).await {
                Ok(Sent::Results(results)) => out.extend(batch.events.into_iter().zip(results)),
                Ok(Sent::BadRequest(message)) if batch.events.len() == 1 => {
                    let rejection = Rejection::unreadable(Reason::DspBadRequest, message);
                    out.extend(
                        batch
                            .events
                            .into_iter()
                            .map(|e| (e, EventResult::Rejected(rejection.clone()))),
                    );
                }
                Ok(Sent::BadRequest(_)) => {
                    let (head, tail) = batch.split();
                    pending.push(tail);
                    pending.push(head);
                }
                Err(failure) => {
                    let cause = match failure {
                        Failure::Transient(cause) => cause,
                        Failure::Fatal(cause) => {
                            let _ = self.fatal.set(cause);
                            self.fatal().unwrap_or_default().to_owned()
                        }
                    };
                    out.extend(
                        batch
                            .events
                            .into_iter()
                            .map(|e| (e, EventResult::Transient(cause.clone()))),
                    );
                }
            }
        }
        out
    }

    fn time_left(&self) -> Option<Duration> {
        self.cutoff
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    async fn auth(&self, stale: Option<&Token>) -> Result<Token, Failure> {
        let timeout = self
            .time_left()
            .ok_or_else(out_of_time)?
            .min(REQUEST_TIMEOUT);
        let credentials = &self.dsp.credentials;
        let creds = credentials
            .get(stale.map(|t| &t.credentials))
            .await
            .map_err(credentials_failure)?;
        match self.token(&creds, stale.map(|t| &t.access), timeout).await {
            Err(TokenError::Refused { .. }) if stale.is_none() => {
                // Perhaps rotated: read the secret again, once.
                let fresh = credentials
                    .get(Some(&creds))
                    .await
                    .map_err(credentials_failure)?;
                self.token(&fresh, None, timeout)
                    .await
                    .map_err(token_failure)
            }
            other => other.map_err(token_failure),
        }
    }

    async fn token(
        &self,
        creds: &Arc<credentials::Credentials>,
        stale: Option<&credentials::Secret>,
        timeout: Duration,
    ) -> Result<Token, TokenError> {
        let dsp = &self.dsp;
        let region = dsp.region.or(creds.region).unwrap_or(Region::Na);
        let url = dsp.token_url.as_deref().unwrap_or(region.token_url());
        dsp.tokens.get(url, creds, stale, timeout).await
    }

    async fn send(&self, batch: &Batch) -> Result<Sent, Failure> {
        let body = batch.body();
        let mut attempt = 0u32;
        let mut refused: Option<Token> = None;
        let mut reauthorized = false;
        loop {
            if let Some(cause) = self.fatal() {
                return Err(Failure::Transient(format!("invocation failed: {cause}")));
            }
            let token = match self.auth(refused.as_ref()).await {
                Ok(t) => t,
                Err(Failure::Transient(cause)) => {
                    attempt += 1;
                    self.pause(attempt, None, &cause).await?;
                    continue;
                }
                Err(fatal) => return Err(fatal),
            };
            refused = None;
            let left = self.time_left().ok_or_else(out_of_time)?;
            if tokio::time::timeout(left, self.dsp.limiter.until_ready())
                .await
                .is_err()
            {
                return Err(out_of_time());
            }
            let timeout = self
                .time_left()
                .ok_or_else(out_of_time)?
                .min(REQUEST_TIMEOUT);
            let creds = &token.credentials;
            let api = self
                .dsp
                .api_url
                .as_deref()
                .unwrap_or(self.dsp.region(&token).api_url());
            let url = format!(
                "{api}/accounts/{}/dsp/conversionDefinitions/eventData",
                percent_encoding::utf8_percent_encode(
                    &creds.advertiser_id,
                    percent_encoding::NON_ALPHANUMERIC
                )
            );
            let request = Request {
                url: &url,
                token: token.access.expose(),
                client_id: creds.client_id.expose(),
                profile_id: creds.profile_id.as_deref(),
                advertiser_id: &creds.advertiser_id,
                timeout,
            };
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let http = self.dsp.http.client().map_err(Failure::Fatal)?;
            match client::post(http, &request, body.clone(), batch.events.len()).await {
                Answer::Results(results) => return Ok(Sent::Results(results)),
                Answer::BadRequest(message) => return Ok(Sent::BadRequest(message)),
                Answer::Unauthorized if !reauthorized => {
                    // Refresh the token and re-read the secret, once.
                    reauthorized = true;
                    refused = Some(token);
                }
                Answer::Unauthorized => {
                    return Err(Failure::Fatal(
                        "the DSP refused a fresh access token (HTTP 401)".into(),
                    ))
                }
                Answer::Fatal(cause) => return Err(Failure::Fatal(cause)),
                Answer::Retry {
                    retry_after,
                    throttled,
                    cause,
                } => {
                    if throttled {
                        self.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    self.pause(attempt, retry_after, &cause).await?;
                }
            }
        }
    }

    /// Waits before attempt `attempt + 1`, or gives up when attempts or time run out.
    async fn pause(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        cause: &str,
    ) -> Result<(), Failure> {
        if attempt >= self.dsp.max_attempts {
            return Err(Failure::Transient(format!(
                "{cause} (after {attempt} attempts)"
            )));
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
            _ => Err(Failure::Transient(format!(
                "{cause}; no time left for another attempt"
            ))),
        }
    }
}

enum Sent {
    Results(Vec<EventResult>),
    BadRequest(String),
}

fn credentials_failure(e: credentials::CredentialsError) -> Failure {
    if e.is_transient() {
        Failure::Transient(e.to_string())
    } else {
        Failure::Fatal(e.to_string())
    }
}

fn token_failure(e: TokenError) -> Failure {
    match e {
        TokenError::Refused { .. } => Failure::Fatal(e.to_string()),
        TokenError::Unavailable(_) => Failure::Transient(e.to_string()),
    }
}

fn out_of_time() -> Failure {
    Failure::Transient("the invocation's time ran out before delivery".into())
}
