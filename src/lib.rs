//! dsp-conversions: imports advertisers' conversion events into Amazon DSP.
//!
//! The data flows one way, one module per stage:
//! Lambda payload → [`trigger`] → [`read`] → [`event`] → [`batch`] → [`dsp`] → [`outcome`].
//! [`pipeline`] runs the stages for one invocation; [`handler`] is the Lambda entry point.

pub mod aws;
pub mod batch;
pub mod config;
pub mod domain;
pub mod dsp;
pub mod event;
pub mod handler;
pub mod outcome;
pub mod pipeline;
pub mod read;
pub mod store;
pub mod trigger;
