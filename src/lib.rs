//! dsp-conversions: imports advertisers' conversion events into Amazon DSP.
//!
//! The data flows one way, one module per stage:
//! Lambda payload → [`trigger`] → [`read`] → [`event`] → [`batch`] → [`dsp`] → [`outcome`].
//! [`pipeline`] runs the stages for one invocation; [`handler`] is the Lambda entry point.

pub mod aws;
pub mod batch;
pub mod config;
pub mod dsp;
pub mod event;
pub mod handler;
pub mod origin;
pub mod outcome;
pub mod pipeline;
pub mod read;
pub mod store;
pub mod trigger;

/// An error with its chain of causes, on one line.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
