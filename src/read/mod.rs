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

pub use self::json::{read_deletions_slice, read_json_slice};

use crate::domain::{Position, Resume};
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

/// Where reading an object starts.
#[derive(Clone, Debug, Default)]
pub enum Start {
    /// At its first byte.
    #[default]
    Beginning,
    /// The object is read from its first byte, and the records before `record` are skipped
    /// (they were read by an earlier invocation).
    Skip {
        /// The first record to hand on.
        record: u64,
    },
    /// The source starts at `resume.offset` (a ranged read) with record `resume.record`; a CSV
    /// object's header row, read separately, comes with it.
    Ranged {
        /// Where the source starts.
        resume: Resume,
        /// The CSV header row, without its line break.
        csv_header: Option<Vec<u8>>,
    },
}

/// Reading stopped before the end, for a reason that is not the content's fault.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    /// The source failed (network, storage): transient.
    #[error("reading failed: {0}")]
    Source(String),
    /// The sink asked to stop (deadline, invocation failure); reading can resume there.
    #[error("reading stopped before record {}", .0.record)]
    Stopped(Resume),
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
    read_object_from(source, encoding, limits, &Start::Beginning, sink)
}

/// Whether an object of `encoding` can be resumed by a ranged read (else: read again, skip).
pub fn ranged(encoding: Encoding) -> bool {
    !encoding.gzip && matches!(encoding.format, Format::Ndjson | Format::Csv)
}

/// Reads the CSV header row (without its line break) from the start of an object.
pub fn csv_header(source: impl Read, limits: Limits) -> Result<Vec<u8>, Interrupted> {
    let mut reader = BufReader::new(Marked(source));
    let mut line = Vec::new();
    let read = (&mut reader)
        .take(limits.max_record_bytes as u64 + 3)
        .read_until(b'\n', &mut line);
    match read {
        Ok(_) => {
            let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&line);
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        }
        Err(e) => Err(Interrupted::Source(e.to_string())),
    }
}

/// Reads an object from `start` (see [`Start`]); otherwise as [`read_object`].
pub fn read_object_from(
    source: impl Read,
    encoding: Encoding,
    limits: Limits,
    start: &Start,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    if let Start::Skip { record } = *start {
        let mut skipping = Skipping {
            inner: sink,
            first: record,
        };
        return match read_object_from(source, encoding, limits, &Start::Beginning, &mut skipping) {
            // Stopped while still skipping: the next attempt starts where this one was to.
            Err(Interrupted::Stopped(resume)) if resume.record < record => {
                Err(Interrupted::Stopped(Resume {
                    record,
                    line: None,
                    offset: None,
                }))
            }
            other => other,
        };
    }
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
    let resume = match start {
        Start::Ranged { resume, .. } => *resume,
        _ => match skip_bom(&mut reader) {
            Ok(bom) => Resume {
                offset: Some(bom),
                ..Resume::START
            },
            Err(e) => return reject_rest(e, encoding.gzip, Position::WHOLE, sink),
        },
    };
    // Byte offsets are only kept where a ranged read can use them.
    let resume = Resume {
        offset: resume.offset.filter(|_| ranged(encoding)),
        ..resume
    };
    match (encoding.format, start) {
        (Format::Ndjson, _) => ndjson::read(reader, encoding.gzip, limits, resume, sink),
        (Format::Json, _) => json::read(reader, encoding.gzip, limits, sink),
        (Format::Csv, Start::Ranged { csv_header, .. }) => {
            let header = csv_header.as_deref().unwrap_or_default();
            csv::read(header, reader, encoding.gzip, limits, resume, sink)
        }
        (Format::Csv, _) => csv::read(&[][..], reader, encoding.gzip, limits, resume, sink),
    }
}

/// Hands on only the records from `first` on (and what concerns the object as a whole).
struct Skipping<'s> {
    inner: &'s mut dyn RecordSink,
    first: u64,
}

impl Skipping<'_> {
    fn wanted(&self, position: Position) -> bool {
        position.record.is_none_or(|r| r >= self.first)
    }
}

impl RecordSink for Skipping<'_> {
    fn record(&mut self, position: Position, raw: &RawEvent<'_>, request_source: Option<&str>) {
        if self.wanted(position) {
            self.inner.record(position, raw, request_source);
        }
    }

    fn invalid(&mut self, position: Position, rejection: Rejection) {
        if self.wanted(position) {
            self.inner.invalid(position, rejection);
        }
    }

    fn keep_going(&self) -> bool {
        self.inner.keep_going()
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

/// Skips a UTF-8 byte order mark; returns how many bytes it took.
fn skip_bom(reader: &mut impl BufRead) -> io::Result<u64> {
    let head = reader.fill_buf()?;
    if head.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
        return Ok(3);
    }
    Ok(0)
}

/// Classifies a parse error of one JSON record.
pub(crate) fn json_rejection(e: &serde_json::Error) -> Rejection {
    let text = within_record(e);
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

/// serde_json's message for an error inside one record, its position given in the record's
/// terms: serde's "at line 1 column 116" counts within the record and would read like a line of
/// the file, which the rejection's origin already gives.
fn within_record(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match (text.rfind(" at line "), e.line()) {
        (Some(i), 1) => format!("{} (character {} of the record)", &text[..i], e.column()),
        (Some(i), line) if line > 1 => format!(
            "{} (line {line}, character {} of the record)",
            &text[..i],
            e.column()
        ),
        _ => text,
    }
}

#[cfg(test)]
pub(crate) mod tests;
