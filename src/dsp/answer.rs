//! What an answer of the DSP means: the 207 read per event (1-based `index`) and every status
//! classified once, here, into an [`Answer`] for retries, redelivery and the rejects report.

use serde::Deserialize;

use super::api::Reply;
use crate::domain::{Cause, Disposition, Reason, Rejection};

/// What one attempt came to.
#[derive(Debug, PartialEq)]
pub enum Answer<T> {
    /// A 207 (or 200), read: for a request of events, one disposition per event in order.
    Done(T),
    /// 400 (or 413/422) for the whole request: split it to isolate the cause.
    BadRequest(String),
    /// 401: the token was refused.
    Unauthorized,
    /// A failure of the whole invocation: 403, 404, or a status that says this client is wrong.
    Fatal(Cause),
    /// 429, 5xx, an unreadable 207: try again, after the DSP's `Retry-After` if it sent one.
    Retry(Cause),
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
pub fn read_multi_status(body: &[u8], count: usize) -> Option<Vec<Disposition>> {
    let parsed: MultiStatus = serde_json::from_slice(body).ok()?;
    let mut results: Vec<Option<Disposition>> = vec![None; count];
    let slot = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .filter(|i| *i < count)
    };
    for s in parsed.success {
        if let Some(i) = slot(s.index) {
            results[i] = Some(Disposition::Accepted);
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
        results[i] = Some(if code.to_ascii_uppercase().contains("THROTTL") {
            Disposition::Redeliver(Cause::DspThrottled(format!("DSP error {code}: {message}")))
        } else if is_transient_code(&code) {
            Disposition::Redeliver(Cause::DspTransient(format!("DSP error {code}: {message}")))
        } else {
            Disposition::Rejected(Rejection::unreadable(Reason::Dsp(code), message))
        });
    }
    Some(
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Disposition::Redeliver(Cause::DspTransient(
                        "not listed in the DSP's 207 response".into(),
                    ))
                })
            })
            .collect(),
    )
}

/// Classifies the DSP's answer to a request of `count` events (or deletion requests).
pub fn classify(reply: &Reply, count: usize) -> Answer<Vec<Disposition>> {
    classify_with(reply, |body| read_multi_status(body, count))
}

/// Classifies an answer whose success body `read` understands (`None`: it cannot).
pub fn classify_with<T>(reply: &Reply, read: impl FnOnce(&[u8]) -> Option<T>) -> Answer<T> {
    let (status, body) = (reply.status, reply.body.as_slice());
    if !(200..300).contains(&status) {
        if let Some(id) = request_id(body) {
            // What Amazon support asks for.
            tracing::warn!(status, request_id = %id, "the DSP answered with an error");
        }
    }
    match status {
        200 | 207 => match read(body) {
            Some(results) => Answer::Done(results),
            // It may have been taken: redelivery is safe thanks to the dedupe ids.
            None => Answer::Retry(Cause::DspFailed(format!("unreadable HTTP {status} body"))),
        },
        400 | 413 | 422 => Answer::BadRequest(error_text(body)),
        401 => Answer::Unauthorized,
        403 => Answer::Fatal(Cause::Refused(format!(
            "the DSP refused access (HTTP 403): {}",
            error_text(body)
        ))),
        404 => Answer::Fatal(Cause::Refused(format!(
            "the DSP does not know this endpoint or advertiser (HTTP 404): {}",
            error_text(body)
        ))),
        429 => Answer::Retry(Cause::Throttled),
        408 | 500..=599 => Answer::Retry(Cause::DspFailed(format!("HTTP {status}"))),
        _ => Answer::Fatal(Cause::Refused(format!(
            "unexpected HTTP {status} from the DSP: {}",
            error_text(body)
        ))),
    }
}

/// A whole-request error body: Amazon's `DspErrorV1`.
#[derive(Deserialize)]
struct DspErrorV1 {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "requestId")]
    request_id: Option<String>,
    #[serde(default)]
    errors: Vec<FieldMessage>,
}

#[derive(Deserialize)]
struct FieldMessage {
    #[serde(default, rename = "fieldName")]
    field_name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The DSP's own words for an error: `message`, then each `fieldName: message`; or the start of
/// a body that is not `DspErrorV1`.
fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<DspErrorV1>(body) {
        Ok(e) => {
            let mut text = e.message.unwrap_or_default();
            for f in e.errors {
                let Some(message) = f.message else { continue };
                if !text.is_empty() {
                    text.push_str("; ");
                }
                if let Some(field) = f.field_name.filter(|f| !f.is_empty()) {
                    text.push_str(&field);
                    text.push_str(": ");
                }
                text.push_str(&message);
            }
            text
        }
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

/// The `requestId` of an error body, if it has one.
fn request_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<DspErrorV1>(body).ok()?.request_id
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
        assert_eq!(r[0], Disposition::Accepted);
        assert_eq!(
            r[1],
            Disposition::Rejected(Rejection::unreadable(
                Reason::Dsp("INVALID_ARGUMENT".into()),
                "bad name; name is not allowed"
            ))
        );
        assert!(matches!(r[2], Disposition::Redeliver(_)));
        assert_eq!(r[3], Disposition::Accepted);
        assert!(
            matches!(&r[4], Disposition::Redeliver(Cause::DspTransient(m)) if m.contains("not listed"))
        );
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
        let answer = |status, body: &str| classify(&Reply::new(status, body), 1);
        let v1 = r#"{"message":"Invalid input","requestId":"r-1","errors":[{"errorType":"INVALID_VALUE","fieldName":"eventData[0].countryCode","message":"not a country"},{"message":"one more"}]}"#;
        assert!(
            matches!(answer(400, v1), Answer::BadRequest(m) if m == "Invalid input; eventData[0].countryCode: not a country; one more")
        );
        assert!(matches!(answer(400, "<html>"), Answer::BadRequest(m) if m == "<html>"));
        assert_eq!(answer(401, ""), Answer::Unauthorized);
        assert!(matches!(answer(403, ""), Answer::Fatal(Cause::Refused(_))));
        assert!(matches!(answer(404, ""), Answer::Fatal(Cause::Refused(_))));
        assert_eq!(answer(429, ""), Answer::Retry(Cause::Throttled));
        assert!(matches!(
            answer(503, ""),
            Answer::Retry(Cause::DspFailed(_))
        ));
        assert!(matches!(
            answer(207, "<html>"),
            Answer::Retry(Cause::DspFailed(_))
        ));
    }
}
