//! User deletion requests (GDPR erasure, CCPA deletion): one person's record, `{"matchKeys"}` or
//! the simple `{"userIdentifier", "userIdentifierType"?, "countryCode"?}`, validated into one
//! entry of the DSP's `deletionRequests`, its keys normalized and hashed exactly as for events.

use serde::Serialize;
use smallvec::SmallVec;

use super::{
    country_code, dedupe, either, invalid, match_key, match_keys, redact, string, user_identifier,
    EventDefaults, Invalid, MatchKey, MatchValue,
};
use crate::domain::{Origin, Reason, Rejection};
use crate::read::record::{present, trim};
use crate::read::RawEvent;

/// The fields a deletion record may have.
pub const FIELDS: [&str; 4] = [
    "matchKeys",
    "userIdentifier",
    "userIdentifierType",
    "countryCode",
];

/// One valid deletion request: a person's match keys, and where the request came from.
#[derive(Clone, Debug)]
pub struct Deletion {
    /// Normalized, hashed identifiers (MAIDs and RAMP ids as given, as the DSP wants them).
    pub match_keys: SmallVec<[MatchKey; 1]>,
    /// Its origin.
    pub origin: Origin,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "matchKeys")]
    match_keys: &'a [MatchKey],
}

impl Deletion {
    /// Appends the entry's JSON, `{"matchKeys": [{"type", "values"}]}`, to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let entry = Entry {
            match_keys: &self.match_keys,
        };
        // Writing into a Vec cannot fail, and every part serializes.
        let _ = serde_json::to_writer(&mut *out, &entry);
    }

    /// The entry for the rejects report: MAIDs and RAMP ids hashed too.
    pub fn redacted(&self) -> serde_json::Value {
        let mut keys = self.match_keys.clone();
        for key in &mut keys {
            if !key.kind.is_hashed() {
                for v in &mut key.values {
                    *v = MatchValue::Given(match_key::redact(Some(key.kind), &v.to_string(), None));
                }
            }
        }
        serde_json::to_value(Entry { match_keys: &keys }).unwrap_or(serde_json::Value::Null)
    }
}

/// Validates one deletion record. Its keys are prepared with its `countryCode`, else
/// `DSP_DEFAULT_COUNTRY_CODE` (phone numbers without either are taken as given).
pub fn validate(
    raw: &RawEvent<'_>,
    defaults: &EventDefaults,
    origin: &Origin,
) -> Result<Deletion, Rejection> {
    keys(raw, defaults)
        .map(|match_keys| Deletion {
            match_keys,
            origin: origin.clone(),
        })
        .map_err(|(reason, message)| Rejection {
            reason,
            message,
            event: Some(redact(raw)),
        })
}

fn keys(raw: &RawEvent<'_>, defaults: &EventDefaults) -> Result<SmallVec<[MatchKey; 1]>, Invalid> {
    if let Some((name, _)) = raw.fields().find(|(name, _)| !FIELDS.contains(name)) {
        return Err(invalid(
            Reason::UnknownField,
            format!(
                "field `{name}` is not part of a deletion request, which holds only {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let country = match present(raw.country_code) {
        Some(f) => {
            let s = string(f, "countryCode")?;
            Some(country_code(trim(&s)).ok_or_else(|| {
                invalid(
                    Reason::InvalidCountryCode,
                    format!("field `countryCode`: {s:?} is not an ISO 3166-1 alpha-2 code (e.g. US, GB, DE)"),
                )
            })?)
        }
        None => defaults.country_code.as_deref().and_then(country_code),
    };
    // A deletion has no dedupe id to check identifiers against.
    let mut dedupe = dedupe::Given::new(None);
    either(
        raw.match_keys,
        "matchKeys",
        raw.user_identifier,
        "userIdentifier",
    )?;
    if present(raw.user_identifier).is_some() {
        return user_identifier(raw, country, &mut dedupe);
    }
    if present(raw.user_identifier_type).is_some() {
        return Err(invalid(
            Reason::MissingField,
            "field `userIdentifier` is required with `userIdentifierType`",
        ));
    }
    match present(raw.match_keys) {
        Some(f) => match_keys(f, country, &mut dedupe),
        None => Err(invalid(
            Reason::MissingField,
            "field `matchKeys` or `userIdentifier` is required in a deletion request",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::domain::{Position, Unit};

    fn check(json: serde_json::Value, country: Option<&str>) -> Result<Deletion, Rejection> {
        let text = json.to_string();
        let raw = RawEvent::from_json(&text).expect("parses");
        let defaults = EventDefaults {
            country_code: country.map(str::to_owned),
            ..EventDefaults::default()
        };
        let origin = Origin {
            unit: Arc::new(Unit::message(0, "m").of_deletions()),
            position: Position::at(1, None),
        };
        validate(&raw, &defaults, &origin)
    }

    fn entry(d: &Deletion) -> serde_json::Value {
        let mut out = Vec::new();
        d.write_json(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn both_shapes_are_hashed_as_for_events() {
        let email_hash = match_key::sha256_hex(b"jane.doe@example.com");
        let simple = check(json!({"userIdentifier": " Jane.Doe@Example.com "}), None).unwrap();
        assert_eq!(
            entry(&simple),
            json!({"matchKeys": [{"type": "EMAIL", "values": [email_hash]}]})
        );
        let dsp = check(
            json!({"matchKeys": [{"type": "EMAIL", "values": ["jane.doe@example.com"]},
                                  {"type": "PHONE", "values": ["0151 2345 6789"]}]}),
            Some("DE"),
        )
        .unwrap();
        let phone = match_key::sha256_hex(b"4915123456789");
        assert_eq!(
            entry(&dsp),
            json!({"matchKeys": [{"type": "EMAIL", "values": [email_hash]},
                                 {"type": "PHONE", "values": [phone]}]})
        );
        // Already hashed: passed through, so a redelivered request is the same request.
        let again = check(
            json!({"matchKeys": [{"type": "EMAIL", "values": [email_hash]}]}),
            None,
        )
        .unwrap();
        assert_eq!(entry(&again), entry(&simple));
    }

    #[test]
    fn the_record_country_wins_over_the_default() {
        let d = check(
            json!({"userIdentifier": "020 7946 0958", "userIdentifierType": "PHONE", "countryCode": "GB"}),
            Some("DE"),
        )
        .unwrap();
        let phone = match_key::sha256_hex(b"442079460958");
        assert_eq!(d.match_keys[0].values[0], phone);
    }

    #[test]
    fn other_fields_and_missing_keys_are_rejected_by_name() {
        let e = check(
            json!({"userIdentifier": "jane@example.com", "eventTime": "2026-11-28T00:00:00Z"}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::UnknownField);
        assert!(e.message.contains("`eventTime`"), "{}", e.message);
        // The record in the report has its identifier hashed.
        let report = e.event.unwrap().to_string();
        assert!(!report.contains("jane@example.com"), "{report}");

        let e = check(json!({"countryCode": "US"}), None).unwrap_err();
        assert_eq!(e.reason, Reason::MissingField);
        assert!(e.message.contains("`matchKeys`"), "{}", e.message);

        let e = check(json!({"matchKeys": []}), None).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidMatchKey);

        let e = check(
            json!({"matchKeys": [{"type": "EMAIL", "values": ["no-at-sign"]}]}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::InvalidMatchKey);
        assert!(
            e.message.contains("matchKeys[0].values[0]"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("no-at-sign"), "{}", e.message);

        let e = check(
            json!({"matchKeys": [], "userIdentifier": "jane@example.com"}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason, Reason::ConflictingFields);
    }

    #[test]
    fn maids_are_sent_as_given_and_reported_hashed() {
        let maid = "6f1b2c1e-3a4b-4c5d-8e9f-0a1b2c3d4e5f";
        let d = check(json!({"userIdentifier": maid}), None).unwrap();
        assert_eq!(entry(&d)["matchKeys"][0]["type"], "MAID");
        assert_eq!(entry(&d)["matchKeys"][0]["values"][0], maid);
        let redacted = d.redacted();
        assert_eq!(
            redacted["matchKeys"][0]["values"][0],
            match_key::sha256_hex(maid.as_bytes())
        );
    }
}
