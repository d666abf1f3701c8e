//! Where every event came from: the unit of work (an SQS message, an S3 object, a local file)
//! and the record's position in it. Outcomes are traced back to their unit through it, and
//! deterministic `clientDedupeId`s are derived from it, never from user data.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// One unit of work of an invocation: an SQS message or an object to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Position of the unit in the invocation; SQS messages are numbered in batch order.
    pub index: usize,
    /// The SQS message it arrived in.
    pub message_id: Option<String>,
    /// The S3 bucket of the object.
    pub bucket: Option<String>,
    /// The S3 key (decoded) or local path of the object.
    pub key: Option<String>,
    /// What identifies the content (`s3://bucket/key` plus its ETag or version, `sqs:id`):
    /// the seed of derived dedupe ids, so a re-import of the same content repeats them.
    pub identity: String,
    /// Whether its records are user deletion requests rather than events.
    pub deletions: bool,
}

impl Unit {
    /// A unit for an SQS message's own body.
    pub fn message(index: usize, message_id: &str) -> Self {
        Self {
            index,
            message_id: Some(message_id.to_owned()),
            bucket: None,
            key: None,
            identity: format!("sqs:{message_id}"),
            deletions: false,
        }
    }

    /// A unit for an S3 object, optionally announced inside an SQS message.
    pub fn object(index: usize, bucket: &str, key: &str, message_id: Option<&str>) -> Self {
        Self {
            index,
            message_id: message_id.map(str::to_owned),
            bucket: Some(bucket.to_owned()),
            key: Some(key.to_owned()),
            identity: format!("s3://{bucket}/{key}"),
            deletions: false,
        }
    }

    /// A unit for a local file (the `dsp-conversions-check` tool).
    pub fn file(index: usize, path: &str) -> Self {
        Self {
            index,
            message_id: None,
            bucket: None,
            key: Some(path.to_owned()),
            identity: format!("file:{path}"),
            deletions: false,
        }
    }

    /// The same unit, holding user deletion requests.
    pub fn of_deletions(self) -> Self {
        Self {
            deletions: true,
            ..self
        }
    }
}

/// The position of one record in its unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// 1-based record number in the object or message (`None` for the unit as a whole).
    pub record: Option<u64>,
    /// Physical line (NDJSON and CSV; a CSV row spanning lines: its first line).
    pub line: Option<u64>,
}

impl Position {
    /// The position of record `record` at line `line`.
    pub fn at(record: u64, line: Option<u64>) -> Self {
        Self {
            record: Some(record),
            line,
        }
    }

    /// The unit as a whole (a file that cannot be read at all).
    pub const WHOLE: Position = Position {
        record: None,
        line: None,
    };
}

/// The first record not read yet: where a later invocation resumes an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    /// Its 1-based record number.
    pub record: u64,
    /// Its physical line (NDJSON and CSV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Its byte offset in the object, where a ranged read can start (uncompressed NDJSON and
    /// CSV only; the others are read again from the start, skipping what was done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl Resume {
    /// The very start of an object.
    pub const START: Resume = Resume {
        record: 1,
        line: Some(1),
        offset: None,
    };
}

/// Where one event came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Its unit.
    pub unit: Arc<Unit>,
    /// Its position there.
    pub position: Position,
}

impl Origin {
    /// The deterministic dedupe id of the record: a hash of the unit's identity and the record
    /// number (32 hex characters).
    pub fn dedupe_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.unit.identity.as_bytes());
        h.update(b"#");
        // The record number in decimal, formatted on the stack: this runs for every event.
        let mut digits = [0u8; 20];
        let mut n = self.position.record.unwrap_or(0);
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        h.update(&digits[start..]);
        hex::encode(&h.finalize()[..16])
    }

    /// The origin as the rejects report writes it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let u = &self.unit;
        if let Some(id) = &u.message_id {
            m.insert("messageId".into(), id.as_str().into());
        }
        if let Some(b) = &u.bucket {
            m.insert("bucket".into(), b.as_str().into());
        }
        if let Some(k) = &u.key {
            m.insert("key".into(), k.as_str().into());
        }
        if let Some(r) = self.position.record {
            m.insert("record".into(), r.into());
        }
        if let Some(l) = self.position.line {
            m.insert("line".into(), l.into());
        }
        serde_json::Value::Object(m)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.unit;
        match (&u.bucket, &u.key, &u.message_id) {
            (Some(b), Some(k), _) => write!(f, "s3://{b}/{k}")?,
            (None, Some(k), _) => write!(f, "{k}")?,
            (_, None, Some(id)) => write!(f, "message {id}")?,
            _ => write!(f, "unit {}", u.index)?,
        }
        if let (Some(id), Some(_)) = (&u.message_id, &u.key) {
            write!(f, " (message {id})")?;
        }
        if let Some(l) = self.position.line {
            write!(f, " line {l}")?;
        }
        if let Some(r) = self.position.record {
            write!(f, " record {r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_ids_depend_on_identity_and_record_only() {
        let a = Arc::new(Unit::message(0, "m-1"));
        let b = Arc::new(Unit::message(5, "m-1"));
        let o = |u: &Arc<Unit>, r| Origin {
            unit: u.clone(),
            position: Position::at(r, None),
        };
        assert_eq!(o(&a, 1).dedupe_id(), o(&b, 1).dedupe_id());
        assert_ne!(o(&a, 1).dedupe_id(), o(&a, 2).dedupe_id());
        assert_eq!(o(&a, 1).dedupe_id().len(), 32);
        // sha256("sqs:m-1#1024"), first 16 bytes: the record number is written in decimal.
        let mut h = Sha256::new();
        h.update(b"sqs:m-1#1024");
        assert_eq!(o(&a, 1024).dedupe_id(), hex::encode(&h.finalize()[..16]));
    }

    #[test]
    fn display_and_json_name_the_origin() {
        let u = Arc::new(Unit::object(0, "b", "in/x y.csv", Some("m-9")));
        let o = Origin {
            unit: u,
            position: Position::at(3, Some(4)),
        };
        assert_eq!(
            o.to_string(),
            "s3://b/in/x y.csv (message m-9) line 4 record 3"
        );
        assert_eq!(
            o.to_json(),
            serde_json::json!({"messageId":"m-9","bucket":"b","key":"in/x y.csv","record":3,"line":4})
        );
    }
}
