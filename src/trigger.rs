//! Triggers: what arrived. A Lambda payload (SQS event, S3 event notification, EventBridge
//! "Object Created") becomes units of work: message bodies to read and objects to import.
//! Each SQS message is taken apart on its own, so one bad body costs nothing else.

use std::sync::Arc;

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use crate::domain::Resume;
use crate::domain::Unit;
use crate::domain::{Reason, Rejection};

/// An SQS message of the batch, in batch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: String,
    /// Its FIFO message group, if any.
    pub group: Option<String>,
}

/// What a unit holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A message body of events.
    Body(String),
    /// A message body of user deletion requests, `{"deletionRequests": [...]}`.
    Deletions(String),
    /// An object to import.
    Object {
        /// Its bucket.
        bucket: String,
        /// Its key, decoded.
        key: String,
    },
    /// The rest of an object that an earlier invocation began.
    Continuation(Continuation),
    /// Nothing to do (`s3:TestEvent`).
    Acknowledge,
    /// A body that cannot be read at all.
    Unreadable(Rejection),
}

/// Where an earlier invocation stopped reading an object: the body of a continuation message,
/// `{"continuation": {...}}`, sent to the retry queue and resumed by whichever invocation
/// receives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Continuation {
    /// The object's bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// The ETag of the content begun; another content drops the continuation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The first record not read, its line and byte offset.
    #[serde(flatten)]
    pub resume: Resume,
    /// How many continuations came before this one in the chain.
    pub hop: u32,
}

/// The body of a continuation message.
#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ContinuationMessage {
    continuation: Continuation,
}

impl Continuation {
    /// The message body that carries it.
    pub fn to_message(&self) -> String {
        serde_json::to_string(&ContinuationMessage {
            continuation: self.clone(),
        })
        .unwrap_or_default()
    }
}

/// One unit of work.
#[derive(Debug, Clone)]
pub struct WorkUnit {
    /// Its identity.
    pub unit: Arc<Unit>,
    /// What to read.
    pub input: Input,
}

/// How the invocation reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An SQS batch: answer with the messages to redeliver.
    Sqs,
    /// S3 or EventBridge: answer with counts; leftovers go to the retry queue.
    Objects,
}

/// All the work of one invocation.
#[derive(Debug, Clone)]
pub struct Work {
    /// How to report.
    pub mode: Mode,
    /// The units, in order.
    pub units: Vec<WorkUnit>,
    /// The SQS messages, in batch order (empty for S3 and EventBridge).
    pub messages: Vec<Message>,
}

/// A payload that is none of the supported triggers.
#[derive(Debug, thiserror::Error)]
#[error("unsupported Lambda payload: {0}")]
pub struct UnsupportedPayload(String);

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "Records")]
    records: Option<Vec<ProbeRecord>>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    source: Option<String>,
}

/// What tells an S3 notification inside an SQS body from events.
#[derive(Deserialize)]
struct BodyProbe {
    #[serde(rename = "Records")]
    records: Option<serde::de::IgnoredAny>,
    #[serde(rename = "Event")]
    event: Option<serde_json::Value>,
}

/// What tells a body of deletion requests from events.
#[derive(Deserialize)]
struct DeletionProbe {
    #[serde(rename = "deletionRequests")]
    deletion_requests: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ProbeRecord {
    #[serde(rename = "eventSource", alias = "EventSource")]
    event_source: Option<String>,
}

#[derive(Deserialize)]
struct ObjectCreated {
    detail: Detail,
}

#[derive(Deserialize)]
struct Detail {
    bucket: Named,
    object: Keyed,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Keyed {
    key: String,
}

/// Takes a Lambda payload apart.
pub fn parse(payload: serde_json::Value) -> Result<Work, UnsupportedPayload> {
    let probe: Probe =
        serde_json::from_value(payload.clone()).map_err(|e| UnsupportedPayload(e.to_string()))?;
    if let Some(records) = &probe.records {
        let source = records
            .first()
            .and_then(|r| r.event_source.as_deref())
            .unwrap_or("");
        return match source {
            "aws:sqs" => {
                let event: SqsEvent = serde_json::from_value(payload)
                    .map_err(|e| UnsupportedPayload(e.to_string()))?;
                Ok(sqs(event))
            }
            "aws:s3" | "" => {
                let event: S3Event = serde_json::from_value(payload)
                    .map_err(|e| UnsupportedPayload(e.to_string()))?;
                let mut units = Vec::new();
                s3_units(&event, None, &mut units);
                Ok(Work {
                    mode: Mode::Objects,
                    units,
                    messages: Vec::new(),
                })
            }
            other => Err(UnsupportedPayload(format!("records from {other:?}"))),
        };
    }
    if probe.detail_type.as_deref() == Some("Object Created")
        && probe.source.as_deref() == Some("aws.s3")
    {
        let event: ObjectCreated =
            serde_json::from_value(payload).map_err(|e| UnsupportedPayload(e.to_string()))?;
        let unit = Unit::object(0, &event.detail.bucket.name, &event.detail.object.key, None);
        return Ok(Work {
            mode: Mode::Objects,
            units: vec![WorkUnit {
                unit: Arc::new(unit),
                input: Input::Object {
                    bucket: event.detail.bucket.name,
                    key: event.detail.object.key,
                },
            }],
            messages: Vec::new(),
        });
    }
    Err(UnsupportedPayload(
        "expected an SQS event, an S3 event notification or an EventBridge \"Object Created\" event".into(),
    ))
}

fn sqs(event: SqsEvent) -> Work {
    let mut units = Vec::new();
    let mut messages = Vec::new();
    for (i, m) in event.records.into_iter().enumerate() {
        let id = m.message_id.unwrap_or_else(|| format!("message-{i}"));
        let group = m.attributes.get("MessageGroupId").cloned();
        messages.push(Message {
            id: id.clone(),
            group,
        });
        let body = m.body.unwrap_or_default();
        message_units(&id, body, &mut units);
    }
    Work {
        mode: Mode::Sqs,
        units,
        messages,
    }
}

/// The units of one SQS message: its own events, or the objects of an S3 notification in it.
fn message_units(id: &str, body: String, units: &mut Vec<WorkUnit>) {
    let index = units.len();
    let own = |input| WorkUnit {
        unit: Arc::new(Unit::message(index, id)),
        input,
    };
    if body.trim().is_empty() {
        units.push(own(Input::Unreadable(Rejection::unreadable(
            Reason::InvalidJson,
            "the message body is empty",
        ))));
        return;
    }
    if body.trim_start().starts_with("{\"continuation\"") {
        match serde_json::from_str::<ContinuationMessage>(&body) {
            Ok(m) => {
                let c = m.continuation;
                units.push(WorkUnit {
                    unit: Arc::new(Unit::object(index, &c.bucket, &c.key, Some(id))),
                    input: Input::Continuation(c),
                });
            }
            Err(e) => units.push(own(Input::Unreadable(Rejection::unreadable(
                Reason::InvalidJson,
                format!("the body is not a valid continuation: {e}"),
            )))),
        }
        return;
    }
    // Only a body that may be an S3 notification is parsed twice.
    if body.contains("\"Records\"") || body.contains("s3:TestEvent") {
        if let Ok(probe) = serde_json::from_str::<BodyProbe>(&body) {
            if probe.event.as_ref().and_then(|e| e.as_str()) == Some("s3:TestEvent") {
                units.push(own(Input::Acknowledge));
                return;
            }
            if probe.records.is_some() {
                match serde_json::from_str::<S3Event>(&body) {
                    Ok(event) => s3_units(&event, Some(id), units),
                    Err(e) => units.push(own(Input::Unreadable(Rejection::unreadable(
                        Reason::InvalidJson,
                        format!("the body is not a valid S3 event notification: {e}"),
                    )))),
                }
                return;
            }
        }
    }
    // Only a body that may hold deletion requests is parsed twice.
    if body.contains("\"deletionRequests\"") {
        if let Ok(DeletionProbe {
            deletion_requests: Some(_),
        }) = serde_json::from_str::<DeletionProbe>(&body)
        {
            units.push(WorkUnit {
                unit: Arc::new(Unit::message(index, id).of_deletions()),
                input: Input::Deletions(body),
            });
            return;
        }
    }
    units.push(own(Input::Body(body)));
}

fn s3_units(event: &S3Event, message_id: Option<&str>, units: &mut Vec<WorkUnit>) {
    for record in &event.records {
        let (Some(bucket), Some(raw_key)) = (&record.s3.bucket.name, &record.s3.object.key) else {
            continue;
        };
        let key = decode_key(raw_key);
        let unit = Unit::object(units.len(), bucket, &key, message_id);
        units.push(WorkUnit {
            unit: Arc::new(unit),
            input: Input::Object {
                bucket: bucket.clone(),
                key,
            },
        });
    }
}

/// Keys in S3 event notifications are URL-encoded, with `+` for a space.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s3_record(bucket: &str, key: &str) -> serde_json::Value {
        json!({"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-11-28T09:30:00.000Z",
               "eventName":"ObjectCreated:Put","userIdentity":{"principalId":"X"},"requestParameters":{"sourceIPAddress":"1.2.3.4"},
               "responseElements":{},"s3":{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{"name":bucket,"arn":"arn:aws:s3:::b"},
               "object":{"key":key,"size":1,"eTag":"e","sequencer":"0"}}})
    }

    fn sqs_message(id: &str, body: &str) -> serde_json::Value {
        json!({"messageId": id, "receiptHandle": "r", "body": body, "attributes": {}, "messageAttributes": {},
               "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"})
    }

    #[test]
    fn s3_keys_are_decoded() {
        let work =
            parse(json!({"Records": [s3_record("b", "incoming/daily+export%2B1+%C3%A9.csv.gz")]}))
                .unwrap();
        assert_eq!(work.mode, Mode::Objects);
        assert_eq!(
            work.units[0].input,
            Input::Object {
                bucket: "b".into(),
                key: "incoming/daily export+1 é.csv.gz".into()
            }
        );
    }

    #[test]
    fn eventbridge_keys_are_plain() {
        let work = parse(json!({"version":"0","id":"1","detail-type":"Object Created","source":"aws.s3","account":"1",
            "time":"2026-11-28T09:30:00Z","region":"us-east-1","resources":[],
            "detail":{"version":"0","bucket":{"name":"b"},"object":{"key":"a+b c.json","size":1,"etag":"e"}}}))
        .unwrap();
        assert_eq!(
            work.units[0].input,
            Input::Object {
                bucket: "b".into(),
                key: "a+b c.json".into()
            }
        );
    }

    #[test]
    fn sqs_bodies_are_taken_apart_one_by_one() {
        let notification =
            json!({"Records": [s3_record("b", "x.csv"), s3_record("b", "y.csv")]}).to_string();
        let test_event =
            json!({"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}).to_string();
        let work = parse(json!({"Records": [
            sqs_message("m1", r#"{"eventTime":"x"}"#),
            sqs_message("m2", &notification),
            sqs_message("m3", &test_event),
            sqs_message("m4", ""),
            sqs_message("m5", r#"{"Records": 5}"#),
            sqs_message("m6", r#"{"deletionRequests": [{"matchKeys": []}]}"#),
            sqs_message("m7", r#"{"name": "deletionRequests"}"#),
        ]}))
        .unwrap();
        assert_eq!(work.mode, Mode::Sqs);
        let summary: Vec<(usize, Option<&str>, &str)> = work
            .units
            .iter()
            .map(|u| {
                let kind = match &u.input {
                    Input::Body(_) => "body",
                    Input::Deletions(_) => "deletions",
                    Input::Object { .. } | Input::Continuation(_) => "object",
                    Input::Acknowledge => "ack",
                    Input::Unreadable(_) => "unreadable",
                };
                (u.unit.index, u.unit.message_id.as_deref(), kind)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, Some("m1"), "body"),
                (1, Some("m2"), "object"),
                (2, Some("m2"), "object"),
                (3, Some("m3"), "ack"),
                (4, Some("m4"), "unreadable"),
                (5, Some("m5"), "unreadable"),
                (6, Some("m6"), "deletions"),
                (7, Some("m7"), "body"),
            ]
        );
        assert!(work.units[6].unit.deletions && !work.units[7].unit.deletions);
        assert_eq!(work.messages.len(), 7);
    }

    #[test]
    fn fifo_groups_are_kept() {
        let mut m = sqs_message("m1", "{}");
        m["attributes"] = json!({"MessageGroupId": "g1"});
        let work = parse(json!({"Records": [m]})).unwrap();
        assert_eq!(work.messages[0].group.as_deref(), Some("g1"));
    }

    #[test]
    fn other_payloads_are_refused() {
        assert!(parse(json!({"hello": "world"})).is_err());
        assert!(parse(json!({"Records": [{"eventSource": "aws:kinesis"}]})).is_err());
    }
}
