//! Settlement: from the per-unit counts of an invocation to what the trigger is told — the SQS
//! messages to redeliver, or why an S3 import as a whole fails so that Lambda retries it.

use std::collections::HashSet;

use super::response::failed_messages;
use super::Tally;
use crate::domain::Cause;
use crate::trigger::{Message, Mode};

/// What the invocation's trigger is told.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settlement {
    /// SQS: the messages to redeliver, in batch order.
    pub failed_messages: Vec<String>,
    /// Why the invocation as a whole fails (SQS: every message fails; S3: it errors).
    pub failure: Option<Cause>,
}

/// What settlement needs to know besides the counts.
pub struct Facts<'a> {
    /// How the trigger is answered.
    pub mode: Mode,
    /// The SQS messages of the batch, in order.
    pub messages: &'a [Message],
    /// The SQS message each unit came from (`None` for direct S3 and EventBridge units).
    pub unit_messages: &'a [Option<String>],
    /// A failure of the whole invocation seen while delivering.
    pub failure: Option<Cause>,
}

/// Settles an invocation whose units ended with `units`: a unit is settled when every event of
/// it was accepted, rejected or handed to the retry queue, and it was read to the end (or its
/// rest continues in a later invocation).
pub fn settle(units: &[Tally], facts: Facts<'_>) -> Settlement {
    let mut failure = facts.failure;
    match facts.mode {
        Mode::Sqs => {
            let mut ids: HashSet<&str> = HashSet::new();
            if failure.is_some() {
                ids.extend(facts.messages.iter().map(|m| m.id.as_str()));
            }
            for (tally, message) in units.iter().zip(facts.unit_messages) {
                if tally.incomplete || tally.redelivered > tally.queued {
                    ids.extend(message.as_deref());
                }
            }
            Settlement {
                failed_messages: failed_messages(facts.messages, &ids),
                failure,
            }
        }
        Mode::Objects => {
            let incomplete = units.iter().any(|t| t.incomplete);
            let redelivered: u64 = units.iter().map(|t| t.redelivered - t.queued).sum();
            if failure.is_none() && incomplete {
                failure = Some(Cause::Store(
                    "an object could not be read to the end".into(),
                ));
            }
            if failure.is_none() && redelivered > 0 {
                failure = Some(Cause::Store(format!(
                    "{redelivered} events could not be delivered"
                )));
            }
            Settlement {
                failed_messages: Vec::new(),
                failure,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
        Message {
            id: id.into(),
            group: None,
        }
    }

    fn tally(redelivered: u64, incomplete: bool) -> Tally {
        Tally {
            received: 1,
            redelivered,
            incomplete,
            ..Tally::default()
        }
    }

    fn queued(redelivered: u64, queued: u64) -> Tally {
        Tally {
            queued,
            ..tally(redelivered, false)
        }
    }

    #[test]
    fn sqs_redelivers_exactly_the_messages_with_unfinished_events() {
        let messages = [message("a"), message("b"), message("c")];
        let units = [tally(0, false), tally(1, false), tally(0, true)];
        let unit_messages = [Some("a".into()), Some("b".into()), Some("c".into())];
        let s = settle(
            &units,
            Facts {
                mode: Mode::Sqs,
                messages: &messages,
                unit_messages: &unit_messages,
                failure: None,
            },
        );
        assert_eq!(s.failed_messages, ["b", "c"]);
        assert_eq!(s.failure, None);
    }

    #[test]
    fn a_whole_invocation_failure_redelivers_every_message() {
        let messages = [message("a"), message("b")];
        let s = settle(
            &[tally(0, false), tally(0, false)],
            Facts {
                mode: Mode::Sqs,
                messages: &messages,
                unit_messages: &[Some("a".into()), Some("b".into())],
                failure: Some(Cause::Unauthorized),
            },
        );
        assert_eq!(s.failed_messages, ["a", "b"]);
    }

    #[test]
    fn objects_fail_unless_every_leftover_was_queued() {
        let facts = || Facts {
            mode: Mode::Objects,
            messages: &[],
            unit_messages: &[None],
            failure: None,
        };
        assert_eq!(settle(&[queued(3, 3)], facts()).failure, None);
        let s = settle(&[queued(3, 1)], facts());
        assert_eq!(
            s.failure.unwrap().to_string(),
            "2 events could not be delivered"
        );
        let s = settle(&[tally(0, true)], facts());
        assert_eq!(
            s.failure.unwrap().to_string(),
            "an object could not be read to the end"
        );
    }

    #[test]
    fn an_sqs_message_whose_leftovers_were_queued_is_done() {
        let messages = [message("a"), message("b")];
        let s = settle(
            &[queued(2, 2), queued(2, 1)],
            Facts {
                mode: Mode::Sqs,
                messages: &messages,
                unit_messages: &[Some("a".into()), Some("b".into())],
                failure: None,
            },
        );
        assert_eq!(s.failed_messages, ["b"]);
    }
}
