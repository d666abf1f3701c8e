//! Login with Amazon: access tokens from the refresh-token grant, cached until shortly before
//! they expire and shared by all requests of warm invocations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::api::{DspApi, Grant};
use super::credentials::{Credentials, Secret};

/// Tokens are renewed this long before `expires_in` runs out.
const EARLY: Duration = Duration::from_secs(60);

/// An access token and the credentials it was issued for.
#[derive(Clone, Debug)]
pub struct Token {
    /// The bearer token.
    pub access: Secret,
    /// The credentials it belongs to.
    pub credentials: Arc<Credentials>,
    expires: Instant,
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Login with Amazon refused the credentials (`invalid_grant`, `invalid_client`…).
    #[error("Login with Amazon refused the credentials: HTTP {status} {error}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The `error` code (no description: it may quote the request).
        error: String,
    },
    /// Network failure, timeout, 429 or 5xx.
    #[error("Login with Amazon is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Refusal {
    error: Option<String>,
}

/// The token endpoint and the cached token.
pub struct TokenCache {
    api: Arc<dyn DspApi>,
    cached: Mutex<Option<Token>>,
}

impl TokenCache {
    /// A cache that fetches through `api`.
    pub fn new(api: Arc<dyn DspApi>) -> Self {
        Self {
            api,
            cached: Mutex::new(None),
        }
    }

    /// A token for `credentials` from `url`: the cached one unless it is expiring, belongs to
    /// other credentials, or is `stale` (the very token the DSP just refused).
    pub async fn get(
        &self,
        url: &str,
        credentials: &Arc<Credentials>,
        stale: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Token, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref() {
            let usable = Arc::ptr_eq(&t.credentials, credentials)
                && Instant::now() + EARLY < t.expires
                && stale != Some(&t.access);
            if usable {
                return Ok(t.clone());
            }
        }
        let token = self.fetch(url, credentials, timeout).await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn fetch(
        &self,
        url: &str,
        credentials: &Arc<Credentials>,
        timeout: Duration,
    ) -> Result<Token, TokenError> {
        let grant = Grant {
            url,
            refresh_token: &credentials.refresh_token,
            client_id: &credentials.client_id,
            client_secret: &credentials.client_secret,
        };
        let reply = self
            .api
            .token(grant, timeout)
            .await
            .map_err(|cause| TokenError::Unavailable(cause.to_string()))?;
        let (status, body) = (reply.status, reply.body);
        if (200..300).contains(&status) {
            let granted: Granted = serde_json::from_slice(&body)
                .map_err(|_| TokenError::Unavailable("unreadable token response".into()))?;
            let lifetime = Duration::from_secs(granted.expires_in.unwrap_or(3600));
            return Ok(Token {
                access: Secret::new(granted.access_token),
                credentials: credentials.clone(),
                expires: Instant::now() + lifetime,
            });
        }
        if status == 429 || status >= 500 {
            return Err(TokenError::Unavailable(format!("HTTP {status}")));
        }
        let error = serde_json::from_slice::<Refusal>(&body)
            .ok()
            .and_then(|r| r.error)
            .unwrap_or_default();
        Err(TokenError::Refused { status, error })
    }
}
