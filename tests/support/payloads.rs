//! What the function is given: Lambda payloads (SQS, S3) built inline, simple-shape events, and
//! the sample files of `events/` with their timestamps made recent.

use std::path::Path;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::process::root;

/// An SQS event with these bodies (ids `m1`, `m2`, …).
pub fn sqs_event(bodies: &[String]) -> Value {
    sqs_event_with(
        bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("m{}", i + 1), b.clone(), None))
            .collect(),
    )
}

/// An SQS event of `(id, body, FIFO group)`.
pub fn sqs_event_with(messages: Vec<(String, String, Option<&str>)>) -> Value {
    let fifo = messages.iter().any(|m| m.2.is_some());
    let arn = if fifo {
        "arn:aws:sqs:us-east-1:123456789012:q.fifo"
    } else {
        "arn:aws:sqs:us-east-1:123456789012:q"
    };
    let records: Vec<Value> = messages
        .into_iter()
        .map(|(id, body, group)| {
            let mut attributes = json!({"ApproximateReceiveCount": "1", "SentTimestamp": "1764322200000",
                "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1764322200001"});
            if let Some(g) = group {
                attributes["MessageGroupId"] = json!(g);
            }
            json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body, "attributes": attributes,
                   "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": arn,
                   "awsRegion": "us-east-1"})
        })
        .collect();
    json!({"Records": records})
}

/// An S3 event notification for these `(bucket, url-encoded key)`s.
pub fn s3_event(objects: &[(&str, &str)]) -> Value {
    let records: Vec<Value> = objects
        .iter()
        .map(|(bucket, key)| {
            json!({"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                   "eventTime": "2026-11-28T09:30:00.000Z", "eventName": "ObjectCreated:Put",
                   "userIdentity": {"principalId": "AWS:EXAMPLE"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                   "responseElements": {}, "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                   "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": format!("arn:aws:s3:::{bucket}")},
                   "object": {"key": key, "size": 1, "eTag": "0", "sequencer": "0"}}})
        })
        .collect();
    json!({"Records": records})
}

/// A simple-shape event with a fresh timestamp.
pub fn simple_event(email: &str, dedupe: &str) -> Value {
    json!({"eventTime": minutes_ago(30), "conversionType": "purchase", "conversionValue": 19.99,
           "currencyCode": "USD", "countryCode": "US", "userIdentifier": email, "clientDedupeId": dedupe})
}

/// An RFC 3339 time `minutes_ago` minutes ago.
fn minutes_ago(minutes: i64) -> String {
    (OffsetDateTime::now_utc() - time::Duration::minutes(minutes))
        .format(&Rfc3339)
        .unwrap()
}

/// A sample payload or data file from `events/`, timestamps refreshed.
pub fn sample(path: &str) -> String {
    refresh_timestamps(&std::fs::read_to_string(root().join("events").join(path)).expect("sample"))
}

/// Reads a file of the crate.
pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(root().join(path)).expect("file")
}

/// Shifts every RFC 3339 timestamp with an offset in `text` by one delta, so that the newest
/// becomes an hour ago (sample files carry fixed dates).
pub fn refresh_timestamps(text: &str) -> String {
    let re = |s: &str| -> Option<(usize, usize, OffsetDateTime)> {
        // Finds the next `YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`.
        let bytes = s.as_bytes();
        let mut i = 0;
        while i + 20 <= bytes.len() {
            if bytes[i].is_ascii_digit()
                && bytes.get(i + 4) == Some(&b'-')
                && bytes.get(i + 10) == Some(&b'T')
            {
                let mut end = i + 19;
                if bytes.get(end) == Some(&b'.') {
                    end += 1;
                    while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                        end += 1;
                    }
                }
                let end = match bytes.get(end) {
                    Some(b'Z') => end + 1,
                    Some(b'+' | b'-') => end + 6,
                    _ => {
                        i += 1;
                        continue;
                    }
                };
                if let Some(t) = s
                    .get(i..end)
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                {
                    return Some((i, end, t));
                }
            }
            i += 1;
        }
        None
    };
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some((a, b, t)) = re(&text[offset..]) {
        found.push((offset + a, offset + b, t));
        offset += b;
    }
    let Some(newest) = found.iter().map(|f| f.2).max() else {
        return text.to_owned();
    };
    let delta = OffsetDateTime::now_utc() - time::Duration::hours(1) - newest;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (a, b, t) in found {
        out.push_str(&text[last..a]);
        out.push_str(&(t + delta).format(&Rfc3339).unwrap());
        last = b;
    }
    out.push_str(&text[last..]);
    out
}
