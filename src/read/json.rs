//! JSON: a DSP request object `{"source", "eventData": [...]}`, a single event object, or an array
//! of events. Elements are handed on one at a time as the parser reaches them, so a large array
//! never sits in memory (except when `source` follows `eventData`: then the events wait for it).

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
    /// Bytes read for the current record, when reading a stream.
    used: Option<Rc<Cell<usize>>>,
}

impl State<'_> {
    fn element(&mut self, text: &str, source: Option<&str>) {
        if let Some(used) = &self.used {
            used.set(0);
        }
        self.record += 1;
        let at = Position::at(self.record, None);
        match RawEvent::from_json(text) {
            Ok(raw) => self.sink.record(at, &raw, source),
            Err(e) => self.sink.invalid(at, json_rejection(&e)),
        }
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
        used,
    };
    let result = Top(&mut state)
        .deserialize(&mut *de)
        .and_then(|()| de.end());
    let Err(e) = result else { return Ok(()) };
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
        let mut pending: Option<Vec<Box<RawValue>>> = None;
        let mut others: Vec<(String, Box<RawValue>)> = Vec::new();
        let mut has_events = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "eventData" => {
                    has_events = true;
                    // Until `source` is known, events wait; it comes first in practice.
                    let wait = source.is_none() && !others.iter().any(|(k, _)| k == "source");
                    let mut buffer = wait.then(Vec::new);
                    map.next_value_seed(Events {
                        state,
                        source: source.as_deref(),
                        pending: buffer.as_mut(),
                    })?;
                    pending = buffer;
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
            for raw in pending.unwrap_or_default() {
                state.check()?;
                state.element(raw.get(), source.as_deref());
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
    pending: Option<&'p mut Vec<Box<RawValue>>>,
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
                Some(pending) => pending.push(raw),
                None => self.state.element(raw.get(), self.source),
            }
        }
    }
}
