//! Batching: valid events → DSP requests of at most `DSP_MAX_EVENTS_PER_REQUEST` events, one
//! source each; valid deletion requests → deletion requests of as many entries. Each item keeps
//! its origin so that each per-entry result traces back.

use crate::event::{Deletion, Source, Validated};

/// One request to the DSP, as the reading side hands it to the delivering side.
#[derive(Debug, Clone)]
pub enum Request {
    /// Events to import.
    Events(Batch),
    /// Users' deletion requests.
    Deletions(DeletionBatch),
}

/// One deletion request's worth of entries (one person each).
#[derive(Debug, Clone)]
pub struct DeletionBatch {
    /// The entries, in request order (the DSP's `index` − 1).
    pub requests: Vec<Deletion>,
}

impl DeletionBatch {
    /// The request body: `{"deletionRequests"}`.
    pub fn body(&self) -> Vec<u8> {
        deletion_body(&self.requests)
    }

    /// Splits the batch in two halves (for isolating what a 400 objects to).
    pub fn split(mut self) -> (DeletionBatch, DeletionBatch) {
        let tail = self.requests.split_off(self.requests.len() / 2);
        (self, DeletionBatch { requests: tail })
    }
}

/// The body of a deletion request for `requests`: `{"deletionRequests": [{"matchKeys"}]}`.
pub fn deletion_body(requests: &[Deletion]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + requests.len() * 100);
    out.extend_from_slice(b"{\"deletionRequests\":[");
    for (i, d) in requests.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        d.write_json(&mut out);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Fills one open deletion request and hands it out when it is full.
#[derive(Debug)]
pub struct DeletionBatcher {
    max: usize,
    open: Vec<Deletion>,
}

impl DeletionBatcher {
    /// A batcher of requests of at most `max` (1..=100) entries.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.clamp(1, 100),
            open: Vec::new(),
        }
    }

    /// Adds an entry; returns a full batch when this one filled it.
    pub fn push(&mut self, deletion: Deletion) -> Option<DeletionBatch> {
        self.open.push(deletion);
        (self.open.len() >= self.max).then(|| DeletionBatch {
            requests: std::mem::take(&mut self.open),
        })
    }

    /// The batch still open, if any.
    pub fn finish(self) -> Option<DeletionBatch> {
        (!self.open.is_empty()).then_some(DeletionBatch {
            requests: self.open,
        })
    }
}

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
        v.event.write_json(&mut out);
    }
    out.extend_from_slice(b"]}");
    out
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
pub(crate) mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::domain::{Origin, Position, Unit};
    use crate::event::{Amount, ConversionEvent, CurrencyCode, MatchKey, MatchKeyType, MatchValue};

    /// A valid event of `source` with dedupe id `record` (shared with the delivery tests).
    pub(crate) fn event(source: Source, record: u64) -> Validated {
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

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request<'a> {
        source: &'a str,
        #[serde(borrow)]
        event_data: Vec<&'a serde_json::value::RawValue>,
    }

    /// The keys of a JSON object, in the order written.
    struct Keys(Vec<String>);

    impl Keys {
        fn of(json: &str) -> Vec<String> {
            serde_json::from_str::<Keys>(json).unwrap().0
        }
    }

    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, serde::de::IgnoredAny)) = map.next_entry()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visit)
        }
    }

    /// What the DSP must read for `e`, from its fields: the keys in its order, and the value.
    fn expected(e: &ConversionEvent) -> (Vec<&'static str>, serde_json::Value) {
        let mut value = serde_json::json!({
            "conversionDefinitionId": &*e.conversion_definition_id,
            "name": &*e.name,
            "timestamp": e.timestamp.as_str(),
            "countryCode": e.country_code,
            "matchKeys": e.match_keys.iter().map(|k| serde_json::json!({
                "type": k.kind.as_str(),
                "values": k.values.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "clientDedupeId": e.client_dedupe_id.as_str(),
        });
        let mut keys = vec![
            "conversionDefinitionId",
            "name",
            "timestamp",
            "countryCode",
            "matchKeys",
            "clientDedupeId",
        ];
        let optional = [
            (
                "value",
                e.value.map(|a| serde_json::json!(a.cents() as f64 / 100.0)),
            ),
            (
                "currencyCode",
                e.currency_code.map(|c| serde_json::json!(c.as_str())),
            ),
            ("unitsSold", e.units_sold.map(|u| serde_json::json!(u))),
            (
                "dataProcessingOptions",
                e.data_processing_options.map(|o| serde_json::json!(o)),
            ),
        ];
        for (key, field) in optional {
            if let Some(field) = field {
                keys.push(key);
                value[key] = field;
            }
        }
        (keys, value)
    }

    #[test]
    fn deletion_batches_hold_at_most_max_entries() {
        let deletion = |record: u64| Deletion {
            match_keys: event(Source::ServerToServer, record).event.match_keys,
            origin: Origin {
                unit: Arc::new(Unit::message(0, "m").of_deletions()),
                position: Position::at(record, None),
            },
        };
        let mut batcher = DeletionBatcher::new(100);
        let mut batches: Vec<DeletionBatch> = (1..=250)
            .filter_map(|r| batcher.push(deletion(r)))
            .collect();
        batches.extend(batcher.finish());
        let sizes: Vec<usize> = batches.iter().map(|b| b.requests.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let body: serde_json::Value = serde_json::from_slice(&batches[2].body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"deletionRequests": vec![
                serde_json::json!({"matchKeys": [{"type": "MAID", "values": ["m"]}]}); 50
            ]})
        );
        let (head, tail) = batches.pop().unwrap().split();
        assert_eq!((head.requests.len(), tail.requests.len()), (25, 25));
    }

    proptest! {
        #[test]
        fn bodies_are_json_holding_every_field_in_the_dsp_order(
            events in prop::collection::vec(arbitrary_event(), 1..5),
        ) {
            let validated: Vec<Validated> = events.iter().enumerate().map(|(i, e)| {
                let mut v = event(Source::AmazonAdTag, i as u64);
                v.event = e.clone();
                v
            }).collect();
            let got = body(Source::AmazonAdTag, &validated);
            let request: Request<'_> = serde_json::from_slice(&got).unwrap();
            prop_assert_eq!(Keys::of(std::str::from_utf8(&got).unwrap()), ["source", "eventData"]);
            prop_assert_eq!(request.source, "AMAZON_AD_TAG");
            prop_assert_eq!(request.event_data.len(), events.len());
            for (raw, e) in request.event_data.iter().zip(&events) {
                let (keys, value) = expected(e);
                prop_assert_eq!(Keys::of(raw.get()), keys);
                let json: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
                prop_assert_eq!(json, value);
            }
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
