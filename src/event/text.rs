//! Short text kept inline: the timestamp and the dedupe id of every event, without an allocation
//! each (text longer than 32 bytes spills to the heap).

use std::fmt;
use std::ops::Deref;

use smallvec::SmallVec;

/// A string of at most 32 bytes stored in place, longer ones on the heap.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text(SmallVec<[u8; 32]>);

impl Text {
    /// The text. Built only from `&str`, so always UTF-8; checked anyway (no `unsafe`), which
    /// costs more than the copy: request bodies use [`Text::as_bytes`].
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes (UTF-8), without the check `as_str` makes: for writing request bodies.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(SmallVec::from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_text_read_back() {
        for s in [
            "",
            "2026-11-28T17:50:16Z",
            "é",
            &"x".repeat(33),
            &"ü".repeat(40),
        ] {
            let t = Text::from(s);
            assert_eq!(t, s);
        }
    }
}
