use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::domain::{Position, Unit};

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);
const EMAIL_HASH: &str = "836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f";

fn rules() -> Rules {
    Rules::new(
        EventDefaults {
            source: Source::ServerToServer,
            conversion_definitions: HashMap::from([(
                "purchase".to_owned(),
                "def-purchase".to_owned(),
            )]),
            default_conversion_definition_id: None,
            country_code: None,
            currency_code: CurrencyCode::parse("USD"),
        },
        NOW,
    )
}

fn origin() -> Origin {
    Origin {
        unit: Arc::new(Unit::message(0, "m-1")),
        position: Position::at(1, None),
    }
}

fn check(json: serde_json::Value) -> Result<Validated, Rejection> {
    let text = json.to_string();
    let raw = RawEvent::from_json(&text).expect("parses");
    validate(&raw, None, &rules(), &origin())
}

fn reject(json: serde_json::Value) -> (String, String) {
    let r = check(json).expect_err("rejected");
    (r.reason.code(), r.message)
}

fn simple() -> serde_json::Value {
    json!({
        "eventTime": "2026-11-28T09:30:00+01:00",
        "conversionType": "purchase",
        "conversionValue": 12.345,
        "userIdentifier": " John.Doe@Example.com ",
        "countryCode": "us",
    })
}

#[test]
fn simple_shape_maps_to_the_dsp_event() {
    let v = check(simple()).unwrap();
    assert_eq!(v.source, Source::ServerToServer);
    let mut json = Vec::new();
    v.event.write_json(&mut json);
    let body: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        body,
        json!({
            "conversionDefinitionId": "def-purchase",
            "name": "purchase",
            "timestamp": "2026-11-28T08:30:00Z",
            "countryCode": "US",
            "matchKeys": [{"type": "EMAIL", "values": [EMAIL_HASH]}],
            "clientDedupeId": origin().dedupe_id(),
            "value": 12.35,
            "currencyCode": "USD",
        })
    );
}

#[test]
fn dsp_shape_passes_hashed_values_and_sends_maids_as_given() {
    let v = check(json!({
        "conversionDefinitionId": "d1",
        "name": "buy",
        "timestamp": "2026-11-28T11:00:00Z",
        "countryCode": "DE",
        "matchKeys": [
            {"type": "EMAIL", "values": [EMAIL_HASH, "a@b.de"]},
            {"type": "MAID", "values": ["6d92078a-8246-4ba4-ae5b-76104861e7dc"]}
        ],
        "clientDedupeId": "order-1",
        "value": 3,
        "unitsSold": "2",
        "dataProcessingOptions": "LIMITED_DATA_USE",
        "source": "AMAZON_AD_TAG"
    }))
    .unwrap();
    assert_eq!(v.source, Source::AmazonAdTag);
    assert_eq!(v.event.client_dedupe_id, "order-1");
    assert_eq!(v.event.match_keys[0].values[0], EMAIL_HASH);
    assert_eq!(
        v.event.match_keys[0].values[1],
        match_key::sha256_hex(b"a@b.de")
    );
    assert_eq!(
        v.event.match_keys[1].values[0],
        "6d92078a-8246-4ba4-ae5b-76104861e7dc"
    );
    assert_eq!(v.event.units_sold, Some(2));
    // the rejects report never shows the MAID
    let redacted = v.event.redacted().to_string();
    assert!(!redacted.contains("6d92078a"), "{redacted}");
}

#[test]
fn each_rule_has_its_reason() {
    let with = |k: &str, v: serde_json::Value| {
        let mut e = simple();
        e[k] = v;
        e
    };
    let without = |k: &str| {
        let mut e = simple();
        e.as_object_mut().unwrap().remove(k);
        e
    };
    let cases = [
        (without("eventTime"), "MISSING_FIELD", "eventTime"),
        (
            with("eventTime", json!("2026-11-28T09:30:00")),
            "INVALID_TIMESTAMP",
            "no UTC offset",
        ),
        (
            with("eventTime", json!("yesterday")),
            "INVALID_TIMESTAMP",
            "eventTime",
        ),
        (
            with("eventTime", json!("2026-11-31T10:00:00Z")),
            "INVALID_TIMESTAMP",
            "\"2026-11-31T10:00:00Z\" is not a calendar date",
        ),
        (
            with("eventTime", json!("2026-11-20T09:30:00Z")),
            "TIMESTAMP_TOO_OLD",
            "7 days",
        ),
        (
            with("eventTime", json!("2026-11-28T12:06:00Z")),
            "TIMESTAMP_IN_FUTURE",
            "5 minutes",
        ),
        (
            with("countryCode", json!("USA")),
            "INVALID_COUNTRY_CODE",
            "\"USA\"",
        ),
        (
            without("countryCode"),
            "MISSING_FIELD",
            "DSP_DEFAULT_COUNTRY_CODE",
        ),
        (
            with("currencyCode", json!("XYZ")),
            "INVALID_CURRENCY_CODE",
            "USD",
        ),
        (
            with("conversionValue", json!("NaN")),
            "INVALID_VALUE",
            "decimal",
        ),
        (
            with("conversionValue", json!(1e300)),
            "INVALID_VALUE",
            "larger",
        ),
        (
            with("conversionValue", json!([1])),
            "INVALID_VALUE",
            "number",
        ),
        (
            with("conversionType", json!("signup")),
            "NO_CONVERSION_DEFINITION",
            "signup",
        ),
        (
            with("conversionType", json!(7)),
            "INVALID_FIELD",
            "must be a string, found number",
        ),
        (
            with("userIdentifier", json!("John")),
            "AMBIGUOUS_IDENTIFIER",
            "userIdentifierType",
        ),
        (
            with("userIdentifierType", json!("SSN")),
            "INVALID_MATCH_KEY",
            "SSN",
        ),
        (with("source", json!("WEB")), "INVALID_SOURCE", "WEB"),
        (with("unitsSold", json!(1.5)), "INVALID_FIELD", "unitsSold"),
        (
            with("timestamp", json!("2026-11-28T09:30:00Z")),
            "CONFLICTING_FIELDS",
            "eventTime",
        ),
        (
            with("dataProcessingOptions", json!("ALL")),
            "INVALID_FIELD",
            "LIMITED_DATA_USE",
        ),
    ];
    for (event, code, needle) in cases {
        let (got, message) = reject(event.clone());
        assert_eq!(got, code, "{event} → {message}");
        assert!(message.contains(needle), "{event} → {message}");
    }
}

#[test]
fn match_key_errors_name_the_key_and_never_the_value() {
    let event = |keys: serde_json::Value| {
        json!({"conversionDefinitionId": "d", "name": "n", "timestamp": "2026-11-28T11:00:00Z",
               "countryCode": "US", "matchKeys": keys})
    };
    let (code, msg) = reject(event(json!([])));
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("INVALID_MATCH_KEY", "field `matchKeys` is empty")
    );
    let (code, msg) = reject(event(json!([{"type": "FAX", "values": ["1"]}])));
    assert_eq!(code, "INVALID_MATCH_KEY");
    assert!(msg.contains("matchKeys[0].type"), "{msg}");
    let (_, msg) = reject(event(json!([{"type": "EMAIL", "values": []}])));
    assert!(msg.contains("matchKeys[0].values"), "{msg}");
    let (_, msg) = reject(event(
        json!([{"type": "PHONE", "values": ["+1 555 0100 999 999 999 9"]}]),
    ));
    assert!(
        msg.contains("matchKeys[0].values[0]") && !msg.contains("555"),
        "{msg}"
    );
    let (code, _) = reject(event(json!({"type": "EMAIL"})));
    assert_eq!(code, "INVALID_MATCH_KEY");
}

#[test]
fn rejected_events_are_reported_with_identifiers_hashed() {
    let mut e = simple();
    e["countryCode"] = json!("XX");
    let rejection = check(e).unwrap_err();
    let event = rejection.event.unwrap();
    assert_eq!(event["userIdentifier"], json!(EMAIL_HASH));
    assert_eq!(event["countryCode"], json!("XX"));
    let text = event.to_string();
    assert!(!text.contains("John"), "{text}");

    let rejection =
        check(json!({"name": "n", "matchKeys": [{"type": "MAID", "values": ["raw-maid"]}]}))
            .unwrap_err();
    let text = rejection.event.unwrap().to_string();
    assert!(!text.contains("raw-maid"), "{text}");
    assert!(text.contains(&match_key::sha256_hex(b"raw-maid")), "{text}");
}

#[test]
fn request_source_applies_unless_the_event_names_one() {
    let text = simple().to_string();
    let raw = RawEvent::from_json(&text).unwrap();
    let v = validate(&raw, Some("AMAZON_AD_TAG"), &rules(), &origin()).unwrap();
    assert_eq!(v.source, Source::AmazonAdTag);
}

#[test]
fn csv_text_cells_are_read_like_json() {
    let raw = RawEvent {
        event_time: Some(Field::Text("2026-11-28T11:00:00Z")),
        conversion_type: Some(Field::Text("purchase")),
        conversion_value: Some(Field::Text("0.125")),
        user_identifier: Some(Field::Text("+1 206 555 0100")),
        country_code: Some(Field::Text("GB")),
        ..Default::default()
    };
    let v = validate(&raw, None, &rules(), &origin()).unwrap();
    assert_eq!(v.event.value.map(Amount::cents), Some(13));
    assert_eq!(v.event.match_keys[0].kind, MatchKeyType::Phone);
    assert_eq!(
        v.event.match_keys[0].values[0],
        match_key::sha256_hex(b"12065550100")
    );
}

#[test]
fn multibyte_text_where_a_date_is_expected_is_an_error_not_a_panic() {
    let (code, _) = reject(json!({
        "eventTime": "2026-11-28éééééééééééé", "conversionType": "purchase",
        "userIdentifier": "a@b.c", "countryCode": "US"
    }));
    assert_eq!(code, "INVALID_TIMESTAMP");
}

#[test]
fn national_phone_numbers_take_the_calling_code_of_the_event_country() {
    let mut e = simple();
    e["userIdentifier"] = json!("020 7946 0018");
    e["countryCode"] = json!("gb");
    let v = check(e).unwrap();
    assert_eq!(v.event.match_keys[0].kind, MatchKeyType::Phone);
    assert_eq!(
        v.event.match_keys[0].values[0],
        // sha256("442079460018")
        "99a4599795d24445a5be21117f375c1bbe9e795daf7f62666686ce081e1f32dc"
    );

    let v = check(json!({
        "conversionDefinitionId": "d1", "name": "buy", "timestamp": "2026-11-28T11:00:00Z",
        "countryCode": "DE",
        "matchKeys": [{"type": "PHONE", "values": ["030 123456", "+1 (206) 555-0100"]}]
    }))
    .unwrap();
    assert_eq!(
        v.event.match_keys[0].values[0],
        // sha256("4930123456")
        "ac75546db905289f50bd750fd5648fec0719074ce391521b2372abeae9110668"
    );
    assert_eq!(
        v.event.match_keys[0].values[1],
        match_key::sha256_hex(b"12065550100")
    );

    let mut e = simple();
    e["userIdentifier"] = json!("206 555 01000");
    e["userIdentifierType"] = json!("PHONE");
    let (code, message) = reject(e);
    assert_eq!(code, "INVALID_MATCH_KEY");
    assert_eq!(
        message,
        "field `userIdentifier` (Phone) is not a possible phone number for calling code +1 (too long)"
    );
}

#[test]
fn dedupe_ids_with_identifiers_are_sent_and_reported_hashed() {
    let mut e = simple();
    e["clientDedupeId"] = json!("order-7");
    assert_eq!(check(e).unwrap().event.client_dedupe_id, "order-7");

    for given in ["order-7-john.doe@example.com", "order-7-JOHN.DOE@EXAMPLE"] {
        let mut e = simple();
        e["clientDedupeId"] = json!(given);
        let hashed = match_key::sha256_hex(given.as_bytes());
        assert_eq!(
            check(e.clone()).unwrap().event.client_dedupe_id,
            hashed.as_str()
        );
        // in the rejects report too
        e["currencyCode"] = json!("XYZ");
        let report = check(e).unwrap_err().event.unwrap();
        assert_eq!(report["clientDedupeId"], json!(hashed));
    }

    let v = check(json!({
        "conversionDefinitionId": "d1", "name": "buy", "timestamp": "2026-11-28T11:00:00Z",
        "countryCode": "US", "clientDedupeId": " 12065550100-1 ",
        "matchKeys": [{"type": "PHONE", "values": ["(206) 555-0100"]}]
    }))
    .unwrap();
    assert_eq!(
        v.event.client_dedupe_id,
        match_key::sha256_hex(b"12065550100-1").as_str()
    );
}

fn listed() -> Arc<Definitions> {
    let d = |id: &str, name: &str, kind: &str, source: &str| Definition {
        id: id.into(),
        name: name.into(),
        conversion_type: Some(kind.into()),
        source: Some(DefinitionSource::parse(source)),
    };
    Arc::new(Definitions::new(vec![
        d(
            "11",
            "Web purchase",
            "OFF_AMAZON_PURCHASES",
            "AMAZON_AD_TAG",
        ),
        d(
            "22",
            "Store purchase",
            "OFF_AMAZON_PURCHASES",
            "SERVER_TO_SERVER",
        ),
        d("33", "Sign-up", "SIGN_UP", "SERVER_TO_SERVER"),
        d("44", "App install", "OTHER", "MMP"),
        d("55", "Lead", "LEAD", "SERVER_TO_SERVER"),
        d("56", "lead", "LEAD", "AMAZON_AD_TAG"),
    ]))
}

fn check_listed(
    json: serde_json::Value,
    map: &[(&str, &str)],
    default: Option<&str>,
    request_source: Option<&str>,
) -> Result<Validated, Rejection> {
    let rules = Rules::new(
        EventDefaults {
            source: Source::ServerToServer,
            conversion_definitions: map
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            default_conversion_definition_id: default.map(str::to_owned),
            country_code: Some("US".into()),
            currency_code: None,
        },
        NOW,
    )
    .with_definitions(listed());
    let text = json.to_string();
    let raw = RawEvent::from_json(&text).expect("parses");
    validate(&raw, request_source, &rules, &origin())
}

fn simple_of(kind: &str) -> serde_json::Value {
    json!({"eventTime": "2026-11-28T09:30:00Z", "conversionType": kind, "userIdentifier": "a@b.de"})
}

#[test]
fn listed_definitions_resolve_by_id_name_and_map_and_give_the_source() {
    let map = [
        ("purchase", "Web purchase"),
        ("store", "22"),
        ("gone", "Nothing"),
    ];
    let ok = |j, req| check_listed(j, &map, None, req).expect("valid");
    // A map entry naming a definition: its id and its source.
    let v = ok(simple_of("purchase"), None);
    assert_eq!(
        (&*v.event.conversion_definition_id, v.source),
        ("11", Source::AmazonAdTag)
    );
    // A map entry by id.
    let v = ok(simple_of("store"), None);
    assert_eq!(
        (&*v.event.conversion_definition_id, v.source),
        ("22", Source::ServerToServer)
    );
    // No map entry: a definition named like the type, ignoring case.
    let v = ok(simple_of("SIGN-UP"), Some("SERVER_TO_SERVER"));
    assert_eq!(&*v.event.conversion_definition_id, "33");
    // The event's own id wins.
    let mut own = simple_of("purchase");
    own["conversionDefinitionId"] = "33".into();
    assert_eq!(&*ok(own, None).event.conversion_definition_id, "33");
}

#[test]
fn listed_definitions_reject_what_the_dsp_would() {
    let map = [("gone", "Nothing"), ("purchase", "Web purchase")];
    let reason = |j, req, default| {
        let r = check_listed(j, &map, default, req).expect_err("rejected");
        (r.reason.code(), r.message)
    };
    let (code, message) = reason(simple_of("gone"), None, None);
    assert_eq!(code, "UNKNOWN_CONVERSION_DEFINITION");
    assert!(
        message.contains("\"gone\"") && message.contains("\"Nothing\""),
        "{message}"
    );
    let mut unknown_id = simple_of("x");
    unknown_id["conversionDefinitionId"] = "999".into();
    assert_eq!(
        reason(unknown_id, None, None).0,
        "UNKNOWN_CONVERSION_DEFINITION"
    );
    let (code, message) = reason(simple_of("lead"), None, None);
    assert_eq!(code, "UNKNOWN_CONVERSION_DEFINITION");
    assert!(message.contains("several"), "{message}");
    assert_eq!(
        reason(simple_of("refund"), None, Some("999")).0,
        "UNKNOWN_CONVERSION_DEFINITION"
    );
    assert_eq!(
        reason(simple_of("refund"), None, None).0,
        "NO_CONVERSION_DEFINITION"
    );
    // One definition, one source.
    let (code, message) = reason(simple_of("purchase"), Some("SERVER_TO_SERVER"), None);
    assert_eq!(code, "SOURCE_MISMATCH");
    assert!(message.contains("AMAZON_AD_TAG"), "{message}");
    let mut own_source = simple_of("purchase");
    own_source["source"] = "SERVER_TO_SERVER".into();
    assert_eq!(reason(own_source, None, None).0, "SOURCE_MISMATCH");
    assert_eq!(
        reason(simple_of("App install"), None, None).0,
        "UNSUPPORTED_SOURCE"
    );
}

#[test]
fn negative_values_follow_the_definition_type() {
    let with_value = |kind: &str, value: f64| {
        let mut j = simple_of(kind);
        j["conversionValue"] = value.into();
        j
    };
    let r = check_listed(with_value("Web purchase", -5.0), &[], None, None).expect_err("rejected");
    assert_eq!(r.reason.code(), "INVALID_VALUE");
    assert!(r.message.contains("OFF_AMAZON_PURCHASES"), "{}", r.message);
    let v = check_listed(with_value("Sign-up", -5.0), &[], None, None).expect("a refund");
    assert_eq!(
        v.event.value.map(|a| (a.cents(), a.is_negative())),
        Some((500, true))
    );
    // Without the list, the DSP has the last word.
    let mut refund = simple();
    refund["conversionValue"] = json!(-1);
    let v = check(refund).expect("valid");
    assert!(v.event.value.is_some_and(|a| a.is_negative()));
}
