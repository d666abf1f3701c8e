//! Batching: valid events → DSP requests of at most `DSP_MAX_EVENTS_PER_REQUEST` events, one
//! source each. Events keep their origin so that each per-event result traces back.

use crate::event::{ConversionEvent, MatchValue, Source, Text, Validated};
use crate::read::scan::string_end;

/// One DSP request's worth of events.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The source of every event in it.
    pub source: Source,
    /// The events, in request order (the DSP's `index` − 1).
    pub events: Vec<Validated>,
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
    let mut out = Vec::with_capacity(64 + events.len() * EVENT_BYTES);
    out.extend_from_slice(b"{\"source\":\"");
    out.extend_from_slice(source.as_str().as_bytes());
    out.extend_from_slice(b"\",\"eventData\":[");
    for (i, v) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(&mut out, &v.event);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Writes one event exactly as serde_json writes `ConversionEvent` (a property test holds the
/// bytes equal), without serde's per-field machinery: this runs for every event sent.
fn write_event(out: &mut Vec<u8>, e: &ConversionEvent) {
    out.extend_from_slice(b"{\"conversionDefinitionId\":");
    write_str(out, &e.conversion_definition_id);
    out.extend_from_slice(b",\"name\":");
    write_str(out, &e.name);
    out.extend_from_slice(b",\"timestamp\":");
    write_text(out, &e.timestamp);
    out.extend_from_slice(b",\"countryCode\":");
    write_plain(out, e.country_code.as_bytes());
    out.extend_from_slice(b",\"matchKeys\":[");
    for (i, key) in e.match_keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(key.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"values\":[");
        for (j, value) in key.values.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            match value {
                MatchValue::Sha256(digest) => {
                    let mut text = [0u8; 64];
                    // 32 bytes always fit 64 hex digits.
                    let _ = hex::encode_to_slice(digest, &mut text);
                    out.push(b'"');
                    out.extend_from_slice(&text);
                    out.push(b'"');
                }
                MatchValue::Given(text) => write_str(out, text),
            }
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"],\"clientDedupeId\":");
    write_text(out, &e.client_dedupe_id);
    if let Some(value) = e.value {
        out.extend_from_slice(b",\"value\":");
        if value.is_negative() {
            out.push(b'-');
        }
        write_amount(out, value.cents());
    }
    if let Some(currency) = e.currency_code {
        out.extend_from_slice(b",\"currencyCode\":");
        write_plain(out, currency.as_str().as_bytes());
    }
    if let Some(units) = e.units_sold {
        out.extend_from_slice(b",\"unitsSold\":");
        out.extend_from_slice(itoa::Buffer::new().format(units).as_bytes());
    }
    if let Some(options) = e.data_processing_options {
        out.extend_from_slice(b",\"dataProcessingOptions\":");
        write_plain(out, options.as_bytes());
    }
    out.push(b'}');
}

/// A JSON string: as is when nothing needs escaping (nearly always), else through serde_json,
/// which escapes control characters, `"` and `\\`.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if string_end(s.as_bytes()).is_none() {
        write_plain(out, s.as_bytes());
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing into a Vec cannot fail; keep the JSON well-formed regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// [`write_str`] for inline text, without re-checking its UTF-8 when it needs no escaping.
fn write_text(out: &mut Vec<u8>, text: &Text) {
    if string_end(text.as_bytes()).is_none() {
        write_plain(out, text.as_bytes());
    } else {
        write_str(out, text.as_str());
    }
}

/// A JSON string known to need no escaping (codes and constants of this crate, checked text).
fn write_plain(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// An amount as serde_json writes the f64 `cents / 100` (shortest round-trip form): `12.0`,
/// `12.3`, `12.35`. Exact below 10^14, and amounts stop at 10^13.
fn write_amount(out: &mut Vec<u8>, cents: u64) {
    let (units, hundredths) = (cents / 100, (cents % 100) as u8);
    out.extend_from_slice(itoa::Buffer::new().format(units).as_bytes());
    out.push(b'.');
    out.push(b'0' + hundredths / 10);
    if hundredths % 10 != 0 {
        out.push(b'0' + hundredths % 10);
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
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::domain::{Origin, Position, Unit};
    use crate::event::{Amount, CurrencyCode, MatchKey, MatchKeyType};

    fn event(source: Source, record: u64) -> Validated {
        Validated {
            event: ConversionEvent {
                conversion_definition_id: "d".into(),
                name: "n".into(),
                timestamp: "2026-11-28T00:00:00Z".into(),
                country_code: "US",
                match_keys: smallvec::smallvec![MatchKey {
                    kind: MatchKeyType::Maid,
                    values: smallvec::smallvec![MatchValue::Given("m".into())],
                }],
                client_dedupe_id: record.to_string().into(),
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

    fn arbitrary_event() -> impl Strategy<Value = ConversionEvent> {
        let text = "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a-z]{0,6}";
        (
            (text, text, text, text),
            prop::collection::vec(prop::collection::vec(text, 1..3), 1..3),
            prop::option::of(0u64..=Amount::MAX_CENTS),
            prop::option::of(any::<u64>()),
            any::<(bool, bool)>(),
        )
            .prop_map(
                |((id, name, ts, dedupe), keys, cents, units, (currency, limited))| {
                    ConversionEvent {
                        conversion_definition_id: id.into(),
                        name: name.into(),
                        timestamp: ts.into(),
                        country_code: "US",
                        // Given values (which may need escaping) and digests, alternately.
                        match_keys: keys
                            .into_iter()
                            .enumerate()
                            .map(|(i, values)| match i % 2 {
                                0 => MatchKey {
                                    kind: MatchKeyType::RampId,
                                    values: values.into_iter().map(MatchValue::Given).collect(),
                                },
                                _ => MatchKey {
                                    kind: MatchKeyType::Email,
                                    values: values
                                        .iter()
                                        .map(|v| MatchValue::Sha256(Sha256::digest(v).into()))
                                        .collect(),
                                },
                            })
                            .collect(),
                        client_dedupe_id: dedupe.into(),
                        value: cents.map(|c| {
                            Amount::parse(&format!("{}.{:02}", c / 100, c % 100)).unwrap()
                        }),
                        currency_code: currency.then(|| CurrencyCode::parse("EUR").unwrap()),
                        units_sold: units,
                        data_processing_options: limited.then_some("LIMITED_DATA_USE"),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn hand_written_bodies_are_what_serde_json_writes(events in prop::collection::vec(arbitrary_event(), 1..5)) {
            let validated: Vec<Validated> = events.iter().enumerate().map(|(i, e)| {
                let mut v = event(Source::AmazonAdTag, i as u64);
                v.event = e.clone();
                v
            }).collect();
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Expected<'a> {
                source: Source,
                event_data: &'a [ConversionEvent],
            }
            let expected = serde_json::to_vec(&Expected { source: Source::AmazonAdTag, event_data: &events }).unwrap();
            let got = body(Source::AmazonAdTag, &validated);
            prop_assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(expected).unwrap());
        }

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
