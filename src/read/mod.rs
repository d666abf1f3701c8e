//! Readers: bytes of an object or message body → records, streamed, so memory does not grow
//! with the input. Each format has its own module; this one detects the format, undoes gzip,
//! bounds sizes and tells source failures (transient) from bad content (a rejection).

mod csv;
mod json;
mod ndjson;
pub mod record;
pub(crate) mod scan;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

pub use self::json::read_json_slice;

use crate::domain::Position;
use crate::domain::{Reason, Rejection};
pub use record::{Field, RawEvent};

/// Where records go.
pub trait RecordSink {
    /// A record that parsed; `request_source` is the `source` of its DSP request object, if any.
    fn record(&mut self, position: Position, raw: &RawEvent<'_>, request_source: Option<&str>);
    /// A record (or the rest of the input) that cannot be read.
    fn invalid(&mut self, position: Position, rejection: Rejection);
    /// Whether to keep reading: false once the invocation must stop.
    fn keep_going(&self) -> bool {
        true
    }
}

/// The formats of S3 objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A DSP request object, an event object or an array of events.
    Json,
    /// One event object per line.
    Ndjson,
    /// A header row of field names, then one event per row.
    Csv,
}

/// How an object is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// The format.
    pub format: Format,
    /// Whether it is gzip-compressed.
    pub gzip: bool,
}

impl Encoding {
    /// Tells the encoding from the key's suffix (`.json`, `.ndjson`, `.jsonl`, `.csv`, each
    /// optionally `.gz`), then from `Content-Type`; `Content-Encoding: gzip` also means gzip.
    pub fn detect(
        key: &str,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Option<Self> {
        let lower = key.to_ascii_lowercase();
        let (stem, gz_suffix) = match lower.strip_suffix(".gz") {
            Some(stem) => (stem, true),
            None => (lower.as_str(), false),
        };
        let gzip = gz_suffix
            || content_encoding
                .is_some_and(|e| e.split(',').any(|p| p.trim().eq_ignore_ascii_case("gzip")));
        let by_suffix = if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") {
            Some(Format::Ndjson)
        } else if stem.ends_with(".json") {
            Some(Format::Json)
        } else if stem.ends_with(".csv") {
            Some(Format::Csv)
        } else {
            None
        };
        let by_type = || {
            let t = content_type?.split(';').next()?.trim().to_ascii_lowercase();
            match t.as_str() {
                "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => {
                    Some(Format::Ndjson)
                }
                "application/json" => Some(Format::Json),
                "text/csv" => Some(Format::Csv),
                _ => None,
            }
        };
        by_suffix
            .or_else(by_type)
            .map(|format| Self { format, gzip })
    }
}

/// Size limits that hold under hostile input.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest record in bytes.
    pub max_record_bytes: usize,
    /// Largest object in bytes after decompression.
    pub max_object_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: 1 << 20,
            max_object_bytes: 10 << 30,
        }
    }
}

/// Reading stopped before the end, for a reason that is not the content's fault.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    /// The source failed (network, storage): transient.
    #[error("reading failed: {0}")]
    Source(String),
    /// The sink asked to stop (deadline, invocation failure).
    #[error("reading stopped before the end")]
    Stopped,
}

/// An error of the underlying source, marked so that it is not taken for bad content.
#[derive(Debug)]
struct SourceError(io::Error);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

/// Marks every error of `R` as a source error.
struct Marked<R>(R);

impl<R: Read> Read for Marked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::other(SourceError(e)))
    }
}

/// The decompressed size went over the limit.
#[derive(Debug)]
struct TooLarge(u64);

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the object is larger than {} bytes (MAX_OBJECT_BYTES)",
            self.0
        )
    }
}

impl std::error::Error for TooLarge {}

/// Fails once more than `limit` bytes were read: bounds a gzip bomb.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::other(TooLarge(self.limit)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A record went over `MAX_RECORD_BYTES`.
#[derive(Debug)]
struct RecordTooLong(usize);

impl fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a record is longer than {} bytes (MAX_RECORD_BYTES); the rest was not read",
            self.0
        )
    }
}

impl std::error::Error for RecordTooLong {}

/// Counts the bytes of the record being read and fails past the limit, so that one huge record
/// (a JSON element, a CSV row) cannot take the memory. The reader resets `used` at each record.
pub(crate) struct Budgeted<R> {
    pub(crate) inner: R,
    pub(crate) used: std::rc::Rc<std::cell::Cell<usize>>,
    pub(crate) max: usize,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let used = self.used.get() + n;
        self.used.set(used);
        if used > self.max {
            return Err(io::Error::other(RecordTooLong(self.max)));
        }
        Ok(n)
    }
}

/// What an I/O error during reading means.
pub(crate) enum Failure {
    /// Transient: stop, the unit is incomplete.
    Interrupted(Interrupted),
    /// The content is bad from here on: reject the rest.
    Rejected(Rejection),
}

pub(crate) fn classify(e: io::Error, gzip: bool) -> Failure {
    if let Some(inner) = e.get_ref() {
        if let Some(source) = inner.downcast_ref::<SourceError>() {
            return Failure::Interrupted(Interrupted::Source(source.to_string()));
        }
        if let Some(too_large) = inner.downcast_ref::<TooLarge>() {
            return Failure::Rejected(Rejection::unreadable(
                Reason::ObjectTooLarge,
                too_large.to_string(),
            ));
        }
        if let Some(too_long) = inner.downcast_ref::<RecordTooLong>() {
            return Failure::Rejected(Rejection::unreadable(
                Reason::RecordTooLarge,
                too_long.to_string(),
            ));
        }
    }
    if gzip {
        Failure::Rejected(Rejection::unreadable(
            Reason::CorruptGzip,
            format!("the gzip stream is corrupt or truncated: {e}"),
        ))
    } else {
        Failure::Rejected(Rejection::unreadable(
            Reason::InvalidEncoding,
            format!("cannot read: {e}"),
        ))
    }
}

/// Reads an object of `encoding` from `source` into `sink`. Returns `Err` when reading stopped
/// for a reason other than the content; bad content ends as rejections in the sink.
pub fn read_object(
    source: impl Read,
    encoding: Encoding,
    limits: Limits,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    let marked = Marked(source);
    let decoded: Box<dyn Read> = if encoding.gzip {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            64 << 10,
            marked,
        )))
    } else {
        Box::new(marked)
    };
    let bounded = Bounded {
        inner: decoded,
        left: limits.max_object_bytes,
        limit: limits.max_object_bytes,
    };
    let mut reader = BufReader::with_capacity(256 << 10, bounded);
    if let Err(e) = skip_bom(&mut reader) {
        return reject_rest(e, encoding.gzip, Position::WHOLE, sink);
    }
    match encoding.format {
        Format::Ndjson => ndjson::read(reader, encoding.gzip, limits, sink),
        Format::Json => json::read(reader, encoding.gzip, limits, sink),
        Format::Csv => csv::read(reader, encoding.gzip, limits, sink),
    }
}

/// Ends reading after an I/O error: transient errors interrupt, content errors reject the rest.
pub(crate) fn reject_rest(
    e: io::Error,
    gzip: bool,
    position: Position,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    match classify(e, gzip) {
        Failure::Interrupted(i) => Err(i),
        Failure::Rejected(r) => {
            sink.invalid(position, r);
            Ok(())
        }
    }
}

fn skip_bom(reader: &mut impl BufRead) -> io::Result<()> {
    let head = reader.fill_buf()?;
    if head.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    Ok(())
}

/// Classifies a parse error of one JSON record.
pub(crate) fn json_rejection(e: &serde_json::Error) -> Rejection {
    let text = e.to_string();
    if text.starts_with("unknown field") {
        Rejection::unreadable(Reason::UnknownField, text)
    } else if e.is_data() {
        Rejection::unreadable(
            Reason::InvalidJson,
            format!("expected an event object: {text}"),
        )
    } else {
        Rejection::unreadable(Reason::InvalidJson, format!("invalid JSON: {text}"))
    }
}

#[cfg(test)]
pub(crate) mod tests;
