//! Batching: valid events → DSP requests of at most `DSP_MAX_EVENTS_PER_REQUEST` events, one
//! source each. Events keep their origin so that each per-event result traces back.

use serde::Serialize;

use crate::event::{Source, Validated};

/// One DSP request's worth of events.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The source of every event in it.
    pub source: Source,
    /// The events, in request order (the DSP's `index` − 1).
    pub events: Vec<Validated>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    source: Source,
    event_data: EventData<'a>,
}

/// The events of a body, serialized as an array of their DSP shape without collecting them.
struct EventData<'a>(&'a [Validated]);

impl Serialize for EventData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|v| &v.event))
    }
}

/// Room for one serialized event, so that a body is written without growing its buffer.
const EVENT_BYTES: usize = 320;

impl Batch {
    /// The request body: `{"source", "eventData"}`.
    pub fn body(&self) -> Vec<u8> {
        body(self.source, &self.events)
    }

    /// Splits the batch in two halves (for isolating what a 400 objects to).
    pub fn split(mut self) -> (Batch, Batch) {
        let tail = self.events.split_off(self.events.len() / 2);
        let source = self.source;
        (
            self,
            Batch {
                source,
                events: tail,
            },
        )
    }
}

/// The request body for `events` of `source`.
pub fn body(source: Source, events: &[Validated]) -> Vec<u8> {
    let body = Body {
        source,
        event_data: EventData(events),
    };
    let mut out = Vec::with_capacity(64 + events.len() * EVENT_BYTES);
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    match serde_json::to_writer(&mut out, &body) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// Fills one open batch per source and hands out each when it is full.
#[derive(Debug)]
pub struct Batcher {
    max: usize,
    open: [Vec<Validated>; 2],
}

impl Batcher {
    /// A batcher of requests of at most `max` (1..=100) events.
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, 100);
        Self {
            max,
            open: [Vec::with_capacity(max), Vec::with_capacity(max)],
        }
    }

    /// Adds an event; returns a full batch when this one filled it.
    pub fn push(&mut self, event: Validated) -> Option<Batch> {
        let source = event.source;
        let open = &mut self.open[source.index()];
        open.push(event);
        if open.len() < self.max {
            return None;
        }
        let events = std::mem::replace(open, Vec::with_capacity(self.max));
        Some(Batch { source, events })
    }

    /// The batches still open.
    pub fn finish(self) -> impl Iterator<Item = Batch> {
        Source::ALL
            .into_iter()
            .zip(self.open)
            .filter(|(_, events)| !events.is_empty())
            .map(|(source, events)| Batch { source, events })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::event::{ConversionEvent, MatchKey, MatchKeyType};
    use crate::origin::{Origin, Position, Unit};

    fn event(source: Source, record: u64) -> Validated {
        Validated {
            event: ConversionEvent {
                conversion_definition_id: "d".into(),
                name: "n".into(),
                timestamp: "2026-11-28T00:00:00Z".into(),
                country_code: "US",
                match_keys: vec![MatchKey {
                    kind: MatchKeyType::Maid,
                    values: vec!["m".into()],
                }],
                client_dedupe_id: record.to_string(),
                value: None,
                currency_code: None,
                units_sold: None,
                data_processing_options: None,
            },
            source,
            origin: Origin {
                unit: Arc::new(Unit::message(0, "m")),
                position: Position::at(record, None),
            },
        }
    }

    #[test]
    fn body_is_the_dsp_request() {
        let batch = Batch {
            source: Source::AmazonAdTag,
            events: vec![event(Source::AmazonAdTag, 1)],
        };
        let body: serde_json::Value = serde_json::from_slice(&batch.body()).unwrap();
        assert_eq!(body["source"], "AMAZON_AD_TAG");
        assert_eq!(body["eventData"][0]["clientDedupeId"], "1");
        assert_eq!(body["eventData"][0]["matchKeys"][0]["type"], "MAID");
    }

    proptest! {
        #[test]
        fn every_event_in_exactly_one_batch_within_limits(
            max in 1usize..=100,
            sources in prop::collection::vec(any::<bool>(), 0..500),
        ) {
            let mut batcher = Batcher::new(max);
            let mut batches = Vec::new();
            for (i, ad_tag) in sources.iter().enumerate() {
                let source = if *ad_tag { Source::AmazonAdTag } else { Source::ServerToServer };
                batches.extend(batcher.push(event(source, i as u64)));
            }
            batches.extend(batcher.finish());
            let mut seen: Vec<u64> = Vec::new();
            for b in &batches {
                prop_assert!(!b.events.is_empty() && b.events.len() <= max);
                prop_assert!(b.events.iter().all(|e| e.source == b.source));
                seen.extend(b.events.iter().map(|e| e.origin.position.record.unwrap()));
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..sources.len() as u64).collect::<Vec<_>>());
        }
    }
}
