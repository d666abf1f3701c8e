//! DSP credentials from Secrets Manager: parsed with the header-name aliases, cached for
//! `SECRET_CACHE_TTL_SECONDS` across warm invocations, re-read on demand (rotation).
//! Values never appear in `Debug`, errors or logs.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::Region;
use crate::store::{SecretError, SecretStore};

/// A secret value: shown as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The contents of the DSP secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Login with Amazon client id (sent as a header; not secret, but kept out of logs anyway).
    pub client_id: Secret,
    /// Login with Amazon client secret.
    pub client_secret: Secret,
    /// Login with Amazon refresh token.
    pub refresh_token: Secret,
    /// DSP advertiser id.
    pub advertiser_id: String,
    /// Amazon Ads profile id (the `Scope` header), if any.
    pub profile_id: Option<String>,
    /// Region named by the secret.
    pub region: Option<Region>,
}

/// Why the credentials cannot be had. Names the secret and the key, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Secrets Manager would not give the secret.
    #[error("cannot read secret {secret_id:?}: {source}")]
    Unavailable {
        /// The secret.
        secret_id: String,
        /// Why.
        source: SecretError,
    },
    /// The secret is not a JSON object.
    #[error("secret {secret_id:?} is not a JSON object with string values")]
    NotJson {
        /// The secret.
        secret_id: String,
    },
    /// A required key is missing or empty.
    #[error("secret {secret_id:?} has no {key:?} (or {alias:?})")]
    MissingKey {
        /// The secret.
        secret_id: String,
        /// The key.
        key: &'static str,
        /// Its accepted alias.
        alias: &'static str,
    },
    /// `region` is not NA, EU or FE.
    #[error("secret {secret_id:?}: \"region\" must be NA, EU or FE")]
    BadRegion {
        /// The secret.
        secret_id: String,
    },
}

impl CredentialsError {
    /// Whether trying again later may succeed (a network failure rather than a wrong secret).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable {
                source: SecretError::Failed(_),
                ..
            }
        )
    }
}

impl Credentials {
    /// Parses the secret's JSON: `client_id`, `client_secret`, `refresh_token`, `advertiser_id`,
    /// optional `profile_id` and `region`; header names are accepted as aliases.
    pub fn parse(secret_id: &str, text: &str) -> Result<Self, CredentialsError> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|_| CredentialsError::NotJson {
                secret_id: secret_id.into(),
            })?;
        let get = |key: &str, alias: &str| -> Result<Option<String>, CredentialsError> {
            match map.get(key).or_else(|| map.get(alias)) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_owned())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(CredentialsError::NotJson {
                    secret_id: secret_id.into(),
                }),
            }
        };
        let required = |key: &'static str, alias: &'static str| {
            get(key, alias)?.ok_or_else(|| CredentialsError::MissingKey {
                secret_id: secret_id.into(),
                key,
                alias,
            })
        };
        let region = match get("region", "region")? {
            None => None,
            Some(r) => Some(
                Region::parse(&r).ok_or_else(|| CredentialsError::BadRegion {
                    secret_id: secret_id.into(),
                })?,
            ),
        };
        Ok(Self {
            client_id: Secret(required("client_id", "Amazon-Advertising-API-ClientId")?),
            client_secret: Secret(required("client_secret", "client_secret")?),
            refresh_token: Secret(required("refresh_token", "refresh_token")?),
            advertiser_id: required("advertiser_id", "Amazon-Ads-AccountId")?,
            profile_id: get("profile_id", "Amazon-Advertising-API-Scope")?,
            region,
        })
    }
}

/// Fetched credentials, reused for a while across warm invocations.
pub struct CredentialCache {
    store: Arc<dyn SecretStore>,
    secret_id: String,
    ttl: Duration,
    cached: Mutex<Option<(Arc<Credentials>, Instant)>>,
}

impl CredentialCache {
    /// A cache of `secret_id` read through `store`.
    pub fn new(store: Arc<dyn SecretStore>, secret_id: String, ttl: Duration) -> Self {
        Self {
            store,
            secret_id,
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The credentials: cached unless older than the TTL or `stale` (the very value a caller
    /// found rejected) is what is cached.
    pub async fn get(
        &self,
        stale: Option<&Arc<Credentials>>,
    ) -> Result<Arc<Credentials>, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some((creds, at)) = cached.as_ref() {
            let rejected = stale.is_some_and(|s| Arc::ptr_eq(s, creds));
            if !rejected && at.elapsed() < self.ttl {
                return Ok(creds.clone());
            }
        }
        let text = self.store.get(&self.secret_id).await.map_err(|source| {
            CredentialsError::Unavailable {
                secret_id: self.secret_id.clone(),
                source,
            }
        })?;
        let creds = Arc::new(Credentials::parse(&self.secret_id, &text)?);
        *cached = Some((creds.clone(), Instant::now()));
        Ok(creds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"client_id":"amzn1.app","client_secret":"s3cr3t","refresh_token":"Atzr|tok",
        "advertiser_id":"123","profile_id":456,"region":"eu"}"#;

    #[test]
    fn parses_keys_and_aliases() {
        let c = Credentials::parse("s", FULL).unwrap();
        assert_eq!(c.advertiser_id, "123");
        assert_eq!(c.profile_id.as_deref(), Some("456"));
        assert_eq!(c.region, Some(Region::Eu));
        let aliased = r#"{"Amazon-Advertising-API-ClientId":"c","client_secret":"s","refresh_token":"r",
            "Amazon-Ads-AccountId":"a","Amazon-Advertising-API-Scope":"p"}"#;
        let c = Credentials::parse("s", aliased).unwrap();
        assert_eq!(
            (
                c.client_id.expose(),
                c.advertiser_id.as_str(),
                c.profile_id.as_deref()
            ),
            ("c", "a", Some("p"))
        );
    }

    #[test]
    fn errors_name_the_secret_and_key_but_no_value() {
        let err = Credentials::parse(
            "dsp/creds",
            r#"{"client_id":"c","client_secret":"s3cr3t","advertiser_id":"a"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"secret "dsp/creds" has no "refresh_token" (or "refresh_token")"#
        );
        let err = Credentials::parse("dsp/creds", "s3cr3t-not-json").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = Credentials::parse("x", r#"{"client_id":"c","client_secret":"s","refresh_token":"r","advertiser_id":"a","region":"US"}"#)
            .unwrap_err();
        assert!(matches!(err, CredentialsError::BadRegion { .. }));
    }

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::parse("s", FULL).unwrap();
        let text = format!("{c:?}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("Atzr") && !text.contains("amzn1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn cache_rereads_after_rejection() {
        let store = Arc::new(crate::store::Memory::default());
        store
            .secrets
            .lock()
            .unwrap()
            .insert("s".into(), FULL.into());
        let cache = CredentialCache::new(store.clone(), "s".into(), Duration::from_secs(300));
        let first = cache.get(None).await.unwrap();
        store
            .secrets
            .lock()
            .unwrap()
            .insert("s".into(), FULL.replace("s3cr3t", "rotated"));
        assert!(Arc::ptr_eq(&first, &cache.get(None).await.unwrap()));
        let second = cache.get(Some(&first)).await.unwrap();
        assert_eq!(second.client_secret.expose(), "rotated");
        store.secrets.lock().unwrap().clear();
        let err = CredentialCache::new(store, "gone".into(), Duration::ZERO)
            .get(None)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cannot read secret "gone": the secret does not exist"#
        );
    }
}
