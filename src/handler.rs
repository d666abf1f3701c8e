//! The Lambda entry point: payload → work → pipeline → response, plus the one summary log line
//! and its CloudWatch Embedded Metric Format twin.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::aws::Aws;
use crate::config::Config;
use crate::domain::Cause;
use crate::dsp::Dsp;
use crate::outcome::response::sqs_response;
use crate::pipeline::{Invocation, Pipeline, Report};
use crate::store::{MessageQueue, ObjectStore, SecretStore};
use crate::trigger::{self, Mode, UnsupportedPayload};

/// Time kept back from the deadline to store rejects, queue leftovers and answer.
const RESERVE: Duration = Duration::from_secs(5);

/// Why an invocation fails as a whole: what Lambda's console shows as `errorType` and
/// `errorMessage`, and what decides Lambda's own retry of an S3 or EventBridge invocation.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The payload is none of the supported triggers: retrying cannot help.
    #[error(transparent)]
    UnsupportedPayload(#[from] UnsupportedPayload),
    /// An S3 or EventBridge import could not be finished; Lambda's retry imports it again
    /// (derived dedupe ids make that safe).
    #[error("import failed and will be retried: {0}")]
    ImportFailed(Cause),
    /// The response could not be written.
    #[error("cannot write the response: {0}")]
    Response(#[from] serde_json::Error),
}

impl HandlerError {
    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            HandlerError::UnsupportedPayload(_) => "NonRetryable.UnsupportedPayload",
            HandlerError::ImportFailed(_) => "Retryable.ImportFailed",
            HandlerError::Response(_) => "Retryable.Response",
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        Self {
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// The function.
pub struct Handler {
    pipeline: Pipeline,
}

impl Handler {
    /// The function over AWS.
    pub fn new(config: Config, aws: Arc<Aws>) -> Self {
        Self::with_stores(config, aws.clone(), aws.clone(), aws)
    }

    /// The function over any stores.
    pub fn with_stores(
        config: Config,
        objects: Arc<dyn ObjectStore>,
        queue: Arc<dyn MessageQueue>,
        secrets: Arc<dyn SecretStore>,
    ) -> Self {
        let dsp = Arc::new(Dsp::new(&config.dsp, secrets));
        Self {
            pipeline: Pipeline::new(Arc::new(config), objects, queue, dsp),
        }
    }

    /// Handles one invocation.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
        let request_id = event.context.request_id.clone();
        let invocation = Invocation {
            request_id: request_id.clone(),
            started: OffsetDateTime::now_utc(),
            cutoff: cutoff(event.context.deadline),
        };
        let work = trigger::parse(event.payload).map_err(|e| {
            tracing::error!(error = %e, "invocation failed");
            e
        })?;
        let mode = work.mode;
        let report = self.pipeline.run(work, invocation, None).await;
        log_summary(&report, &request_id);
        match mode {
            Mode::Sqs => Ok(serde_json::to_value(sqs_response(report.failed_messages))?),
            Mode::Objects => match report.failure {
                Some(cause) => Err(HandlerError::ImportFailed(cause)),
                None => Ok(counts(&report)),
            },
        }
    }
}

/// The instant after which no new attempt starts: the deadline less a reserve of a quarter of
/// the time, at most [`RESERVE`].
fn cutoff(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // Lambda sends epoch milliseconds; `cargo lambda watch` sends the timeout itself (600000).
    // A value that cannot be a date after 2001 is taken as that duration.
    let left = if deadline_ms < 1_000_000_000_000 {
        Duration::from_millis(deadline_ms)
    } else {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    };
    tracing::debug!(
        deadline_ms,
        time_left_ms = left.as_millis() as u64,
        "invocation"
    );
    Instant::now() + left - (left / 4).min(RESERVE)
}

/// The response to S3 and EventBridge triggers: counts of events and deletion requests.
pub fn counts(report: &Report) -> Value {
    let (t, d) = (&report.totals, &report.deletions);
    json!({
        "received": t.received + d.received,
        "accepted": t.accepted + d.accepted,
        "rejected": t.rejected + d.rejected,
        "redelivered": t.redelivered + d.redelivered,
        "requests": report.requests,
        "dryRun": report.dry_run,
        "resumeAt": report.resume_at,
    })
}

/// Logs the summary line and prints the same figures as EMF.
pub fn log_summary(report: &Report, request_id: &str) {
    let (t, d) = (&report.totals, &report.deletions);
    let reasons: Vec<String> = report
        .reasons
        .iter()
        .map(|(code, s)| format!("{code}={}", s.count))
        .collect();
    if let Some(cause) = &report.failure {
        tracing::error!(cause = %cause, "invocation failed as a whole: every SQS message is redelivered, an S3 import is retried");
    }
    tracing::info!(
        received = t.received,
        accepted = t.accepted,
        rejected = t.rejected,
        redelivered = t.redelivered,
        valid_unsent = t.valid_unsent,
        deletions_received = d.received,
        deletions_accepted = d.accepted,
        deletions_rejected = d.rejected,
        deletions_redelivered = d.redelivered,
        deletions_valid_unsent = d.valid_unsent,
        requests = report.requests,
        throttled = report.throttled,
        dry_run = report.dry_run,
        failed_messages = report.failed_messages.len(),
        rejected_by_reason = %reasons.join(","),
        rejects_object = report.rejects_object.as_deref().unwrap_or(""),
        continuations = report.continuations,
        continuations_dropped = report.continuations_dropped,
        "summary"
    );
    println!("{}", emf(report, request_id));
}

/// The CloudWatch Embedded Metric Format record of a report.
pub fn emf(report: &Report, request_id: &str) -> Value {
    let (t, d) = (&report.totals, &report.deletions);
    let function =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "dsp-conversions".into());
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let names = [
        "Received",
        "Accepted",
        "Rejected",
        "Redelivered",
        "Requests",
        "Throttled",
        "Continuations",
        "ContinuationsDropped",
        "DeletionsReceived",
        "DeletionsAccepted",
        "DeletionsRejected",
        "DeletionsRedelivered",
    ];
    json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": "DspConversions",
                "Dimensions": [["FunctionName"]],
                "Metrics": names.iter().map(|n| json!({"Name": n, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        },
        "FunctionName": function,
        "RequestId": request_id,
        "DryRun": report.dry_run,
        "Received": t.received,
        "Accepted": t.accepted,
        "Rejected": t.rejected,
        "Redelivered": t.redelivered,
        "Requests": report.requests,
        "Throttled": report.throttled,
        "Continuations": report.continuations,
        "ContinuationsDropped": report.continuations_dropped,
        "DeletionsReceived": d.received,
        "DeletionsAccepted": d.accepted,
        "DeletionsRejected": d.rejected,
        "DeletionsRedelivered": d.redelivered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Tally;

    #[test]
    fn deletions_are_reported_apart_and_counted_in_the_response() {
        let report = Report {
            totals: Tally {
                received: 3,
                accepted: 2,
                rejected: 1,
                ..Tally::default()
            },
            deletions: Tally {
                received: 5,
                accepted: 1,
                rejected: 1,
                redelivered: 3,
                ..Tally::default()
            },
            ..Report::default()
        };
        let response = counts(&report);
        assert_eq!(
            (
                &response["received"],
                &response["accepted"],
                &response["rejected"],
                &response["redelivered"]
            ),
            (&json!(8), &json!(3), &json!(2), &json!(3))
        );
        let record = emf(&report, "r");
        assert_eq!(record["Received"], 3);
        assert_eq!(
            (
                &record["DeletionsReceived"],
                &record["DeletionsAccepted"],
                &record["DeletionsRejected"],
                &record["DeletionsRedelivered"]
            ),
            (&json!(5), &json!(1), &json!(1), &json!(3))
        );
        let names: Vec<&str> = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"DeletionsRedelivered"), "{names:?}");
    }

    fn epoch_ms(from_now: Duration) -> u64 {
        (SystemTime::now() + from_now)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn cutoff_keeps_a_reserve_before_the_deadline() {
        let left = |c: Instant| c.saturating_duration_since(Instant::now()).as_secs_f64();
        // 60 s left: stop 5 s early.
        let c = left(cutoff(epoch_ms(Duration::from_secs(60))));
        assert!((54.0..=55.1).contains(&c), "{c}");
        // 8 s left: stop a quarter early.
        let c = left(cutoff(epoch_ms(Duration::from_secs(8))));
        assert!((5.9..=6.1).contains(&c), "{c}");
        // Past: no time at all.
        assert_eq!(left(cutoff(epoch_ms(Duration::ZERO) - 1000)), 0.0);
        // cargo lambda watch: a duration, not a date.
        let c = left(cutoff(600_000));
        assert!((594.0..=595.1).contains(&c), "{c}");
    }
}
