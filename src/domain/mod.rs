//! The shared base every stage may use: where an event came from ([`Origin`]), why it was
//! rejected ([`Reason`], [`Rejection`]), and how each event or request ends ([`Disposition`]).
//! It imports nothing else of the crate.

mod codes;
pub mod disposition;
pub mod origin;
pub mod reason;

pub(crate) use codes::code_enum;
pub use disposition::{Cause, Disposition};
pub use origin::{Origin, Position, Resume, Unit};
pub use reason::{Reason, Rejection};

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
