//! The delivering side of an invocation: batches from the reader are posted (at most
//! `DSP_MAX_IN_FLIGHT` at once), every event's disposition is booked, and what an S3 import
//! could not deliver goes to the retry queue. In a dry run batches are only counted.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::{lock, Pipeline};
use crate::batch::{self, Batch};
use crate::domain::{Cause, Disposition, Rejection};
use crate::dsp::Session;
use crate::event::{Source, Validated};
use crate::outcome::Ledger;
use crate::trigger::Mode;

/// What the delivery side saw.
#[derive(Default)]
pub(super) struct Delivered {
    /// Requests a dry run would have sent.
    pub dry_requests: u64,
    /// Whether every leftover went to the retry queue.
    pub leftovers_queued: bool,
    /// A failure of the delivering side itself.
    pub failure: Option<Cause>,
}

impl Delivered {
    fn absorb(&mut self, done: Result<bool, tokio::task::JoinError>) {
        match done {
            Ok(true) => {}
            Ok(false) => self.leftovers_queued = false,
            Err(e) => self.failure = Some(Cause::Internal(format!("while delivering: {e}"))),
        }
    }
}

impl Pipeline {
    /// Counts the batches of a dry run, writing their bodies to `bodies`.
    pub(super) async fn count_dry_run(
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

    /// Delivers every batch the reader sends.
    pub(super) async fn deliver_all(
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
            let pipeline = self.clone();
            let (session, ledger, retry_queue) =
                (session.clone(), ledger.clone(), retry_queue.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let results = session.deliver(batch).await;
                let leftovers = book(&ledger, results);
                match retry_queue.filter(|_| session.fatal().is_none()) {
                    Some(url) => pipeline.queue_leftovers(&url, leftovers).await,
                    None => true,
                }
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

    /// Sends leftovers to the retry queue as DSP requests; `false` if any could not be sent.
    async fn queue_leftovers(&self, url: &str, leftovers: [Vec<Validated>; 2]) -> bool {
        let mut queued = true;
        for (source, events) in Source::ALL.into_iter().zip(&leftovers) {
            for chunk in events.chunks(self.config.max_events_per_request) {
                let body = String::from_utf8_lossy(&batch::body(source, chunk)).into_owned();
                if let Err(e) = self.queue.send(url, body).await {
                    tracing::error!(error = %e, events = chunk.len(), "cannot send leftovers to the retry queue");
                    queued = false;
                }
            }
        }
        queued
    }
}

/// Books every event's disposition; returns the events to redeliver, by source.
fn book(ledger: &Mutex<Ledger>, results: Vec<(Validated, Disposition)>) -> [Vec<Validated>; 2] {
    let mut leftovers: [Vec<Validated>; 2] = Default::default();
    let mut l = lock(ledger);
    for (event, disposition) in results {
        match disposition {
            Disposition::Accepted => l.accepted(&event.origin),
            Disposition::Rejected(rejection) => {
                let rejection = Rejection {
                    event: Some(event.event.redacted()),
                    ..rejection
                };
                l.rejected(&event.origin, rejection);
            }
            Disposition::Redeliver(_) | Disposition::Fail(_) => {
                l.redelivered(&event.origin);
                leftovers[event.source.index()].push(event);
            }
        }
    }
    leftovers
}
