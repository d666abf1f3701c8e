//! What the tests check beyond plain values: logs free of secrets, the dedupe ids of request
//! bodies, and a writer that captures the bodies a dry run would send.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Fails if any of `needles` appears in `haystack` (logs must never carry secrets, tokens or
/// raw identifiers).
pub fn assert_no_leaks(haystack: &str, needles: &[String]) {
    for n in needles.iter().filter(|n| !n.is_empty()) {
        assert!(
            !haystack.contains(n.as_str()),
            "logs contain {n:?}:\n{haystack}"
        );
    }
}

/// The `clientDedupeId` of every event of request bodies (or retry-queue messages), sorted.
pub fn dedupe_ids(bodies: &[Value]) -> Vec<String> {
    sorted_dedupe_ids(
        bodies
            .iter()
            .flat_map(|b| b["eventData"].as_array().unwrap()),
    )
}

/// The `clientDedupeId` of `events`, sorted (duplicates kept).
pub(super) fn sorted_dedupe_ids<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    let mut ids: Vec<String> = events
        .into_iter()
        .map(|e| e["clientDedupeId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A writer whose bytes can be read afterwards (request bodies of a dry run).
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    /// The lines written, parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}
