//! How each event (or deletion request) ends, and why the ones that cannot end now must wait:
//! one classification, made where the answer is read, and booked by `outcome`.

use super::Rejection;

/// The end of one event of an invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Disposition {
    /// The DSP took it.
    Accepted,
    /// It is rejected for good, with a reason (kept in the rejects report).
    Rejected(Rejection),
    /// It must be delivered again later (SQS redelivery, the retry queue, Lambda's retry).
    Redeliver(Cause),
    /// The invocation as a whole fails with this cause; the event is redelivered with it.
    Fail(Cause),
}

/// Why something could not be finished now. Never holds a secret, a token or an identifier.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    /// The DSP asked to slow down (HTTP 429).
    #[error("the DSP throttled the request (HTTP 429)")]
    Throttled,
    /// The DSP failed on its side (HTTP 408 or 5xx) or sent an answer that cannot be read.
    #[error("the DSP failed: {0}")]
    DspFailed(String),
    /// The DSP listed the event with a throttling code.
    #[error("{0}")]
    DspThrottled(String),
    /// The DSP listed the event with another transient code, or not at all.
    #[error("{0}")]
    DspTransient(String),
    /// No answer: a network error or a timeout.
    #[error("{0}")]
    Network(String),
    /// Retries ran out.
    #[error("{cause} (after {attempts} attempts)")]
    GaveUp {
        /// The last attempt's cause.
        cause: Box<Cause>,
        /// How many attempts were made.
        attempts: u32,
    },
    /// No time was left in the invocation for another attempt.
    #[error("{0}; no time left for another attempt")]
    NoTimeLeft(Box<Cause>),
    /// The invocation's time ran out before the work started.
    #[error("the invocation's time ran out before delivery")]
    OutOfTime,
    /// The DSP credentials could not be read from the secret.
    #[error("{0}")]
    Credentials(String),
    /// Login with Amazon did not issue an access token.
    #[error("{0}")]
    Token(String),
    /// The DSP refused a fresh access token.
    #[error("the DSP refused a fresh access token (HTTP 401)")]
    Unauthorized,
    /// The DSP refused this client or advertiser (403, 404, an unexpected status).
    #[error("{0}")]
    Refused(String),
    /// S3, SQS or the local file system failed.
    #[error("{0}")]
    Store(String),
    /// A failure of this function itself.
    #[error("internal error: {0}")]
    Internal(String),
    /// The invocation failed for another reason first.
    #[error("invocation failed: {0}")]
    InvocationFailed(Box<Cause>),
}

impl Cause {
    /// Whether this was the DSP asking to slow down.
    pub fn is_throttling(&self) -> bool {
        match self {
            Cause::Throttled | Cause::DspThrottled(_) => true,
            Cause::GaveUp { cause, .. } | Cause::NoTimeLeft(cause) => cause.is_throttling(),
            _ => false,
        }
    }
}
