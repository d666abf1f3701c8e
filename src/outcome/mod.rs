//! Outcomes: every event ends accepted, rejected with a reason, or handed back for redelivery.
//! The ledger counts them per unit of work; the rejects report and the SQS response are built
//! from it.

pub mod rejects;
pub mod response;
pub mod settle;

use std::collections::BTreeMap;

pub use rejects::Rejects;

use crate::domain::{Origin, Rejection};

/// How many first positions of each rejection reason are kept for the summary.
const EXAMPLES: usize = 5;

/// The counts of one unit of work (an SQS message or an object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records read.
    pub received: u64,
    /// Accepted by the DSP.
    pub accepted: u64,
    /// Rejected, with a reason.
    pub rejected: u64,
    /// To be delivered again.
    pub redelivered: u64,
    /// Of those, handed to the retry queue (the unit itself need not be redelivered for them).
    pub queued: u64,
    /// Valid, not sent (dry run).
    pub valid_unsent: u64,
    /// Reading stopped before the end, or its rejections could not be stored: the unit as a
    /// whole must be redelivered.
    pub incomplete: bool,
}

/// Rejections of one reason: how many, and where the first few are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasonSummary {
    /// How many.
    pub count: u64,
    /// The first few origins, as text.
    pub examples: Vec<String>,
    /// The first message.
    pub message: String,
}

/// The outcome of every event of one invocation.
pub struct Ledger {
    units: Vec<Tally>,
    rejects: Rejects,
    reasons: BTreeMap<String, ReasonSummary>,
}

impl Ledger {
    /// A ledger for `units` units whose rejections go to `rejects`.
    pub fn new(units: usize, rejects: Rejects) -> Self {
        Self {
            units: vec![Tally::default(); units],
            rejects,
            reasons: BTreeMap::new(),
        }
    }

    fn tally(&mut self, unit: usize) -> &mut Tally {
        if unit >= self.units.len() {
            self.units.resize(unit + 1, Tally::default());
        }
        &mut self.units[unit]
    }

    /// A record was read.
    pub fn received(&mut self, origin: &Origin) {
        self.tally(origin.unit.index).received += 1;
    }

    /// `n` records of unit `unit` were read.
    pub fn received_many(&mut self, unit: usize, n: u64) {
        self.tally(unit).received += n;
    }

    /// The DSP accepted it.
    pub fn accepted(&mut self, origin: &Origin) {
        self.tally(origin.unit.index).accepted += 1;
    }

    /// It is rejected for good.
    pub fn rejected(&mut self, origin: &Origin, rejection: Rejection) {
        self.tally(origin.unit.index).rejected += 1;
        let summary = self.reasons.entry(rejection.reason.code()).or_default();
        summary.count += 1;
        if summary.count == 1 {
            summary.message.clone_from(&rejection.message);
        }
        if summary.examples.len() < EXAMPLES {
            summary.examples.push(origin.to_string());
        }
        if self.rejects.write(origin, &rejection).is_err() {
            self.tally(origin.unit.index).incomplete = true;
        }
    }

    /// It must be delivered again.
    pub fn redelivered(&mut self, origin: &Origin) {
        self.tally(origin.unit.index).redelivered += 1;
    }

    /// It was handed to the retry queue (after [`Ledger::redelivered`]).
    pub fn queued(&mut self, origin: &Origin) {
        self.tally(origin.unit.index).queued += 1;
    }

    /// It is valid and was not sent (dry run).
    pub fn valid_unsent(&mut self, origin: &Origin) {
        self.tally(origin.unit.index).valid_unsent += 1;
    }

    /// The unit as a whole must be redelivered.
    pub fn incomplete(&mut self, unit: usize) {
        self.tally(unit).incomplete = true;
    }

    /// Per-unit counts.
    pub fn units(&self) -> &[Tally] {
        &self.units
    }

    /// Sums over all units.
    pub fn totals(&self) -> Tally {
        self.totals_where(|_| true)
    }

    /// Sums over the units whose index `pick` accepts.
    pub fn totals_where(&self, pick: impl Fn(usize) -> bool) -> Tally {
        let picked = self.units.iter().enumerate().filter(|(i, _)| pick(*i));
        picked.map(|(_, u)| u).fold(Tally::default(), |mut t, u| {
            t.received += u.received;
            t.accepted += u.accepted;
            t.rejected += u.rejected;
            t.redelivered += u.redelivered;
            t.queued += u.queued;
            t.valid_unsent += u.valid_unsent;
            t.incomplete |= u.incomplete;
            t
        })
    }

    /// Rejections by reason code.
    pub fn reasons(&self) -> &BTreeMap<String, ReasonSummary> {
        &self.reasons
    }

    /// Hands over the rejects for storing.
    pub fn take_rejects(&mut self) -> Rejects {
        std::mem::replace(&mut self.rejects, Rejects::Discard)
    }
}
