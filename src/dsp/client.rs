//! One request to the DSP and what its answer means: the 207 read per event (1-based `index`)
//! and every status classified once, here, for retries, redelivery and the rejects report.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;

use crate::describe;
use crate::outcome::{Reason, Rejection};

/// The DSP's media type, for `Content-Type` and `Accept`.
pub const MEDIA_TYPE: &str = "application/vnd.dspconversioneventimport.v1+json";

/// The result for one event of a 207.
#[derive(Debug, Clone, PartialEq)]
pub enum EventResult {
    /// Listed under `success`.
    Accepted,
    /// Listed under `error` with a permanent cause.
    Rejected(Rejection),
    /// Listed under `error` with a transient cause, or not listed at all.
    Transient(String),
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Answer {
    /// A 207 (or 200): one result per event, in request order.
    Results(Vec<EventResult>),
    /// 400 (or 413/422) for the whole request: split it to isolate the cause.
    BadRequest(String),
    /// 401: the token was refused.
    Unauthorized,
    /// A failure of the whole invocation: 403, 404, or a status that says this client is wrong.
    Fatal(String),
    /// 429, 5xx, timeout, network: try again, after `retry_after` if the DSP said so.
    Retry {
        /// The DSP's `Retry-After`.
        retry_after: Option<Duration>,
        /// Whether it was a 429.
        throttled: bool,
        /// What happened, for the log.
        cause: String,
    },
}

#[derive(Deserialize)]
struct MultiStatus {
    #[serde(default)]
    success: Vec<Success>,
    #[serde(default)]
    error: Vec<Failure>,
}

#[derive(Deserialize)]
struct Success {
    index: i64,
}

#[derive(Deserialize)]
struct Failure {
    index: i64,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct FieldError {
    #[serde(default)]
    message: Option<String>,
}

/// Whether a per-event error code names a throttling or server-side condition.
pub fn is_transient_code(code: &str) -> bool {
    let upper = code.to_ascii_uppercase();
    ["THROTTL", "INTERNAL", "UNAVAILABLE", "TIMEOUT"]
        .iter()
        .any(|w| upper.contains(w))
}

/// Reads a 207 body for a request of `count` events.
pub fn read_multi_status(body: &[u8], count: usize) -> Option<Vec<EventResult>> {
    let parsed: MultiStatus = serde_json::from_slice(body).ok()?;
    let mut results: Vec<Option<EventResult>> = vec![None; count];
    let slot = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .filter(|i| *i < count)
    };
    for s in parsed.success {
        if let Some(i) = slot(s.index) {
            results[i] = Some(EventResult::Accepted);
        }
    }
    for f in parsed.error {
        let Some(i) = slot(f.index) else { continue };
        let code = f.code.unwrap_or_default();
        let mut message = f.message.unwrap_or_default();
        for e in f.errors.iter().filter_map(|e| e.message.as_deref()) {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(e);
        }
        results[i] = Some(if is_transient_code(&code) {
            EventResult::Transient(format!("DSP error {code}: {message}"))
        } else {
            EventResult::Rejected(Rejection::unreadable(Reason::Dsp(code), message))
        });
    }
    Some(
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    EventResult::Transient("not listed in the DSP's 207 response".into())
                })
            })
            .collect(),
    )
}

/// What the request carries besides the body.
pub struct Request<'a> {
    /// The full URL.
    pub url: &'a str,
    /// Bearer token.
    pub token: &'a str,
    /// `Amazon-Advertising-API-ClientId`.
    pub client_id: &'a str,
    /// `Amazon-Advertising-API-Scope`.
    pub profile_id: Option<&'a str>,
    /// `Amazon-Ads-AccountId`.
    pub advertiser_id: &'a str,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// Posts `body` holding `count` events and classifies the answer.
pub async fn post(
    http: &reqwest::Client,
    req: &Request<'_>,
    body: Vec<u8>,
    count: usize,
) -> Answer {
    let mut builder = http
        .post(req.url)
        .header(CONTENT_TYPE, MEDIA_TYPE)
        .header(ACCEPT, MEDIA_TYPE)
        .header(AUTHORIZATION, format!("Bearer {}", req.token))
        .header("Amazon-Advertising-API-ClientId", req.client_id)
        .header("Amazon-Ads-AccountId", req.advertiser_id)
        .timeout(req.timeout)
        .body(body);
    if let Some(profile) = req.profile_id {
        builder = builder.header("Amazon-Advertising-API-Scope", profile);
    }
    let response = match builder.send().await {
        Ok(r) => r,
        Err(e) => return network(&e),
    };
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return network(&e),
    };
    classify(status, retry_after, &body, count)
}

/// Classifies an HTTP answer.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8], count: usize) -> Answer {
    match status {
        200 | 207 => match read_multi_status(body, count) {
            Some(results) => Answer::Results(results),
            // It may have been taken: redelivery is safe thanks to the dedupe ids.
            None => Answer::Retry {
                retry_after: None,
                throttled: false,
                cause: format!("unreadable HTTP {status} body"),
            },
        },
        400 | 413 | 422 => Answer::BadRequest(error_text(body)),
        401 => Answer::Unauthorized,
        403 => Answer::Fatal(format!(
            "the DSP refused access (HTTP 403): {}",
            error_text(body)
        )),
        404 => Answer::Fatal(format!(
            "the DSP does not know this endpoint or advertiser (HTTP 404): {}",
            error_text(body)
        )),
        408 | 429 | 500..=599 => Answer::Retry {
            retry_after,
            throttled: status == 429,
            cause: format!("HTTP {status}"),
        },
        _ => Answer::Fatal(format!(
            "unexpected HTTP {status} from the DSP: {}",
            error_text(body)
        )),
    }
}

fn network(e: &reqwest::Error) -> Answer {
    let kind = if e.is_timeout() {
        "timeout"
    } else {
        "network error"
    };
    Answer::Retry {
        retry_after: None,
        throttled: false,
        cause: format!("{kind}: {}", describe(e)),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// The DSP's own words for an error: `code: message`, or the start of the body.
fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Error {
        code: Option<String>,
        message: Option<String>,
        details: Option<String>,
    }
    match serde_json::from_slice::<Error>(body) {
        Ok(e) => {
            let message = e.message.or(e.details).unwrap_or_default();
            match e.code {
                Some(code) => format!("{code}: {message}"),
                None => message,
            }
        }
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_status_maps_one_based_indices() {
        let body = br#"{"success":[{"index":1,"message":"ok"},{"index":4}],
            "error":[{"index":2,"code":"INVALID_ARGUMENT","message":"bad name","errors":[{"errorType":"INVALID_VALUE","fieldName":"name","message":"name is not allowed"}]},
                     {"index":3,"code":"THROTTLED","message":"slow down"},
                     {"index":9,"code":"X"}]}"#;
        let r = read_multi_status(body, 5).unwrap();
        assert_eq!(r[0], EventResult::Accepted);
        assert_eq!(
            r[1],
            EventResult::Rejected(Rejection::unreadable(
                Reason::Dsp("INVALID_ARGUMENT".into()),
                "bad name; name is not allowed"
            ))
        );
        assert!(matches!(r[2], EventResult::Transient(_)));
        assert_eq!(r[3], EventResult::Accepted);
        assert!(matches!(&r[4], EventResult::Transient(m) if m.contains("not listed")));
    }

    #[test]
    fn transient_codes() {
        for code in [
            "THROTTLED",
            "internal_error",
            "ServiceUnavailable",
            "REQUEST_TIMEOUT",
        ] {
            assert!(is_transient_code(code), "{code}");
        }
        assert!(!is_transient_code("INVALID_ARGUMENT"));
    }

    #[test]
    fn statuses() {
        assert!(
            matches!(classify(400, None, br#"{"code":"BAD_REQUEST","message":"m"}"#, 1), Answer::BadRequest(m) if m == "BAD_REQUEST: m")
        );
        assert!(matches!(classify(401, None, b"", 1), Answer::Unauthorized));
        assert!(matches!(classify(403, None, b"", 1), Answer::Fatal(_)));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(2)), b"", 1),
            Answer::Retry { throttled: true, retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            classify(503, None, b"", 1),
            Answer::Retry {
                throttled: false,
                ..
            }
        ));
        assert!(matches!(
            classify(207, None, b"<html>", 1),
            Answer::Retry { .. }
        ));
    }
}
