//! One invocation, end to end: a blocking reader thread turns units into records, validates and
//! batches them; the async side delivers batches (at most `DSP_MAX_IN_FLIGHT` at once) and
//! books every event's outcome; then rejects are stored and the report is built.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use time::OffsetDateTime;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::batch::{self, Batch, Batcher};
use crate::config::Config;
use crate::dsp::client::EventResult;
use crate::dsp::{Dsp, Session};
use crate::event::{self, RawEvent, Rules, Source, Validated};
use crate::origin::{Origin, Position, Unit};
use crate::outcome::response::failed_messages;
use crate::outcome::{rejects, Ledger, Reason, ReasonSummary, Rejection, Rejects, Tally};
use crate::read::{self, Encoding, Interrupted, Limits, RecordSink};
use crate::store::{MessageQueue, ObjectStore, OpenError};
use crate::trigger::{Input, Mode, Work, WorkUnit};

/// The parts an invocation runs with; built once at cold start.
#[derive(Clone)]
pub struct Pipeline {
    /// Configuration.
    pub config: Arc<Config>,
    /// Where objects are read and rejects stored.
    pub objects: Arc<dyn ObjectStore>,
    /// The retry queue.
    pub queue: Arc<dyn MessageQueue>,
    /// Delivery.
    pub dsp: Arc<Dsp>,
}

/// What identifies one invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// Lambda's request id (names the rejects object).
    pub request_id: String,
    /// When it started (dates the rejects object, anchors the 7-day window).
    pub started: OffsetDateTime,
    /// After this instant no new attempt starts.
    pub cutoff: Instant,
}

/// What happened, for the response, the summary line and the metrics.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Event counts.
    pub totals: Tally,
    /// HTTP requests sent to the DSP (or that would be sent, in a dry run).
    pub requests: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Whether nothing was posted.
    pub dry_run: bool,
    /// SQS: the messages to redeliver, in batch order.
    pub failed_messages: Vec<String>,
    /// Why the invocation as a whole failed (SQS: every message fails; S3: it errors).
    pub failure: Option<String>,
    /// Rejections by reason.
    pub reasons: BTreeMap<String, ReasonSummary>,
    /// Where the rejects report was stored.
    pub rejects_object: Option<String>,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // A panicking holder leaves counts that are still the best we know.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pipeline {
    /// Runs one invocation. `bodies`, in a dry run, receives every request body as one line.
    pub async fn run(
        &self,
        work: Work,
        invocation: Invocation,
        bodies: Option<Box<dyn Write + Send>>,
    ) -> Report {
        let config = &self.config;
        let dry_run = config.dry_run;
        let rejects = if dry_run {
            Rejects::Discard
        } else if config.rejects_bucket.is_some() {
            Rejects::spool(&invocation.request_id).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot spool rejects; logging them instead");
                Rejects::Log
            })
        } else {
            Rejects::Log
        };
        let ledger = Arc::new(Mutex::new(Ledger::new(work.units.len(), rejects)));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Batch>(config.max_in_flight * 2);

        let reader = Reader {
            rules: Rules::new(config.events.clone(), invocation.started),
            limits: Limits {
                max_record_bytes: config.max_record_bytes,
                max_object_bytes: config.max_object_bytes,
            },
            max_events: config.max_events_per_request,
            objects: self.objects.clone(),
            ledger: ledger.clone(),
            stop: stop.clone(),
            cutoff: invocation.cutoff,
        };
        let unit_messages: Vec<Option<String>> = work
            .units
            .iter()
            .map(|u| u.unit.message_id.clone())
            .collect();
        let units = work.units;
        let producer = tokio::task::spawn_blocking(move || reader.read_all(units, &tx));

        let session = Arc::new(Session::new(self.dsp.clone(), invocation.cutoff));
        let outcome = if dry_run {
            self.count_dry_run(rx, &ledger, bodies).await
        } else {
            self.deliver_all(rx, &ledger, &session, work.mode).await
        };
        if producer.await.is_err() {
            stop.store(true, Ordering::Relaxed);
            // The reader panicked: which records it reached is unknown, so nothing is complete.
            let mut l = lock(&ledger);
            for unit in 0..l.units().len() {
                l.incomplete(unit);
            }
        }

        let mut failure = session.fatal().map(str::to_owned).or(outcome.failure);
        let rejects = lock(&ledger).take_rejects();
        let rejects_object = match self.store_rejects(rejects, &invocation).await {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(error = %e, "cannot store the rejects report");
                let mut l = lock(&ledger);
                let with_rejections: Vec<usize> = l
                    .units()
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.rejected > 0)
                    .map(|(i, _)| i)
                    .collect();
                for unit in with_rejections {
                    l.incomplete(unit);
                }
                None
            }
        };

        let l = lock(&ledger);
        let totals = l.totals();
        let failed = match work.mode {
            Mode::Sqs => {
                let mut ids: HashSet<&str> = HashSet::new();
                if failure.is_some() {
                    ids.extend(work.messages.iter().map(|m| m.id.as_str()));
                }
                for (tally, message) in l.units().iter().zip(&unit_messages) {
                    if tally.incomplete || tally.redelivered > 0 {
                        ids.extend(message.as_deref());
                    }
                }
                failed_messages(&work.messages, &ids)
            }
            Mode::Objects => {
                if failure.is_none() && totals.incomplete {
                    failure = Some("an object could not be read to the end".into());
                }
                if failure.is_none() && totals.redelivered > 0 && !outcome.leftovers_queued {
                    failure = Some(format!(
                        "{} events could not be delivered",
                        totals.redelivered
                    ));
                }
                Vec::new()
            }
        };
        Report {
            totals,
            requests: if dry_run {
                outcome.dry_requests
            } else {
                session.requests()
            },
            throttled: session.throttled(),
            dry_run,
            failed_messages: failed,
            failure,
            reasons: l.reasons().clone(),
            rejects_object,
        }
    }

    async fn count_dry_run(
        &self,
        mut rx: mpsc::Receiver<Batch>,
        ledger: &Mutex<Ledger>,
        mut bodies: Option<Box<dyn Write + Send>>,
    ) -> Delivered {
        let mut delivered = Delivered::default();
        while let Some(batch) = rx.recv().await {
            delivered.dry_requests += 1;
            if let Some(out) = bodies.as_mut() {
                let mut line = batch.body();
                line.push(b'\n');
                if let Err(e) = out.write_all(&line) {
                    tracing::error!(error = %e, "cannot write request bodies");
                    bodies = None;
                }
            }
            let mut l = lock(ledger);
            for event in &batch.events {
                l.valid_unsent(&event.origin);
            }
        }
        if let Some(mut out) = bodies {
            let _ = out.flush();
        }
        delivered
    }

    async fn deliver_all(
        &self,
        mut rx: mpsc::Receiver<Batch>,
        ledger: &Arc<Mutex<Ledger>>,
        session: &Arc<Session>,
        mode: Mode,
    ) -> Delivered {
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight));
        let retry_queue = match mode {
            Mode::Objects => self.config.retry_queue_url.clone(),
            Mode::Sqs => None,
        };
        let mut tasks = JoinSet::new();
        let mut delivered = Delivered {
            leftovers_queued: retry_queue.is_some(),
            ..Default::default()
        };
        while let Some(batch) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (session, ledger, queue, retry_queue) = (
                session.clone(),
                ledger.clone(),
                self.queue.clone(),
                retry_queue.clone(),
            );
            let max = self.config.max_events_per_request;
            tasks.spawn(async move {
                let _permit = permit;
                let results = session.deliver(batch).await;
                let mut leftovers: [Vec<Validated>; 2] = Default::default();
                {
                    let mut l = lock(&ledger);
                    for (event, result) in results {
                        match result {
                            EventResult::Accepted => l.accepted(&event.origin),
                            EventResult::Rejected(rejection) => {
                                let rejection = Rejection { event: Some(event.event.redacted()), ..rejection };
                                l.rejected(&event.origin, rejection);
                            }
                            EventResult::Transient(_) => {
                                l.redelivered(&event.origin);
                                leftovers[event.source.index()].push(event);
                            }
                        }
                    }
                }
                let Some(url) = retry_queue.filter(|_| session.fatal().is_none()) else { return true };
                let mut queued = true;
                for (source, events) in Source::ALL.into_iter().zip(&leftovers) {
                    for chunk in events.chunks(max) {
                        let body = String::from_utf8_lossy(&batch::body(source, chunk)).into_owned();
                        if let Err(e) = queue.send(&url, body).await {
                            tracing::error!(error = %e, events = chunk.len(), "cannot send leftovers to the retry queue");
                            queued = false;
                        }
                    }
                }
                queued
            });
            while let Some(done) = tasks.try_join_next() {
                delivered.absorb(done);
            }
        }
        while let Some(done) = tasks.join_next().await {
            delivered.absorb(done);
        }
        delivered
    }

    async fn store_rejects(
        &self,
        rejects: Rejects,
        invocation: &Invocation,
    ) -> Result<Option<String>, String> {
        let Some(path) = rejects.finish().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let result = match &self.config.rejects_bucket {
            Some(bucket) => {
                let key = rejects::key(
                    &self.config.rejects_prefix,
                    invocation.started,
                    &invocation.request_id,
                );
                self.objects
                    .put_file(bucket, &key, &path)
                    .await
                    .map(|()| Some(format!("s3://{bucket}/{key}")))
                    .map_err(|e| e.to_string())
            }
            None => Ok(None),
        };
        let _ = std::fs::remove_file(&path);
        result
    }
}

/// What the delivery side saw.
#[derive(Default)]
struct Delivered {
    dry_requests: u64,
    leftovers_queued: bool,
    failure: Option<String>,
}

impl Delivered {
    fn absorb(&mut self, done: Result<bool, tokio::task::JoinError>) {
        match done {
            Ok(true) => {}
            Ok(false) => self.leftovers_queued = false,
            Err(e) => self.failure = Some(format!("internal error while delivering: {e}")),
        }
    }
}

/// The blocking side: reads every unit and feeds the batches.
struct Reader {
    rules: Rules,
    limits: Limits,
    max_events: usize,
    objects: Arc<dyn ObjectStore>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    cutoff: Instant,
}

impl Reader {
    fn read_all(self, units: Vec<WorkUnit>, tx: &mpsc::Sender<Batch>) {
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
