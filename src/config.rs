//! Configuration from the environment, read and validated once at cold start. A bad value stops
//! start-up with an error that names the variable and the values it accepts. Each stage gets its
//! own part: [`EventDefaults`] for validation, [`dsp::Settings`] for delivery.

use std::collections::HashMap;
use std::time::Duration;

use crate::dsp::{self, Region};
use crate::event::{CurrencyCode, EventDefaults, Source};

/// A configuration value that stops start-up.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}={value:?}: {expected}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// The value found (configuration values are not secrets).
    pub value: String,
    /// What the variable accepts.
    pub expected: String,
}

/// Everything the function reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Validation and mapping defaults.
    pub events: EventDefaults,
    /// Delivery: credentials, endpoints, rate and retries.
    pub dsp: dsp::Settings,
    /// 1..=100 events per request.
    pub max_events_per_request: usize,
    /// Concurrent requests per invocation.
    pub max_in_flight: usize,
    /// Bucket for rejected events.
    pub rejects_bucket: Option<String>,
    /// Key prefix of rejected-events objects.
    pub rejects_prefix: String,
    /// Queue that takes what an S3 import could not deliver.
    pub retry_queue_url: Option<String>,
    /// Key prefix of S3 objects that hold user deletion requests, not events.
    pub deletions_prefix: String,
    /// Validate and batch, post nothing.
    pub dry_run: bool,
    /// Longest record (NDJSON line, CSV row, JSON element) read, in bytes.
    pub max_record_bytes: usize,
    /// Largest object read, in bytes after decompression.
    pub max_object_bytes: u64,
}

/// The environment as seen through a lookup function; empty values count as unset.
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// `name` parsed by `parse`, or `None` when unset; a value `parse` refuses is an error
    /// saying what the variable accepts.
    fn parsed<T>(
        &self,
        name: &'static str,
        expected: impl FnOnce() -> String,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match parse(v.trim()) {
                Some(t) => Ok(Some(t)),
                None => Err(ConfigError {
                    variable: name,
                    value: v,
                    expected: expected(),
                }),
            },
        }
    }

    fn number(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        self.parsed(
            name,
            || format!("an integer from {min} to {max}"),
            |v| v.parse::<u64>().ok().filter(|n| (min..=max).contains(n)),
        )
        .map(|n| n.unwrap_or(default))
    }

    fn url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        self.get(name).map(|v| url_var(name, v)).transpose()
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.parsed(
            name,
            || "true or false".into(),
            |v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
        )
        .map(|b| b.unwrap_or(default))
    }

    fn events(&self) -> Result<EventDefaults, ConfigError> {
        let source = self
            .parsed(
                "DSP_DEFAULT_SOURCE",
                || "one of AMAZON_AD_TAG, SERVER_TO_SERVER".into(),
                Source::parse,
            )?
            .unwrap_or(Source::ServerToServer);
        let conversion_definitions = match self.get("DSP_CONVERSION_DEFINITIONS") {
            None => HashMap::new(),
            Some(v) => {
                serde_json::from_str::<HashMap<String, String>>(&v).map_err(|e| ConfigError {
                    variable: "DSP_CONVERSION_DEFINITIONS",
                    value: v.clone(),
                    expected: format!(
                        "a JSON object of conversion type to conversionDefinitionId strings ({e})"
                    ),
                })?
            }
        };
        let country_code = self.parsed(
            "DSP_DEFAULT_COUNTRY_CODE",
            || "an ISO 3166-1 alpha-2 country code such as US".into(),
            |v| crate::event::country_code(v).map(str::to_owned),
        )?;
        let currency_code = self.parsed(
            "DSP_DEFAULT_CURRENCY_CODE",
            || format!("one of {}", CurrencyCode::ALL.join(" ")),
            CurrencyCode::parse,
        )?;
        Ok(EventDefaults {
            source,
            conversion_definitions,
            default_conversion_definition_id: self.get("DSP_DEFAULT_CONVERSION_DEFINITION_ID"),
            country_code,
            currency_code,
        })
    }

    fn dsp(&self) -> Result<dsp::Settings, ConfigError> {
        let secret_id = self.get("DSP_SECRET_ID").ok_or_else(|| ConfigError {
            variable: "DSP_SECRET_ID",
            value: String::new(),
            expected: "required: a Secrets Manager secret name or ARN".into(),
        })?;
        Ok(dsp::Settings {
            secret_id,
            region: self.parsed("DSP_REGION", || "one of NA, EU, FE".into(), Region::parse)?,
            api_url: self.url("DSP_API_URL")?,
            token_url: self.url("DSP_TOKEN_URL")?,
            max_requests_per_second: self.number("DSP_MAX_REQUESTS_PER_SECOND", 5, 1, 1000)? as u32,
            concurrency: self.number("DSP_CONCURRENCY", 1, 1, 1000)? as u32,
            max_attempts: self.number("DSP_MAX_ATTEMPTS", 5, 1, 10)? as u32,
            secret_cache_ttl: Duration::from_secs(self.number(
                "SECRET_CACHE_TTL_SECONDS",
                300,
                0,
                86_400,
            )?),
            lookup_definitions: self.flag("DSP_LOOKUP_DEFINITIONS", true)?,
            definitions_ttl: Duration::from_secs(self.number(
                "DEFINITIONS_CACHE_TTL_SECONDS",
                900,
                0,
                86_400,
            )?),
        })
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        Ok(Self {
            dsp: vars.dsp()?,
            events: vars.events()?,
            max_events_per_request: vars.number("DSP_MAX_EVENTS_PER_REQUEST", 100, 1, 100)?
                as usize,
            max_in_flight: vars.number("DSP_MAX_IN_FLIGHT", 4, 1, 64)? as usize,
            rejects_bucket: vars.get("REJECTS_BUCKET"),
            rejects_prefix: (vars.0)("REJECTS_PREFIX").unwrap_or_else(|| "rejected/".into()),
            retry_queue_url: vars.get("RETRY_QUEUE_URL"),
            deletions_prefix: vars
                .get("DSP_DELETIONS_PREFIX")
                .unwrap_or_else(|| "deletions/".into()),
            dry_run: vars.flag("DRY_RUN", false)?,
            max_record_bytes: vars.number("MAX_RECORD_BYTES", 1 << 20, 1 << 10, 64 << 20)? as usize,
            max_object_bytes: vars.number("MAX_OBJECT_BYTES", 10 << 30, 1 << 10, 1 << 40)?,
        })
    }
}

/// An endpoint override: `https://`, or plain `http://` only to this machine (an emulator or the
/// fake DSP), so credentials and hashed identifiers never cross a network unencrypted.
fn url_var(variable: &'static str, value: String) -> Result<String, ConfigError> {
    let trimmed = value.trim().trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&trimmed).ok().filter(|u| u.has_host());
    let loopback = |u: &reqwest::Url| match u.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match url {
        Some(u) if u.scheme() == "https" => Ok(trimmed),
        Some(u) if u.scheme() == "http" && loopback(&u) => Ok(trimmed),
        _ => Err(ConfigError {
            variable,
            value,
            expected: "an https:// URL (http:// only for a loopback address such as 127.0.0.1)"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = config(&[("DSP_SECRET_ID", "dsp/creds")]).unwrap();
        assert_eq!(c.dsp.secret_id, "dsp/creds");
        assert_eq!(c.dsp.region, None);
        assert_eq!(c.events.source, Source::ServerToServer);
        assert!(c.events.conversion_definitions.is_empty());
        assert_eq!(c.max_events_per_request, 100);
        assert_eq!(c.dsp.max_requests_per_second, 5);
        assert_eq!(c.max_in_flight, 4);
        assert_eq!(c.dsp.max_attempts, 5);
        assert_eq!(c.rejects_prefix, "rejected/");
        assert_eq!(c.deletions_prefix, "deletions/");
        assert!(!c.dry_run);
        assert_eq!(c.dsp.secret_cache_ttl, Duration::from_secs(300));
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_accepts() {
        let cases = [
            ("DSP_REGION", "US", "NA, EU, FE"),
            ("DSP_MAX_EVENTS_PER_REQUEST", "101", "from 1 to 100"),
            ("DSP_MAX_ATTEMPTS", "0", "from 1 to 10"),
            ("DSP_DEFAULT_SOURCE", "WEB", "AMAZON_AD_TAG"),
            ("DSP_CONVERSION_DEFINITIONS", "[1]", "JSON object"),
            ("DSP_DEFAULT_CURRENCY_CODE", "XYZ", "USD"),
            ("DSP_DEFAULT_COUNTRY_CODE", "USA", "alpha-2"),
            ("DRY_RUN", "yes", "true or false"),
            ("DSP_API_URL", "localhost:8080", "https://"),
            (
                "DSP_API_URL",
                "http://advertising-api.amazon.com",
                "loopback",
            ),
            (
                "DSP_TOKEN_URL",
                "http://10.0.0.1:8080/auth/o2/token",
                "loopback",
            ),
        ];
        for (var, value, expected) in cases {
            let err = config(&[("DSP_SECRET_ID", "s"), (var, value)]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(var), "{text}");
            assert!(text.contains(expected), "{text}");
        }
        let err = config(&[]).unwrap_err();
        assert_eq!(err.variable, "DSP_SECRET_ID");
    }

    #[test]
    fn parses_every_variable() {
        let c = config(&[
            (
                "DSP_SECRET_ID",
                "arn:aws:secretsmanager:us-east-1:1:secret:x",
            ),
            ("DSP_REGION", "eu"),
            ("DSP_API_URL", "http://127.0.0.1:8080/"),
            ("DSP_TOKEN_URL", "http://127.0.0.1:8080/auth/o2/token"),
            ("DSP_DEFAULT_SOURCE", "AMAZON_AD_TAG"),
            ("DSP_CONVERSION_DEFINITIONS", r#"{"purchase":"def-1"}"#),
            ("DSP_DEFAULT_CONVERSION_DEFINITION_ID", "def-0"),
            ("DSP_DEFAULT_COUNTRY_CODE", "de"),
            ("DSP_DEFAULT_CURRENCY_CODE", "EUR"),
            ("DSP_MAX_EVENTS_PER_REQUEST", "10"),
            ("DSP_MAX_REQUESTS_PER_SECOND", "2"),
            ("DSP_MAX_IN_FLIGHT", "1"),
            ("DSP_MAX_ATTEMPTS", "3"),
            ("REJECTS_BUCKET", "rejects"),
            ("REJECTS_PREFIX", "bad/"),
            ("RETRY_QUEUE_URL", "http://127.0.0.1/q"),
            ("DRY_RUN", "TRUE"),
            ("SECRET_CACHE_TTL_SECONDS", "0"),
        ])
        .unwrap();
        assert_eq!(c.dsp.region, Some(Region::Eu));
        assert_eq!(c.dsp.api_url.as_deref(), Some("http://127.0.0.1:8080"));
        for ok in [
            "https://advertising-api-eu.amazon.com",
            "http://localhost:9",
            "http://[::1]:8080/x",
        ] {
            assert!(url_var("DSP_API_URL", ok.into()).is_ok(), "{ok}");
        }
        assert_eq!(c.events.source, Source::AmazonAdTag);
        assert_eq!(c.events.conversion_definitions["purchase"], "def-1");
        assert_eq!(c.events.country_code.as_deref(), Some("DE"));
        assert_eq!(c.events.currency_code, CurrencyCode::parse("EUR"));
        assert_eq!(c.max_events_per_request, 10);
        assert_eq!(c.rejects_prefix, "bad/");
        assert!(c.dry_run);
        assert_eq!(c.dsp.secret_cache_ttl, Duration::ZERO);
    }
}
