//! Configuration from the environment (DESIGN.md §2), read and validated once at cold start.
//! A bad value stops start-up with an error that names the variable and the values it accepts.

use std::collections::HashMap;
use std::time::Duration;

use crate::event::{CurrencyCode, Source};

/// Amazon Ads regions; each has its own API host and Login with Amazon token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// North America.
    Na,
    /// Europe.
    Eu,
    /// Far East.
    Fe,
}

impl Region {
    /// Parses `NA`, `EU` or `FE` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NA" => Some(Self::Na),
            "EU" => Some(Self::Eu),
            "FE" => Some(Self::Fe),
            _ => None,
        }
    }

    /// The DSP API base URL of the region.
    pub fn api_url(self) -> &'static str {
        match self {
            Self::Na => "https://advertising-api.amazon.com",
            Self::Eu => "https://advertising-api-eu.amazon.com",
            Self::Fe => "https://advertising-api-fe.amazon.com",
        }
    }

    /// The Login with Amazon token endpoint of the region.
    pub fn token_url(self) -> &'static str {
        match self {
            Self::Na => "https://api.amazon.com/auth/o2/token",
            Self::Eu => "https://api.amazon.co.uk/auth/o2/token",
            Self::Fe => "https://api.amazon.co.jp/auth/o2/token",
        }
    }
}

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

/// How events are validated and mapped; the part of the configuration the pipeline needs.
#[derive(Clone, Debug, Default)]
pub struct EventDefaults {
    /// Source for events that name none.
    pub source: Source,
    /// Conversion type → `conversionDefinitionId`.
    pub conversion_definitions: HashMap<String, String>,
    /// Used when an event's type is not in the map.
    pub default_conversion_definition_id: Option<String>,
    /// Fills events that carry no `countryCode`.
    pub country_code: Option<String>,
    /// Fills events that carry no `currencyCode`.
    pub currency_code: Option<CurrencyCode>,
}

/// Everything the function reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Secrets Manager secret name or ARN holding the DSP credentials.
    pub secret_id: String,
    /// Region forced by `DSP_REGION`; otherwise the secret's, else NA.
    pub region: Option<Region>,
    /// API base URL override.
    pub api_url: Option<String>,
    /// Token endpoint override.
    pub token_url: Option<String>,
    /// Validation and mapping defaults.
    pub events: EventDefaults,
    /// 1..=100 events per request.
    pub max_events_per_request: usize,
    /// Client-side request rate limit per invocation.
    pub max_requests_per_second: u32,
    /// Concurrent requests per invocation.
    pub max_in_flight: usize,
    /// 1..=10 attempts per request for 429/5xx/network failures.
    pub max_attempts: u32,
    /// Bucket for rejected events.
    pub rejects_bucket: Option<String>,
    /// Key prefix of rejected-events objects.
    pub rejects_prefix: String,
    /// Queue that takes what an S3 import could not deliver.
    pub retry_queue_url: Option<String>,
    /// Validate and batch, post nothing.
    pub dry_run: bool,
    /// How long fetched credentials are reused across warm invocations.
    pub secret_cache_ttl: Duration,
    /// Longest record (NDJSON line, CSV row, JSON element) read, in bytes.
    pub max_record_bytes: usize,
    /// Largest object read, in bytes after decompression.
    pub max_object_bytes: u64,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let secret_id = get("DSP_SECRET_ID").ok_or_else(|| ConfigError {
            variable: "DSP_SECRET_ID",
            value: String::new(),
            expected: "required: a Secrets Manager secret name or ARN".into(),
        })?;
        let region = match get("DSP_REGION") {
            None => None,
            Some(v) => Some(Region::parse(&v).ok_or_else(|| ConfigError {
                variable: "DSP_REGION",
                value: v,
                expected: "one of NA, EU, FE".into(),
            })?),
        };
        let api_url = get("DSP_API_URL")
            .map(|v| url_var("DSP_API_URL", v))
            .transpose()?;
        let token_url = get("DSP_TOKEN_URL")
            .map(|v| url_var("DSP_TOKEN_URL", v))
            .transpose()?;
        let source = match get("DSP_DEFAULT_SOURCE") {
            None => Source::ServerToServer,
            Some(v) => Source::parse(v.trim()).ok_or_else(|| ConfigError {
                variable: "DSP_DEFAULT_SOURCE",
                value: v,
                expected: "one of AMAZON_AD_TAG, SERVER_TO_SERVER".into(),
            })?,
        };
        let conversion_definitions = match get("DSP_CONVERSION_DEFINITIONS") {
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
        let country_code = match get("DSP_DEFAULT_COUNTRY_CODE") {
            None => None,
            Some(v) => Some(
                crate::event::country_code(v.trim())
                    .ok_or_else(|| ConfigError {
                        variable: "DSP_DEFAULT_COUNTRY_CODE",
                        value: v,
                        expected: "an ISO 3166-1 alpha-2 country code such as US".into(),
                    })?
                    .to_owned(),
            ),
        };
        let currency_code = match get("DSP_DEFAULT_CURRENCY_CODE") {
            None => None,
            Some(v) => Some(CurrencyCode::parse(v.trim()).ok_or_else(|| ConfigError {
                variable: "DSP_DEFAULT_CURRENCY_CODE",
                value: v,
                expected: format!("one of {}", CurrencyCode::ALL.join(" ")),
            })?),
        };
        let number =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if (min..=max).contains(&n) => Ok(n),
                        _ => Err(ConfigError {
                            variable: name,
                            value: v,
                            expected: format!("an integer from {min} to {max}"),
                        }),
                    },
                }
            };
        let dry_run = match get("DRY_RUN").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" || v == "1" => true,
            Some(v) if v == "false" || v == "0" => false,
            Some(v) => {
                return Err(ConfigError {
                    variable: "DRY_RUN",
                    value: v,
                    expected: "true or false".into(),
                })
            }
        };
        Ok(Self {
            secret_id,
            region,
            api_url,
            token_url,
            events: EventDefaults {
                source,
                conversion_definitions,
                default_conversion_definition_id: get("DSP_DEFAULT_CONVERSION_DEFINITION_ID"),
                country_code,
                currency_code,
            },
            max_events_per_request: number("DSP_MAX_EVENTS_PER_REQUEST", 100, 1, 100)? as usize,
            max_requests_per_second: number("DSP_MAX_REQUESTS_PER_SECOND", 5, 1, 1000)? as u32,
            max_in_flight: number("DSP_MAX_IN_FLIGHT", 4, 1, 64)? as usize,
            max_attempts: number("DSP_MAX_ATTEMPTS", 5, 1, 10)? as u32,
            rejects_bucket: get("REJECTS_BUCKET"),
            rejects_prefix: lookup("REJECTS_PREFIX").unwrap_or_else(|| "rejected/".into()),
            retry_queue_url: get("RETRY_QUEUE_URL"),
            dry_run,
            secret_cache_ttl: Duration::from_secs(number(
                "SECRET_CACHE_TTL_SECONDS",
                300,
                0,
                86_400,
            )?),
            max_record_bytes: number("MAX_RECORD_BYTES", 1 << 20, 1 << 10, 64 << 20)? as usize,
            max_object_bytes: number("MAX_OBJECT_BYTES", 10 << 30, 1 << 10, 1 << 40)?,
        })
    }
}

fn url_var(variable: &'static str, value: String) -> Result<String, ConfigError> {
    let v = value.trim().trim_end_matches('/');
    let bad = |expected: &str| ConfigError {
        variable,
        value: value.clone(),
        expected: expected.into(),
    };
    if let Some(rest) = v.strip_prefix("https://") {
        return if rest.is_empty() {
            Err(bad("an https:// URL"))
        } else {
            Ok(v.to_owned())
        };
    }
    // Plain HTTP only to this machine (an emulator or the fake DSP): credentials and hashed
    // identifiers never cross a network unencrypted.
    let host = v
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(""));
    let loopback = host.is_some_and(|h| {
        let name = match h.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => h.rsplit_once(':').map_or(h, |(name, _)| name),
        };
        name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if loopback {
        Ok(v.to_owned())
    } else {
        Err(bad(
            "an https:// URL (http:// only for a loopback address such as 127.0.0.1)",
        ))
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
        assert_eq!(c.secret_id, "dsp/creds");
        assert_eq!(c.region, None);
        assert_eq!(c.events.source, Source::ServerToServer);
        assert!(c.events.conversion_definitions.is_empty());
        assert_eq!(c.max_events_per_request, 100);
        assert_eq!(c.max_requests_per_second, 5);
        assert_eq!(c.max_in_flight, 4);
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.rejects_prefix, "rejected/");
        assert!(!c.dry_run);
        assert_eq!(c.secret_cache_ttl, Duration::from_secs(300));
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
        assert_eq!(c.region, Some(Region::Eu));
        assert_eq!(c.api_url.as_deref(), Some("http://127.0.0.1:8080"));
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
        assert_eq!(c.secret_cache_ttl, Duration::ZERO);
    }
}
