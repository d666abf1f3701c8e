//! The answer to SQS: exactly the messages to redeliver, with the FIFO rule that once a message
//! of a group fails, every later message of that group fails too.

use std::collections::HashSet;

use aws_lambda_events::event::sqs::SqsBatchResponse;

use crate::trigger::Message;

/// The messages to report, in batch order: those `failed`, and in FIFO groups every message
/// after a failed one.
pub fn failed_messages(messages: &[Message], failed: &HashSet<&str>) -> Vec<String> {
    let mut broken_groups: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    for m in messages {
        let group_broken = m
            .group
            .as_deref()
            .is_some_and(|g| broken_groups.contains(g));
        if failed.contains(m.id.as_str()) || group_broken {
            if let Some(g) = m.group.as_deref() {
                broken_groups.insert(g);
            }
            out.push(m.id.clone());
        }
    }
    out
}

/// The answer to SQS for these message ids: `{"batchItemFailures": [{"itemIdentifier": id}]}`.
pub fn sqs_response(failed: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, group: Option<&str>) -> Message {
        Message {
            id: id.into(),
            group: group.map(str::to_owned),
        }
    }

    #[test]
    fn fifo_groups_fail_from_the_first_failure_on() {
        let messages = [
            m("1", Some("a")),
            m("2", Some("b")),
            m("3", Some("a")),
            m("4", Some("b")),
            m("5", Some("a")),
        ];
        let failed = HashSet::from(["3"]);
        assert_eq!(failed_messages(&messages, &failed), ["3", "5"]);
    }

    #[test]
    fn standard_queues_report_exactly_the_failed() {
        let messages = [m("1", None), m("2", None), m("3", None)];
        assert_eq!(failed_messages(&messages, &HashSet::from(["2"])), ["2"]);
        let body = serde_json::to_string(&sqs_response(vec!["2".into()])).unwrap();
        assert_eq!(body, r#"{"batchItemFailures":[{"itemIdentifier":"2"}]}"#);
    }
}
