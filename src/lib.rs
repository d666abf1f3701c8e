//! dsp-conversions: imports advertisers' conversion events into Amazon DSP.
//!
//! The data flows one way, one module per stage:
//! Lambda payload → [`trigger`] → [`read`] → [`event`] → [`batch`] → [`dsp`] → [`outcome`].
//! [`pipeline`] runs the stages for one invocation; [`handler`] is the Lambda entry point.

pub mod config;
pub mod event;
pub mod origin;
pub mod outcome;
pub mod read;
