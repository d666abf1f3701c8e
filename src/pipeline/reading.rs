//! The reading side of an invocation, on a blocking thread: every unit is opened and read,
//! each record validated, valid events batched and handed to the delivering side, rejections
//! booked at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::lock;
use crate::batch::{Batch, Batcher};
use crate::domain::{Origin, Position, Reason, Rejection, Unit};
use crate::event::{self, Rules};
use crate::outcome::Ledger;
use crate::read::{self, Encoding, Interrupted, Limits, RawEvent, RecordSink};
use crate::store::{ObjectStore, OpenError};
use crate::trigger::{Input, WorkUnit};

/// The blocking side: reads every unit and feeds the batches.
pub(super) struct Reader {
    pub rules: Rules,
    pub limits: Limits,
    pub max_events: usize,
    pub objects: Arc<dyn ObjectStore>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stop: Arc<AtomicBool>,
    pub cutoff: Instant,
}

impl Reader {
    /// Reads every unit, in order, and sends the batches to `tx`.
    pub fn read_all(self, units: Vec<WorkUnit>, tx: &mpsc::Sender<Batch>) {
        let handle = tokio::runtime::Handle::current();
        let mut batcher = Batcher::new(self.max_events);
        for work in units {
            let index = work.unit.index;
            let result = match work.input {
                Input::Acknowledge => Ok(()),
                Input::Unreadable(rejection) => {
                    let origin = Origin {
                        unit: work.unit,
                        position: Position::WHOLE,
                    };
                    let mut l = lock(&self.ledger);
                    l.received(&origin);
                    l.rejected(&origin, rejection);
                    Ok(())
                }
                Input::Body(body) => {
                    let mut sink = Collector::new(&self, work.unit, &mut batcher, tx);
                    read::read_json_slice(body.as_bytes(), &mut sink)
                }
                Input::Object { bucket, key } => match handle
                    .block_on(self.objects.open(&bucket, &key))
                {
                    Ok(object) => {
                        let unit = match &object.revision {
                            Some(rev) => Arc::new(Unit {
                                identity: format!("{}#{rev}", work.unit.identity),
                                ..(*work.unit).clone()
                            }),
                            None => work.unit,
                        };
                        let mut sink = Collector::new(&self, unit, &mut batcher, tx);
                        match Encoding::detect(
                            &key,
                            object.content_type.as_deref(),
                            object.content_encoding.as_deref(),
                        ) {
                            Some(encoding) => {
                                read::read_object(object.reader, encoding, self.limits, &mut sink)
                            }
                            None => {
                                sink.invalid(
                                    Position::WHOLE,
                                    Rejection::unreadable(
                                        Reason::UnsupportedFormat,
                                        "cannot tell the format: name the object .json, .ndjson, .jsonl or .csv (optionally .gz)",
                                    ),
                                );
                                Ok(())
                            }
                        }
                    }
                    Err(OpenError::NotFound) => {
                        let origin = Origin {
                            unit: work.unit,
                            position: Position::WHOLE,
                        };
                        let mut l = lock(&self.ledger);
                        l.received(&origin);
                        l.rejected(
                            &origin,
                            Rejection::unreadable(
                                Reason::ObjectNotFound,
                                format!("s3://{bucket}/{key} does not exist"),
                            ),
                        );
                        Ok(())
                    }
                    Err(e) => Err(Interrupted::Source(format!(
                        "cannot open s3://{bucket}/{key}: {e}"
                    ))),
                },
            };
            if let Err(e) = result {
                if !matches!(e, Interrupted::Stopped) {
                    tracing::warn!(unit = index, error = %e, "unit will be redelivered");
                }
                lock(&self.ledger).incomplete(index);
            }
        }
        for batch in batcher.finish() {
            if tx.blocking_send(batch).is_err() {
                break;
            }
        }
    }
}

/// Validates the records of one unit and batches the valid ones.
struct Collector<'r> {
    reader: &'r Reader,
    unit: Arc<Unit>,
    batcher: &'r mut Batcher,
    tx: &'r mpsc::Sender<Batch>,
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
        batcher: &'r mut Batcher,
        tx: &'r mpsc::Sender<Batch>,
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
        match event::validate(raw, request_source, &self.reader.rules, &origin) {
            Err(rejection) => lock(&self.reader.ledger).rejected(&origin, rejection),
            Ok(valid) => {
                if let Some(batch) = self.batcher.push(valid) {
                    // Sending may wait for the delivery side: look at the clock next time.
                    self.until_clock.set(0);
                    if let Err(mpsc::error::SendError(batch)) = self.tx.blocking_send(batch) {
                        let mut l = lock(&self.reader.ledger);
                        for e in &batch.events {
                            l.redelivered(&e.origin);
                        }
                    }
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
