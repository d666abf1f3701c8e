//! Outcomes: every event ends accepted, rejected with a reason, or handed back for redelivery.

mod reason;

pub use reason::{Reason, Rejection};
