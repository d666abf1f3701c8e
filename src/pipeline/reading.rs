//! The reading side of an invocation, on a blocking thread: every unit is opened and read,
//! each record validated, valid events batched and handed to the delivering side, rejections
//! booked at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::lock;
use crate::batch::{Batch, Batcher, DeletionBatch, DeletionBatcher, Request};
use crate::domain::{Origin, Position, Reason, Rejection, Unit};
use crate::event::{self, Rules};
use crate::outcome::Ledger;
use crate::read::{self, Encoding, Format, Interrupted, Limits, RawEvent, RecordSink, Start};
use crate::store::{ObjectStore, OpenError, Part};
use crate::trigger::{Continuation, Input, WorkUnit};

/// Past this many hops a chain of continuations is dropped: an object that needs more is not
/// progressing (or is far larger than any import should be).
pub(super) const MAX_HOPS: u32 = 10_000;

/// The blocking side: reads every unit and feeds the batches.
pub(super) struct Reader {
    pub rules: Rules,
    pub limits: Limits,
    pub max_events: usize,
    pub objects: Arc<dyn ObjectStore>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stop: Arc<AtomicBool>,
    pub cutoff: Instant,
    /// Whether an object that cannot be read to the end is continued by a later invocation
    /// (a retry queue is configured and this is not a dry run).
    pub continues: bool,
}

/// What the reading side leaves for after delivery.
#[derive(Default)]
pub(super) struct Read {
    /// Objects to continue, with the unit that stopped.
    pub continuations: Vec<(usize, Continuation)>,
    /// Continuations dropped because their chain was too long.
    pub dropped: u64,
}

/// An object to read: a new one, or the rest of one begun earlier.
struct ObjectWork<'w> {
    bucket: &'w str,
    key: &'w str,
    from: Option<&'w Continuation>,
}

impl Reader {
    /// Reads every unit, in order, and sends the batches to `tx`.
    pub fn read_all(self, units: Vec<WorkUnit>, tx: &mpsc::Sender<Request>) -> Read {
        let mut batcher = Batchers {
            events: Batcher::new(self.max_events),
            deletions: DeletionBatcher::new(self.max_events),
        };
        let mut read = Read::default();
        for work in units {
            let index = work.unit.index;
            let mut etag = None;
            let (result, object) = match &work.input {
                Input::Acknowledge => (Ok(()), None),
                Input::Unreadable(rejection) => {
                    self.reject_whole(work.unit.clone(), rejection.clone());
                    (Ok(()), None)
                }
                Input::Body(body) => {
                    let mut sink = Collector::new(&self, work.unit.clone(), &mut batcher, tx);
                    (read::read_json_slice(body.as_bytes(), &mut sink), None)
                }
                Input::Deletions(body) => {
                    let mut sink = Collector::new(&self, work.unit.clone(), &mut batcher, tx);
                    (read::read_deletions_slice(body.as_bytes(), &mut sink), None)
                }
                Input::Object { bucket, key } => {
                    let object = ObjectWork {
                        bucket,
                        key,
                        from: None,
                    };
                    let result = self.object(&work.unit, &object, &mut etag, &mut batcher, tx);
                    (result, Some((bucket.as_str(), key.as_str(), 0)))
                }
                Input::Continuation(c) if c.hop >= MAX_HOPS => {
                    tracing::error!(
                        bucket = %c.bucket, key = %c.key, record = c.resume.record, hops = c.hop,
                        "continuation dropped: the chain is longer than {MAX_HOPS} hops"
                    );
                    read.dropped += 1;
                    (Ok(()), None)
                }
                Input::Continuation(c) => {
                    let object = ObjectWork {
                        bucket: &c.bucket,
                        key: &c.key,
                        from: Some(c),
                    };
                    let result = self.object(&work.unit, &object, &mut etag, &mut batcher, tx);
                    (result, Some((c.bucket.as_str(), c.key.as_str(), c.hop)))
                }
            };
            match (result, object) {
                (Ok(()), _) => {}
                (Err(Interrupted::Stopped(resume)), Some((bucket, key, hop))) if self.continues => {
                    read.continuations.push((
                        index,
                        Continuation {
                            bucket: bucket.to_owned(),
                            key: key.to_owned(),
                            etag,
                            resume,
                            hop: hop + 1,
                        },
                    ));
                }
                (Err(e), _) => {
                    if !matches!(e, Interrupted::Stopped(_)) {
                        tracing::warn!(unit = index, error = %e, "unit will be redelivered");
                    }
                    lock(&self.ledger).incomplete(index);
                }
            }
        }
        let last = batcher.events.finish().map(Request::Events);
        for request in last.chain(batcher.deletions.finish().map(Request::Deletions)) {
            if tx.blocking_send(request).is_err() {
                break;
            }
        }
        read
    }

    fn reject_whole(&self, unit: Arc<Unit>, rejection: Rejection) {
        let origin = Origin {
            unit,
            position: Position::WHOLE,
        };
        let mut l = lock(&self.ledger);
        l.received(&origin);
        l.rejected(&origin, rejection);
    }

    /// Reads an object (or its rest); `etag` is set to the content's ETag once it is open.
    fn object(
        &self,
        unit: &Arc<Unit>,
        work: &ObjectWork<'_>,
        etag: &mut Option<String>,
        batcher: &mut Batchers,
        tx: &mpsc::Sender<Request>,
    ) -> Result<(), Interrupted> {
        let handle = tokio::runtime::Handle::current();
        let (bucket, key) = (work.bucket, work.key);
        let if_match = work.from.and_then(|c| c.etag.as_deref());
        let from = work.from.and_then(|c| c.resume.offset).unwrap_or(0);
        let opened = handle.block_on(self.objects.open(bucket, key, Part { if_match, from }));
        let object = match opened {
            Ok(object) => object,
            Err(OpenError::NotFound | OpenError::Changed) if work.from.is_some() => {
                tracing::warn!(
                    bucket, key,
                    "continuation dropped: the object has changed or disappeared since its import began (a new upload is imported on its own)"
                );
                return Ok(());
            }
            Err(OpenError::PastTheEnd) => return Ok(()),
            Err(OpenError::NotFound) => {
                self.reject_whole(
                    unit.clone(),
                    Rejection::unreadable(
                        Reason::ObjectNotFound,
                        format!("s3://{bucket}/{key} does not exist"),
                    ),
                );
                return Ok(());
            }
            Err(e) => {
                return Err(Interrupted::Source(format!(
                    "cannot open s3://{bucket}/{key}: {e}"
                )))
            }
        };
        etag.clone_from(&object.etag);
        let unit = match &object.revision {
            Some(rev) => Arc::new(Unit {
                identity: format!("{}#{rev}", unit.identity),
                ..(**unit).clone()
            }),
            None => unit.clone(),
        };
        let mut sink = Collector::new(self, unit, batcher, tx);
        let Some(encoding) = Encoding::detect(
            key,
            object.content_type.as_deref(),
            object.content_encoding.as_deref(),
        ) else {
            sink.invalid(
                Position::WHOLE,
                Rejection::unreadable(
                    Reason::UnsupportedFormat,
                    "cannot tell the format: name the object .json, .ndjson, .jsonl or .csv (optionally .gz)",
                ),
            );
            return Ok(());
        };
        let start = match work.from {
            None => Start::Beginning,
            Some(c) if c.resume.offset.is_some() && read::ranged(encoding) => Start::Ranged {
                resume: c.resume,
                csv_header: match encoding.format {
                    Format::Csv => {
                        let whole = Part { if_match, from: 0 };
                        let head = handle
                            .block_on(self.objects.open(bucket, key, whole))
                            .map_err(|e| {
                                Interrupted::Source(format!("cannot open s3://{bucket}/{key}: {e}"))
                            })?;
                        Some(read::csv_header(head.reader, self.limits)?)
                    }
                    _ => None,
                },
            },
            Some(c) => Start::Skip {
                record: c.resume.record,
            },
        };
        read::read_object_from(object.reader, encoding, self.limits, &start, &mut sink)
    }
}

/// The open requests: events by source, and deletion requests.
struct Batchers {
    events: Batcher,
    deletions: DeletionBatcher,
}

/// Validates the records of one unit (events, or deletion requests when the unit holds them)
/// and batches the valid ones.
struct Collector<'r> {
    reader: &'r Reader,
    unit: Arc<Unit>,
    batcher: &'r mut Batchers,
    tx: &'r mpsc::Sender<Request>,
    /// Records read, booked into the ledger once, when the unit is done (no lock per record).
    received: u64,
    /// Calls to `keep_going` until the clock is read again (reading it costs more than a record).
    until_clock: Cell<u32>,
}

/// How many records may be read between two looks at the clock: a few microseconds' worth.
const RECORDS_PER_CLOCK: u32 = 64;

impl<'r> Collector<'r> {
    fn new(
        reader: &'r Reader,
        unit: Arc<Unit>,
        batcher: &'r mut Batchers,
        tx: &'r mpsc::Sender<Request>,
    ) -> Self {
        Self {
            reader,
            unit,
            batcher,
            tx,
            received: 0,
            until_clock: Cell::new(0),
        }
    }
}

impl Drop for Collector<'_> {
    fn drop(&mut self) {
        lock(&self.reader.ledger).received_many(self.unit.index, self.received);
    }
}

impl RecordSink for Collector<'_> {
    fn record(&mut self, position: Position, raw: &RawEvent<'_>, request_source: Option<&str>) {
        self.received += 1;
        let origin = Origin {
            unit: self.unit.clone(),
            position,
        };
        let full = if self.unit.deletions {
            event::deletion::validate(raw, self.reader.rules.defaults(), &origin)
                .map(|valid| self.batcher.deletions.push(valid).map(Request::Deletions))
        } else {
            event::validate(raw, request_source, &self.reader.rules, &origin)
                .map(|valid| self.batcher.events.push(valid).map(Request::Events))
        };
        match full {
            Err(rejection) => lock(&self.reader.ledger).rejected(&origin, rejection),
            Ok(None) => {}
            Ok(Some(request)) => {
                // Sending may wait for the delivery side: look at the clock next time.
                self.until_clock.set(0);
                if let Err(mpsc::error::SendError(request)) = self.tx.blocking_send(request) {
                    redeliver_unsent(&self.reader.ledger, &request);
                }
            }
        }
    }

    fn invalid(&mut self, position: Position, rejection: Rejection) {
        self.received += 1;
        let origin = Origin {
            unit: self.unit.clone(),
            position,
        };
        lock(&self.reader.ledger).rejected(&origin, rejection);
    }

    fn keep_going(&self) -> bool {
        if self.reader.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.until_clock.get() {
            0 => {
                self.until_clock.set(RECORDS_PER_CLOCK);
                Instant::now() < self.reader.cutoff
            }
            n => {
                self.until_clock.set(n - 1);
                true
            }
        }
    }
}

/// Books every item of a request that could not be handed to the delivering side.
fn redeliver_unsent(ledger: &Mutex<Ledger>, request: &Request) {
    let mut l = lock(ledger);
    match request {
        Request::Events(Batch { events, .. }) => {
            events.iter().for_each(|e| l.redelivered(&e.origin))
        }
        Request::Deletions(DeletionBatch { requests }) => {
            requests.iter().for_each(|d| l.redelivered(&d.origin));
        }
    }
}
