//! The delivering side of an invocation: batches from the reader are posted (at most
//! `DSP_MAX_IN_FLIGHT` at once), every event's disposition is booked, and what an S3 import
//! could not deliver goes to the retry queue. In a dry run batches are only counted.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::{lock, Pipeline};
use crate::batch::{self, Request};
use crate::domain::{Cause, Disposition, Origin, Rejection};
use crate::dsp::Session;
use crate::event::{Deletion, Source, Validated};
use crate::outcome::Ledger;

/// What the delivery side saw.
#[derive(Default)]
pub(super) struct Delivered {
    /// Requests a dry run would have sent.
    pub dry_requests: u64,
    /// A failure of the delivering side itself.
    pub failure: Option<Cause>,
}

impl Delivered {
    fn absorb(&mut self, done: Result<(), tokio::task::JoinError>) {
        if let Err(e) = done {
            self.failure = Some(Cause::Internal(format!("while delivering: {e}")));
        }
    }
}

impl Pipeline {
    /// Counts the batches of a dry run, writing their bodies to `bodies`.
    pub(super) async fn count_dry_run(
        &self,
        mut rx: mpsc::Receiver<Request>,
        ledger: &Mutex<Ledger>,
        mut bodies: Option<Box<dyn Write + Send>>,
    ) -> Delivered {
        let mut delivered = Delivered::default();
        while let Some(request) = rx.recv().await {
            delivered.dry_requests += 1;
            if let Some(out) = bodies.as_mut() {
                let mut line = match &request {
                    Request::Events(batch) => batch.body(),
                    Request::Deletions(batch) => batch.body(),
                };
                line.push(b'\n');
                if let Err(e) = out.write_all(&line) {
                    tracing::error!(error = %e, "cannot write request bodies");
                    bodies = None;
                }
            }
            let mut l = lock(ledger);
            match &request {
                Request::Events(batch) => {
                    batch.events.iter().for_each(|e| l.valid_unsent(&e.origin))
                }
                Request::Deletions(batch) => {
                    batch
                        .requests
                        .iter()
                        .for_each(|d| l.valid_unsent(&d.origin));
                }
            }
        }
        if let Some(mut out) = bodies {
            let _ = out.flush();
        }
        delivered
    }

    /// Delivers every batch the reader sends. What could not be delivered of an object goes to
    /// the retry queue (when there is one and the invocation does not fail as a whole); what
    /// came in an SQS message's own body is redelivered with the message.
    pub(super) async fn deliver_all(
        &self,
        mut rx: mpsc::Receiver<Request>,
        ledger: &Arc<Mutex<Ledger>>,
        session: &Arc<Session>,
    ) -> Delivered {
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight));
        let retry_queue = self.config.retry_queue_url.clone();
        let mut tasks = JoinSet::new();
        let mut delivered = Delivered::default();
        while let Some(request) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let pipeline = self.clone();
            let (session, ledger, retry_queue) =
                (session.clone(), ledger.clone(), retry_queue.clone());
            tasks.spawn(async move {
                let _permit = permit;
                match request {
                    Request::Events(batch) => {
                        let results = session.deliver(batch).await;
                        let leftovers = book(&ledger, results);
                        if let Some(url) = retry_queue.filter(|_| session.fatal().is_none()) {
                            pipeline.queue_leftovers(&url, leftovers, &ledger).await;
                        }
                    }
                    Request::Deletions(batch) => {
                        let results = session.delete(batch).await;
                        let leftovers = book_deletions(&ledger, results);
                        if let Some(url) = retry_queue.filter(|_| session.fatal().is_none()) {
                            pipeline.queue_deletions(&url, leftovers, &ledger).await;
                        }
                    }
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

    /// Sends the leftovers of objects to the retry queue as DSP requests, booking each event
    /// that went; an event that could not go stays to be redelivered with its unit.
    async fn queue_leftovers(
        &self,
        url: &str,
        leftovers: [Vec<Validated>; 2],
        ledger: &Mutex<Ledger>,
    ) {
        for (source, events) in Source::ALL.into_iter().zip(&leftovers) {
            for chunk in events.chunks(self.config.max_events_per_request) {
                let body = String::from_utf8_lossy(&batch::body(source, chunk)).into_owned();
                match self.queue.send(url, body).await {
                    Ok(()) => {
                        let mut l = lock(ledger);
                        for event in chunk {
                            l.queued(&event.origin);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = chunk.len(), "cannot send leftovers to the retry queue");
                    }
                }
            }
        }
    }
}

impl Pipeline {
    /// Sends the deletion requests of objects that could not be delivered to the retry queue as
    /// `{"deletionRequests"}` messages (keys already hashed), booking each that went.
    async fn queue_deletions(&self, url: &str, leftovers: Vec<Deletion>, ledger: &Mutex<Ledger>) {
        for chunk in leftovers.chunks(self.config.max_events_per_request) {
            let body = String::from_utf8_lossy(&batch::deletion_body(chunk)).into_owned();
            match self.queue.send(url, body).await {
                Ok(()) => {
                    let mut l = lock(ledger);
                    for deletion in chunk {
                        l.queued(&deletion.origin);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, deletions = chunk.len(), "cannot send leftover deletion requests to the retry queue");
                }
            }
        }
    }
}

/// Books one entry's disposition; whether it is to be redelivered.
fn book_one(
    l: &mut Ledger,
    origin: &Origin,
    disposition: Disposition,
    redacted: impl FnOnce() -> serde_json::Value,
) -> bool {
    match disposition {
        Disposition::Accepted => l.accepted(origin),
        Disposition::Rejected(rejection) => {
            let rejection = Rejection {
                event: Some(redacted()),
                ..rejection
            };
            l.rejected(origin, rejection);
        }
        Disposition::Redeliver(_) | Disposition::Fail(_) => {
            l.redelivered(origin);
            return true;
        }
    }
    false
}

/// Books every deletion request's disposition; returns those of objects to redeliver.
fn book_deletions(ledger: &Mutex<Ledger>, results: Vec<(Deletion, Disposition)>) -> Vec<Deletion> {
    let mut leftovers = Vec::new();
    let mut l = lock(ledger);
    for (deletion, disposition) in results {
        let again = book_one(&mut l, &deletion.origin, disposition, || {
            deletion.redacted()
        });
        if again && deletion.origin.unit.bucket.is_some() {
            leftovers.push(deletion);
        }
    }
    leftovers
}

/// Books every event's disposition; returns the events of objects to redeliver, by source
/// (those of message bodies are redelivered with their message).
fn book(ledger: &Mutex<Ledger>, results: Vec<(Validated, Disposition)>) -> [Vec<Validated>; 2] {
    let mut leftovers: [Vec<Validated>; 2] = Default::default();
    let mut l = lock(ledger);
    for (event, disposition) in results {
        let again = book_one(&mut l, &event.origin, disposition, || {
            event.event.redacted()
        });
        if again && event.origin.unit.bucket.is_some() {
            leftovers[event.source.index()].push(event);
        }
    }
    leftovers
}
