//! JSON: a DSP request object `{"source", "eventData": [...]}`, a single event object, or an array
//! of events. Elements are handed on one at a time as the parser reaches them, so a large array
//! never sits in memory. When `source` follows `eventData` (as with keys written in sorted
//! order), the events wait for it in a spill file in the temporary directory (Lambda's `/tmp`),
//! not in memory.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use std::cell::Cell;
use std::rc::Rc;

use super::RawEvent;
use super::{json_rejection, reject_rest, Budgeted, Interrupted, Limits, RecordSink};
use crate::domain::{Position, Resume};
use crate::domain::{Reason, Rejection};

struct State<'k> {
    sink: &'k mut dyn RecordSink,
    record: u64,
    stopped: bool,
    /// Why the spill file failed, if it did.
    spill_failed: Option<String>,
    /// Bytes read for the current record, when reading a stream.
    used: Option<Rc<Cell<usize>>>,
}

impl State<'_> {
    /// A new record begins: its bytes count from zero.
    fn next_record(&self) {
        if let Some(used) = &self.used {
            used.set(0);
        }
    }

    fn element(&mut self, text: &str, source: Option<&str>) {
        self.next_record();
        self.record += 1;
        let at = Position::at(self.record, None);
        match RawEvent::from_json(text) {
            Ok(raw) => self.sink.record(at, &raw, source),
            Err(e) => self.sink.invalid(at, json_rejection(&e)),
        }
    }

    fn spill_error<E: de::Error>(&mut self, e: &std::io::Error) -> E {
        self.spill_failed = Some(format!(
            "cannot spill events to the temporary directory: {e}"
        ));
        E::custom("spill failed")
    }

    fn check<E: de::Error>(&mut self) -> Result<(), E> {
        if self.sink.keep_going() {
            Ok(())
        } else {
            self.stopped = true;
            Err(E::custom("stopped"))
        }
    }
}

/// Reads a JSON object from a stream.
pub(super) fn read(
    reader: impl std::io::Read,
    gzip: bool,
    limits: Limits,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    let used = Rc::new(Cell::new(0));
    let budgeted = Budgeted {
        inner: reader,
        used: used.clone(),
        max: limits.max_record_bytes,
    };
    let mut de = serde_json::Deserializer::from_reader(budgeted);
    drive(&mut de, gzip, Some(used), sink)
}

/// Reads a JSON text held in memory (an SQS message body).
pub fn read_json_slice(bytes: &[u8], sink: &mut dyn RecordSink) -> Result<(), Interrupted> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    drive(&mut de, false, None, sink)
}

/// Reads a body of user deletion requests, `{"deletionRequests": [...]}` (an SQS message body):
/// each entry is one record. A body of another shape is rejected as a whole.
pub fn read_deletions_slice(bytes: &[u8], sink: &mut dyn RecordSink) -> Result<(), Interrupted> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body<'a> {
        #[serde(borrow, rename = "deletionRequests")]
        deletion_requests: Vec<&'a RawValue>,
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let body: Body<'_> = match serde_json::from_slice(bytes) {
        Ok(body) => body,
        Err(e) => {
            sink.invalid(
                Position::WHOLE,
                Rejection::unreadable(
                    Reason::InvalidJson,
                    format!(
                        "expected {{\"deletionRequests\": [{{\"matchKeys\": [...]}}, ...]}}: {e}"
                    ),
                ),
            );
            return Ok(());
        }
    };
    for (i, entry) in body.deletion_requests.iter().enumerate() {
        let record = i as u64 + 1;
        if !sink.keep_going() {
            return Err(Interrupted::Stopped(Resume {
                record,
                line: None,
                offset: None,
            }));
        }
        let at = Position::at(record, None);
        match RawEvent::from_json(entry.get()) {
            Ok(raw) => sink.record(at, &raw, None),
            Err(e) => sink.invalid(at, json_rejection(&e)),
        }
    }
    Ok(())
}

fn drive<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    gzip: bool,
    used: Option<Rc<Cell<usize>>>,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    let mut state = State {
        sink,
        record: 0,
        stopped: false,
        spill_failed: None,
        used,
    };
    let result = Top(&mut state)
        .deserialize(&mut *de)
        .and_then(|()| de.end());
    let Err(e) = result else { return Ok(()) };
    if let Some(cause) = state.spill_failed {
        return Err(Interrupted::Source(cause));
    }
    if state.stopped {
        return Err(Interrupted::Stopped(Resume {
            record: state.record + 1,
            line: None,
            offset: None,
        }));
    }
    let at = Position::at(state.record + 1, None);
    if e.is_io() {
        return reject_rest(e.into(), gzip, at, state.sink);
    }
    let message = if e.is_data() {
        format!("expected a DSP request object, an event object or an array of events: {e}")
    } else {
        match state.record {
            0 => format!("invalid JSON: {e}"),
            n => format!("invalid JSON after record {n}: {e}"),
        }
    };
    state
        .sink
        .invalid(at, Rejection::unreadable(Reason::InvalidJson, message));
    Ok(())
}

struct Top<'s, 'k>(&'s mut State<'k>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DSP request object, an event object or an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Events {
            state: self.0,
            source: None,
            pending: None,
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        let mut source: Option<String> = None;
        let mut pending: Option<Spill> = None;
        let mut others: Vec<(String, Box<RawValue>)> = Vec::new();
        let mut has_events = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "eventData" => {
                    has_events = true;
                    // Until `source` is known, events wait; it comes first in practice.
                    let wait = source.is_none() && !others.iter().any(|(k, _)| k == "source");
                    let mut spill = match wait.then(Spill::new).transpose() {
                        Ok(spill) => spill,
                        Err(e) => return Err(state.spill_error(&e)),
                    };
                    map.next_value_seed(Events {
                        state,
                        source: source.as_deref(),
                        pending: spill.as_mut(),
                    })?;
                    pending = spill;
                }
                "source" if source.is_none() => {
                    let raw: Box<RawValue> = map.next_value()?;
                    source = Some(
                        serde_json::from_str::<String>(raw.get())
                            .unwrap_or_else(|_| raw.get().to_owned()),
                    );
                }
                _ => {
                    let raw: Box<RawValue> = map.next_value()?;
                    others.push((key, raw));
                }
            }
        }
        if has_events {
            if let Some(spill) = pending {
                let replayed = spill.replay(|text| {
                    state
                        .check::<A::Error>()
                        .map(|()| state.element(text, source.as_deref()))
                });
                match replayed {
                    Ok(result) => result?,
                    Err(e) => return Err(state.spill_error(&e)),
                }
            }
            return Ok(());
        }
        // Not a request: the object is one event; put it back together.
        let mut text = String::from("{");
        for (i, (k, v)) in others.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(k).map_err(de::Error::custom)?);
            text.push(':');
            text.push_str(v.get());
        }
        if let Some(s) = &source {
            if !others.is_empty() {
                text.push(',');
            }
            text.push_str("\"source\":");
            text.push_str(&serde_json::to_string(s).map_err(de::Error::custom)?);
        }
        text.push('}');
        state.element(&text, None);
        Ok(())
    }
}

/// The array of events, streamed.
struct Events<'s, 'k, 'p> {
    state: &'s mut State<'k>,
    source: Option<&'p str>,
    pending: Option<&'p mut Spill>,
}

impl<'de> DeserializeSeed<'de> for Events<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Events<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.state.check()?;
            let Some(raw) = seq.next_element::<Box<RawValue>>()? else {
                return Ok(());
            };
            match self.pending.as_mut() {
                Some(spill) => {
                    self.state.next_record();
                    if let Err(e) = spill.push(raw.get()) {
                        return Err(self.state.spill_error(&e));
                    }
                }
                None => self.state.element(raw.get(), self.source),
            }
        }
    }
}

/// Events waiting for their request's `source`, in a file of the temporary directory: each
/// element's text preceded by its length (texts may hold line breaks).
struct Spill {
    path: std::path::PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
}

impl Spill {
    fn new() -> std::io::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("dsp-events-{}-{n}.spill", std::process::id()));
        let file = std::fs::File::create(&path)?;
        Ok(Self {
            path,
            writer: Some(std::io::BufWriter::new(file)),
        })
    }

    fn push(&mut self, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| std::io::Error::other("spill closed"))?;
        writer.write_all(&(text.len() as u64).to_le_bytes())?;
        writer.write_all(text.as_bytes())
    }

    /// Hands each spilled text to `f`, in order, until `f` returns an error.
    fn replay<E>(
        mut self,
        mut f: impl FnMut(&str) -> Result<(), E>,
    ) -> std::io::Result<Result<(), E>> {
        use std::io::{Read, Write};
        if let Some(mut writer) = self.writer.take() {
            writer.flush()?;
        }
        let mut reader = std::io::BufReader::new(std::fs::File::open(&self.path)?);
        let mut text = String::new();
        loop {
            let mut len = [0u8; 8];
            match reader.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Ok(())),
                Err(e) => return Err(e),
            }
            text.clear();
            let len = u64::from_le_bytes(len);
            (&mut reader).take(len).read_to_string(&mut text)?;
            if let Err(e) = f(&text) {
                return Ok(Err(e));
            }
        }
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        drop(self.writer.take());
        let _ = std::fs::remove_file(&self.path);
    }
}
