//! One invocation, end to end: the reading side (`reading`, a blocking thread) turns units into
//! validated, batched events; the delivering side (`delivering`) posts the batches and books
//! every event's disposition; then rejects are stored and the invocation is settled.

mod delivering;
mod reading;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::batch::Request;
use crate::config::Config;
use crate::domain::Cause;
use crate::dsp::definitions::Listed;
use crate::dsp::{Dsp, Session};
use crate::event::{Definitions, Rules};
use crate::outcome::settle::{settle, Facts};
use crate::outcome::{rejects, Ledger, ReasonSummary, Rejects, Tally};
use crate::read::Limits;
use crate::store::{MessageQueue, ObjectStore};
use crate::trigger::{Input, Work};
use reading::Reader;

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
    /// Conversion definitions given up front (a saved list), instead of listing them.
    pub definitions: Option<Arc<Definitions>>,
    /// A local file that takes the rejects report instead of S3 (the checker's `--rejects`).
    pub rejects_file: Option<PathBuf>,
}

impl Pipeline {
    /// A pipeline over these parts.
    pub fn new(
        config: Arc<Config>,
        objects: Arc<dyn ObjectStore>,
        queue: Arc<dyn MessageQueue>,
        dsp: Arc<Dsp>,
    ) -> Self {
        Self {
            config,
            objects,
            queue,
            dsp,
            definitions: None,
            rejects_file: None,
        }
    }
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
    /// Deletion request counts.
    pub deletions: Tally,
    /// HTTP requests sent to the DSP (or that would be sent, in a dry run).
    pub requests: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Whether nothing was posted.
    pub dry_run: bool,
    /// SQS: the messages to redeliver, in batch order.
    pub failed_messages: Vec<String>,
    /// Why the invocation as a whole failed (SQS: every message fails; S3: it errors).
    pub failure: Option<Cause>,
    /// Rejections by reason.
    pub reasons: BTreeMap<String, ReasonSummary>,
    /// Where the rejects report was stored.
    pub rejects_object: Option<String>,
    /// The record a continuation resumes at (the first, when several objects continue).
    pub resume_at: Option<u64>,
    /// Continuations sent to the retry queue.
    pub continuations: u64,
    /// Continuations dropped because their chain was too long.
    pub continuations_dropped: u64,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // A panicking holder leaves counts that are still the best we know.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks the units of objects under `prefix` as holding deletion requests.
fn mark_deletions(work: &mut Work, prefix: &str) {
    for u in &mut work.units {
        let key = match &u.input {
            Input::Object { key, .. } => key,
            Input::Continuation(c) => &c.key,
            _ => continue,
        };
        if !prefix.is_empty() && key.starts_with(prefix) && !u.unit.deletions {
            u.unit = Arc::new((*u.unit).clone().of_deletions());
        }
    }
}

impl Pipeline {
    /// Runs one invocation. `bodies`, in a dry run, receives every request body as one line.
    pub async fn run(
        &self,
        mut work: Work,
        invocation: Invocation,
        bodies: Option<Box<dyn Write + Send>>,
    ) -> Report {
        let config = &self.config;
        let dry_run = config.dry_run;
        mark_deletions(&mut work, &config.deletions_prefix);
        let unit_deletions: Vec<bool> = work.units.iter().map(|u| u.unit.deletions).collect();
        let is_deletions = |i: usize| unit_deletions.get(i).copied().unwrap_or(false);
        let rejects = if let Some(path) = &self.rejects_file {
            Rejects::file(path).unwrap_or_else(|e| {
                tracing::error!(error = %e, path = %path.display(), "cannot write the rejects file; logging them instead");
                Rejects::Log
            })
        } else if dry_run {
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
        let (tx, rx) = mpsc::channel::<Request>(config.max_in_flight * 2);
        let session = Arc::new(Session::new(self.dsp.clone(), invocation.cutoff));

        let mut rules = Rules::new(config.events.clone(), invocation.started);
        let mut waiting: Option<Cause> = None;
        match self.definitions(&work, &session).await {
            Ok(Some(listed)) => rules = rules.with_definitions(listed),
            Ok(None) => {}
            // Every event waits on the list: none can be resolved now.
            Err(cause) => waiting = Some(cause),
        }
        let reader = Reader {
            rules,
            limits: Limits {
                max_record_bytes: config.max_record_bytes,
                max_object_bytes: config.max_object_bytes,
            },
            max_events: config.max_events_per_request,
            objects: self.objects.clone(),
            ledger: ledger.clone(),
            stop: stop.clone(),
            cutoff: invocation.cutoff,
            continues: config.retry_queue_url.is_some() && !dry_run,
        };
        let unit_messages: Vec<Option<String>> = work
            .units
            .iter()
            .map(|u| u.unit.message_id.clone())
            .collect();
        let units = if let Some(cause) = &waiting {
            tracing::warn!(cause = %cause, "cannot list the conversion definitions; every event is redelivered");
            // Nothing is read: every unit is redelivered as a whole.
            let mut l = lock(&ledger);
            for unit in &work.units {
                l.incomplete(unit.unit.index);
            }
            Vec::new()
        } else {
            std::mem::take(&mut work.units)
        };
        let producer = tokio::task::spawn_blocking(move || reader.read_all(units, &tx));

        let outcome = if dry_run {
            self.count_dry_run(rx, &ledger, bodies).await
        } else {
            self.deliver_all(rx, &ledger, &session).await
        };
        let read = match producer.await {
            Ok(read) => read,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                // The reader panicked: which records it reached is unknown, so nothing is
                // complete.
                let mut l = lock(&ledger);
                for unit in 0..l.units().len() {
                    l.incomplete(unit);
                }
                reading::Read::default()
            }
        };
        let fatal = session.fatal().cloned().or(outcome.failure).or(waiting);
        let (resume_at, continuations) =
            self.continue_objects(&read, fatal.is_some(), &ledger).await;

        let rejects = lock(&ledger).take_rejects();
        let rejects_object = match self.store_rejects(rejects, &invocation).await {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(error = %e, "cannot store the rejects report");
                // Their rejections are not kept: those units must be read again.
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
        let settlement = settle(
            l.units(),
            Facts {
                mode: work.mode,
                messages: &work.messages,
                unit_messages: &unit_messages,
                failure: fatal,
            },
        );
        Report {
            totals: l.totals_where(|i| !is_deletions(i)),
            deletions: l.totals_where(is_deletions),
            requests: if dry_run {
                outcome.dry_requests
            } else {
                session.requests()
            },
            throttled: session.throttled(),
            dry_run,
            failed_messages: settlement.failed_messages,
            failure: settlement.failure,
            reasons: l.reasons().clone(),
            rejects_object,
            resume_at,
            continuations,
            continuations_dropped: read.dropped,
        }
    }

    /// The definitions events resolve against: given up front, listed from the DSP (cached),
    /// or none (no lookup, the listing refused, or nothing to resolve).
    async fn definitions(
        &self,
        work: &Work,
        session: &Session,
    ) -> Result<Option<Arc<Definitions>>, Cause> {
        if let Some(preset) = &self.definitions {
            return Ok(Some(preset.clone()));
        }
        let needed = work.units.iter().any(|u| {
            !u.unit.deletions
                && matches!(
                    u.input,
                    Input::Body(_) | Input::Object { .. } | Input::Continuation(_)
                )
        });
        // A dry run sends nothing to the DSP, not even the listing.
        if !self.config.dsp.lookup_definitions || self.config.dry_run || !needed {
            return Ok(None);
        }
        match session.definitions().await? {
            Listed::Definitions(listed) => Ok(Some(listed)),
            Listed::Refused => Ok(None),
        }
    }

    /// Sends the continuations of the objects that could not be read to the end; returns the
    /// record the first one resumes at and how many were sent. When the invocation fails as a
    /// whole, none is sent: the trigger's own retry reads those units again.
    async fn continue_objects(
        &self,
        read: &reading::Read,
        failed: bool,
        ledger: &Mutex<Ledger>,
    ) -> (Option<u64>, u64) {
        let Some(url) = self.config.retry_queue_url.as_deref() else {
            return (None, 0);
        };
        let mut resume_at = None;
        let mut sent_count = 0;
        for (unit, continuation) in &read.continuations {
            let sent = if failed {
                false
            } else {
                match self.queue.send(url, continuation.to_message()).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, bucket = %continuation.bucket, key = %continuation.key, "cannot send the continuation");
                        false
                    }
                }
            };
            if sent {
                tracing::info!(
                    bucket = %continuation.bucket, key = %continuation.key,
                    record = continuation.resume.record, hop = continuation.hop,
                    "the rest of the object continues in a later invocation"
                );
                resume_at = resume_at.or(Some(continuation.resume.record));
                sent_count += 1;
            } else {
                lock(ledger).incomplete(*unit);
            }
        }
        (resume_at, sent_count)
    }

    async fn store_rejects(
        &self,
        rejects: Rejects,
        invocation: &Invocation,
    ) -> Result<Option<String>, Cause> {
        let rejects = match (&self.rejects_file, rejects) {
            (Some(file), Rejects::Spool { mut writer, .. }) => {
                writer
                    .flush()
                    .map_err(|e| Cause::Store(format!("cannot write the rejects file: {e}")))?;
                return Ok(Some(file.display().to_string()));
            }
            (_, rejects) => rejects,
        };
        let Some(path) = rejects
            .finish()
            .map_err(|e| Cause::Store(format!("cannot write the rejects report: {e}")))?
        else {
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
                    .map_err(|e| Cause::Store(e.to_string()))
            }
            None => Ok(None),
        };
        let _ = std::fs::remove_file(&path);
        result
    }
}
