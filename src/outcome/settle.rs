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
    /// Whether every leftover of an S3 import went to the retry queue.
    pub leftovers_queued: bool,
}

/// Settles an invocation whose units ended with `units`.
pub fn settle(units: &[Tally], facts: Facts<'_>) -> Settlement {
    let mut failure = facts.failure;
    match facts.mode {
        Mode::Sqs => {
            let mut ids: HashSet<&str> = HashSet::new();
            if failure.is_some() {
                ids.extend(facts.messages.iter().map(|m| m.id.as_str()));
            }
            for (tally, message) in units.iter().zip(facts.unit_messages) {
                if tally.incomplete || tally.redelivered > 0 {
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
            let redelivered: u64 = units.iter().map(|t| t.redelivered).sum();
            if failure.is_none() && incomplete {
                failure = Some(Cause::Store(
                    "an object could not be read to the end".into(),
                ));
            }
            if failure.is_none() && redelivered > 0 && !facts.leftovers_queued {
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
                leftovers_queued: false,
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
                leftovers_queued: false,
            },
        );
        assert_eq!(s.failed_messages, ["a", "b"]);
    }

    #[test]
    fn objects_fail_unless_every_leftover_was_queued() {
        let facts = |queued| Facts {
            mode: Mode::Objects,
            messages: &[],
            unit_messages: &[None],
            failure: None,
            leftovers_queued: queued,
        };
        assert_eq!(settle(&[tally(3, false)], facts(true)).failure, None);
        let s = settle(&[tally(3, false)], facts(false));
        assert_eq!(
            s.failure.unwrap().to_string(),
            "3 events could not be delivered"
        );
        let s = settle(&[tally(0, true)], facts(true));
        assert_eq!(
            s.failure.unwrap().to_string(),
            "an object could not be read to the end"
        );
    }
}
