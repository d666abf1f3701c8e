//! Events: a record of either input shape (the DSP's own or the simple shape, docs/inputs.md) validated and
//! mapped to the DSP's `ConversionEventDataV1`, or rejected with a reason.

pub mod amount;
mod codes;
pub mod dedupe;
mod definitions;
pub mod deletion;
pub mod match_key;
pub mod phone;
mod text;
pub mod timestamp;
mod wire;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use smallvec::{smallvec, SmallVec};
use time::{Duration, OffsetDateTime};

pub use amount::Amount;
pub use codes::{country_code, CurrencyCode, Source};
pub use definitions::{Definition, DefinitionSource, Definitions, NameLookup};
pub use deletion::Deletion;
pub use match_key::{MatchKey, MatchKeyType, MatchValue};
pub use text::Text;

use crate::domain::Origin;
use crate::domain::{Reason, Rejection};
use crate::read::record::{present, trim, Field, FieldTypeError};
use crate::read::RawEvent;

/// The only `dataProcessingOptions` value the DSP knows.
const LIMITED_DATA_USE: &str = "LIMITED_DATA_USE";

/// One event as the DSP receives it; [`ConversionEvent::write_json`] writes its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversionEvent {
    /// Conversion definition of the advertiser (shared: most events name a configured one).
    pub conversion_definition_id: Arc<str>,
    /// Name of the event (shared when it is a configured conversion type).
    pub name: Arc<str>,
    /// UTC with seconds, `YYYY-MM-DDThh:mm:ssZ`.
    pub timestamp: Text,
    /// ISO 3166-1 alpha-2.
    pub country_code: &'static str,
    /// Normalized, hashed identifiers (inline when there is one key).
    pub match_keys: SmallVec<[MatchKey; 1]>,
    /// Given, or derived from the origin.
    pub client_dedupe_id: Text,
    /// Value, 2 decimals.
    pub value: Option<Amount>,
    /// Currency of the value.
    pub currency_code: Option<CurrencyCode>,
    /// Units sold.
    pub units_sold: Option<u64>,
    /// `LIMITED_DATA_USE`.
    pub data_processing_options: Option<&'static str>,
}

impl ConversionEvent {
    /// The event for the rejects report: MAIDs and RAMP ids hashed too.
    pub fn redacted(&self) -> serde_json::Value {
        let mut copy = self.clone();
        for key in &mut copy.match_keys {
            if !key.kind.is_hashed() {
                for v in &mut key.values {
                    *v = MatchValue::Given(match_key::redact(
                        Some(key.kind),
                        &v.to_string(),
                        Some(self.country_code),
                    ));
                }
            }
        }
        let mut json = Vec::new();
        copy.write_json(&mut json);
        serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null)
    }
}

/// A valid event, with its source and where it came from.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The event.
    pub event: ConversionEvent,
    /// Its request's source.
    pub source: Source,
    /// Its origin.
    pub origin: Origin,
}

/// How events are validated and mapped: the event part of the configuration.
#[derive(Clone, Debug, Default)]
pub struct EventDefaults {
    /// Source for events that name none.
    pub source: Source,
    /// Conversion type → `conversionDefinitionId`.
    pub conversion_definitions: HashMap<String, String>,
    /// Used when an event's type is not in the map.
    pub default_conversion_definition_id: Option<String>,
    /// Fills events that carry no `countryCode`.
    pub country_code: Option<String>,
    /// Fills events that carry no `currencyCode`.
    pub currency_code: Option<CurrencyCode>,
}

/// The rules in force for one invocation: configuration defaults and the time window.
#[derive(Clone, Debug)]
pub struct Rules {
    defaults: EventDefaults,
    /// `DSP_CONVERSION_DEFINITIONS` as shared strings, (conversion type, definition id) sorted
    /// by type, so that events of a configured type copy no strings (and a binary search costs
    /// less than hashing the name).
    definitions: Vec<(Arc<str>, Arc<str>)>,
    default_definition: Option<Arc<str>>,
    /// The advertiser's definitions, when they were listed: names resolve, and each event
    /// takes its definition's source and value rule.
    listed: Option<Arc<Definitions>>,
    oldest: OffsetDateTime,
    latest: OffsetDateTime,
}

impl Rules {
    /// Rules at `now` (the start of the invocation).
    pub fn new(defaults: EventDefaults, now: OffsetDateTime) -> Self {
        let mut definitions: Vec<(Arc<str>, Arc<str>)> = defaults
            .conversion_definitions
            .iter()
            .map(|(name, id)| (name.as_str().into(), id.as_str().into()))
            .collect();
        definitions.sort();
        Self {
            definitions,
            default_definition: defaults
                .default_conversion_definition_id
                .as_deref()
                .map(Arc::from),
            defaults,
            listed: None,
            oldest: now - Duration::days(7),
            latest: now + Duration::minutes(5),
        }
    }

    /// The same rules, resolving against the advertiser's listed definitions.
    pub fn with_definitions(self, listed: Arc<Definitions>) -> Self {
        Self {
            listed: Some(listed),
            ..self
        }
    }

    /// The definition of an event with `given` (its own `conversionDefinitionId`) and
    /// `conversion_type`, in this order: its own id; the configured entry for its type (an id
    /// or, when definitions are listed, a definition's name); a definition named like its type;
    /// the default. With listed definitions, the id must be one of them.
    fn resolve(
        &self,
        given: Option<&str>,
        conversion_type: &str,
        configured: Option<&Arc<str>>,
    ) -> Result<(Arc<str>, Option<&Definition>), Invalid> {
        let unknown = |what: String| {
            invalid(
                Reason::UnknownConversionDefinition,
                format!("{what}, which names none of the advertiser's conversion definitions"),
            )
        };
        let Some(listed) = self.listed.as_deref() else {
            return match given {
                Some(id) => Ok((id.into(), None)),
                None => configured
                    .or(self.default_definition.as_ref())
                    .map(|id| (id.clone(), None))
                    .ok_or_else(|| no_definition(conversion_type)),
            };
        };
        if let Some(id) = given {
            return listed
                .by_id(id)
                .map(|d| (d.id.clone(), Some(d)))
                .ok_or_else(|| {
                    unknown(format!(
                        "conversion type {conversion_type:?} has conversionDefinitionId {id:?}"
                    ))
                });
        }
        if let Some(value) = configured {
            return match listed.by_id_or_name(value) {
                NameLookup::One(d) => Ok((d.id.clone(), Some(d))),
                NameLookup::None => Err(unknown(format!(
                    "conversion type {conversion_type:?} is mapped to {value:?} in DSP_CONVERSION_DEFINITIONS"
                ))),
                NameLookup::Several => Err(invalid(
                    Reason::UnknownConversionDefinition,
                    format!("conversion type {conversion_type:?} is mapped to {value:?} in DSP_CONVERSION_DEFINITIONS, which names several conversion definitions: map it to an id"),
                )),
            };
        }
        match listed.by_name(conversion_type) {
            NameLookup::One(d) => return Ok((d.id.clone(), Some(d))),
            NameLookup::Several => {
                return Err(invalid(
                    Reason::UnknownConversionDefinition,
                    format!("conversion type {conversion_type:?} names several conversion definitions: map it to an id in DSP_CONVERSION_DEFINITIONS"),
                ))
            }
            NameLookup::None => {}
        }
        match &self.default_definition {
            Some(id) => match listed.by_id_or_name(id) {
                NameLookup::One(d) => Ok((d.id.clone(), Some(d))),
                _ => Err(unknown(format!(
                    "conversion type {conversion_type:?} falls to DSP_DEFAULT_CONVERSION_DEFINITION_ID {id:?}"
                ))),
            },
            None => Err(no_definition(conversion_type)),
        }
    }

    /// The defaults.
    pub fn defaults(&self) -> &EventDefaults {
        &self.defaults
    }

    /// The configured (type, definition id) of a conversion type.
    fn definition(&self, conversion_type: &str) -> Option<&(Arc<str>, Arc<str>)> {
        self.definitions
            .binary_search_by(|(name, _)| (**name).cmp(conversion_type))
            .ok()
            .and_then(|i| self.definitions.get(i))
    }
}

type Invalid = (Reason, String);

fn no_definition(conversion_type: &str) -> Invalid {
    invalid(
        Reason::NoConversionDefinition,
        format!(
            "no `conversionDefinitionId`, and conversion type {conversion_type:?} is not in \
             DSP_CONVERSION_DEFINITIONS, names no conversion definition, and \
             DSP_DEFAULT_CONVERSION_DEFINITION_ID is not set"
        ),
    )
}

fn invalid(reason: Reason, message: impl Into<String>) -> Invalid {
    (reason, message.into())
}

/// Validates and maps one record. `request_source` is the `source` of the DSP request object
/// the record came in, if any, as written there.
pub fn validate(
    raw: &RawEvent<'_>,
    request_source: Option<&str>,
    rules: &Rules,
    origin: &Origin,
) -> Result<Validated, Rejection> {
    map(raw, request_source, rules, origin).map_err(|(reason, message)| Rejection {
        reason,
        message,
        event: Some(redact(raw)),
    })
}

fn string<'a>(field: Field<'a>, name: &str) -> Result<Cow<'a, str>, Invalid> {
    field.as_str().map_err(|e| match e {
        FieldTypeError::NotString(found) => invalid(
            Reason::InvalidField,
            format!("field `{name}` must be a string, found {found}"),
        ),
        FieldTypeError::NotNumber => {
            invalid(Reason::InvalidField, format!("field `{name}` is invalid"))
        }
    })
}

fn required<'a>(field: Option<Field<'a>>, name: &str) -> Result<Cow<'a, str>, Invalid> {
    let value = present(field)
        .ok_or_else(|| invalid(Reason::MissingField, format!("field `{name}` is required")))?;
    let s = string(value, name)?;
    if trim(&s).is_empty() {
        return Err(invalid(
            Reason::MissingField,
            format!("field `{name}` is empty"),
        ));
    }
    Ok(s)
}

/// Picks the field of one shape or the other; both at once is an error.
fn either<'a>(
    dsp: Option<Field<'a>>,
    dsp_name: &'static str,
    simple: Option<Field<'a>>,
    simple_name: &'static str,
) -> Result<(Option<Field<'a>>, &'static str), Invalid> {
    match (present(dsp), present(simple)) {
        (Some(_), Some(_)) => Err(invalid(
            Reason::ConflictingFields,
            format!("fields `{dsp_name}` and `{simple_name}` are both set; use one"),
        )),
        (Some(f), None) => Ok((Some(f), dsp_name)),
        (None, Some(f)) => Ok((Some(f), simple_name)),
        (None, None) => Ok((
            None,
            if present(simple).is_some() {
                simple_name
            } else {
                dsp_name
            },
        )),
    }
}

fn is_simple(raw: &RawEvent<'_>) -> bool {
    [
        raw.event_time,
        raw.user_identifier,
        raw.conversion_type,
        raw.conversion_value,
    ]
    .into_iter()
    .any(|f| present(f).is_some())
}

fn map(
    raw: &RawEvent<'_>,
    request_source: Option<&str>,
    rules: &Rules,
    origin: &Origin,
) -> Result<Validated, Invalid> {
    let simple = is_simple(raw);
    let names =
        |dsp: &'static str, simple_name: &'static str| if simple { simple_name } else { dsp };

    let (time_field, time_name) = either(raw.timestamp, "timestamp", raw.event_time, "eventTime")?;
    let timestamp = timestamp(
        required(time_field, names(time_name, "eventTime"))?,
        time_name,
        rules,
    )?;

    let (name_field, name_name) = either(raw.name, "name", raw.conversion_type, "conversionType")?;
    let name_text = required(name_field, names(name_name, "conversionType"))?;
    let configured = rules.definition(trim(&name_text));
    let name: Arc<str> = match configured {
        Some((name, _)) => name.clone(),
        None => trim(&name_text).into(),
    };

    let defaults = &rules.defaults;
    let given = match present(raw.conversion_definition_id) {
        Some(f) => Some(required(Some(f), "conversionDefinitionId")?),
        None => None,
    };
    let (conversion_definition_id, definition) = rules.resolve(
        given.as_deref().map(trim),
        &name,
        configured.map(|(_, id)| id),
    )?;

    let country_code = match present(raw.country_code) {
        Some(f) => {
            let s = string(f, "countryCode")?;
            country_code(trim(&s)).ok_or_else(|| {
                invalid(
                    Reason::InvalidCountryCode,
                    format!("field `countryCode`: {s:?} is not an ISO 3166-1 alpha-2 code (e.g. US, GB, DE)"),
                )
            })?
        }
        None => defaults
            .country_code
            .as_deref()
            .and_then(country_code)
            .ok_or_else(|| {
                invalid(
                    Reason::MissingField,
                    "field `countryCode` is required (or set DSP_DEFAULT_COUNTRY_CODE)",
                )
            })?,
    };

    // The given dedupe id is looked for in each identifier as it is read.
    let given_dedupe_id = present(raw.client_dedupe_id).and_then(|f| f.as_str().ok());
    let mut dedupe = dedupe::Given::new(given_dedupe_id.as_deref().map(trim));
    let (keys_field, _) = either(
        raw.match_keys,
        "matchKeys",
        raw.user_identifier,
        "userIdentifier",
    )?;
    let match_keys = if present(raw.user_identifier).is_some() {
        user_identifier(raw, Some(country_code), &mut dedupe)?
    } else {
        if present(raw.user_identifier_type).is_some() {
            return Err(invalid(
                Reason::MissingField,
                "field `userIdentifier` is required with `userIdentifierType`",
            ));
        }
        match keys_field {
            Some(f) => match_keys(f, Some(country_code), &mut dedupe)?,
            None => {
                return Err(invalid(
                    Reason::MissingField,
                    format!(
                        "field `{}` is required",
                        names("matchKeys", "userIdentifier")
                    ),
                ))
            }
        }
    };

    let (value_field, value_name) =
        either(raw.value, "value", raw.conversion_value, "conversionValue")?;
    let value = match value_field {
        None => None,
        Some(f) => {
            let text = f.number_text().map_err(|_| {
                invalid(
                    Reason::InvalidValue,
                    format!("field `{value_name}` must be a number"),
                )
            })?;
            if text.is_empty() {
                None
            } else {
                let amount = Amount::parse(&text).map_err(|e| {
                    invalid(
                        Reason::InvalidValue,
                        format!("field `{value_name}`: {text:?} {e}"),
                    )
                })?;
                if amount.is_negative() && definition.is_some_and(|d| !d.allows_negative_values()) {
                    return Err(invalid(
                        Reason::InvalidValue,
                        format!(
                            "field `{value_name}`: {text:?} is negative, which conversion definition {conversion_definition_id} (OFF_AMAZON_PURCHASES) does not allow"
                        ),
                    ));
                }
                Some(amount)
            }
        }
    };

    let currency_code = match present(raw.currency_code) {
        Some(f) => {
            let s = string(f, "currencyCode")?;
            Some(CurrencyCode::parse(trim(&s)).ok_or_else(|| {
                invalid(
                    Reason::InvalidCurrencyCode,
                    format!(
                        "field `currencyCode`: {s:?} is not one of {}",
                        CurrencyCode::ALL.join(" ")
                    ),
                )
            })?)
        }
        None => defaults.currency_code,
    };

    let units_sold = match present(raw.units_sold) {
        None => None,
        Some(f) => {
            let text = f.number_text().unwrap_or(Cow::Borrowed(""));
            Some(text.parse::<u64>().map_err(|_| {
                invalid(
                    Reason::InvalidField,
                    format!(
                        "field `unitsSold` must be a non-negative integer, found {}",
                        f.to_json()
                    ),
                )
            })?)
        }
    };

    let data_processing_options = match present(raw.data_processing_options) {
        None => None,
        Some(f) => {
            let s = string(f, "dataProcessingOptions")?;
            if trim(&s) != LIMITED_DATA_USE {
                return Err(invalid(
                    Reason::InvalidField,
                    format!("field `dataProcessingOptions`: {s:?} is not {LIMITED_DATA_USE}"),
                ));
            }
            Some(LIMITED_DATA_USE)
        }
    };

    let named = match present(raw.source) {
        Some(f) => {
            let s = string(f, "source")?;
            Some(Source::parse(trim(&s)).ok_or_else(|| {
                invalid(
                    Reason::InvalidSource,
                    format!("field `source`: {s:?} is not AMAZON_AD_TAG or SERVER_TO_SERVER"),
                )
            })?)
        }
        None => match request_source {
            None => None,
            Some(s) => Some(Source::parse(trim(s)).ok_or_else(|| {
                invalid(
                    Reason::InvalidSource,
                    format!("request `source`: {s:?} is not AMAZON_AD_TAG or SERVER_TO_SERVER"),
                )
            })?),
        },
    };
    // A definition has one source, and the DSP imports its events only under it.
    let source = match definition.and_then(|d| d.source.as_ref()) {
        None => named.unwrap_or(defaults.source),
        Some(DefinitionSource::Import(own)) => match named {
            Some(other) if other != *own => {
                return Err(invalid(
                    Reason::SourceMismatch,
                    format!(
                        "source {} differs from the source of conversion definition {conversion_definition_id}, {}",
                        other.as_str(),
                        own.as_str()
                    ),
                ))
            }
            _ => *own,
        },
        Some(DefinitionSource::Other(other)) => {
            return Err(invalid(
                Reason::UnsupportedSource,
                format!(
                    "conversion definition {conversion_definition_id} has source {other}, for which events cannot be imported"
                ),
            ))
        }
    };

    let client_dedupe_id = match present(raw.client_dedupe_id) {
        Some(f) => {
            let given = required(Some(f), "clientDedupeId")?;
            Text::from(dedupe.sent(trim(&given)).as_ref())
        }
        None => origin.dedupe_id().into(),
    };

    Ok(Validated {
        event: ConversionEvent {
            conversion_definition_id,
            name,
            timestamp,
            country_code,
            match_keys,
            client_dedupe_id,
            value,
            currency_code,
            units_sold,
            data_processing_options,
        },
        source,
        origin: origin.clone(),
    })
}

fn timestamp(text: Cow<'_, str>, name: &str, rules: &Rules) -> Result<Text, Invalid> {
    let t = trim(&text);
    let parsed = timestamp::parse(t).map_err(|e| {
        invalid(
            Reason::InvalidTimestamp,
            format!("field `{name}`: {t:?} {e}; expected e.g. 2026-11-28T09:30:00Z or 2026-11-28T10:30:00+01:00"),
        )
    })?;
    if parsed.instant < rules.oldest {
        return Err(invalid(
            Reason::TimestampTooOld,
            format!("field `{name}`: {t} is more than 7 days old"),
        ));
    }
    if parsed.instant > rules.latest {
        return Err(invalid(
            Reason::TimestampInFuture,
            format!("field `{name}`: {t} is more than 5 minutes in the future"),
        ));
    }
    Ok(parsed.canonical)
}

fn user_identifier(
    raw: &RawEvent<'_>,
    country: Option<&str>,
    dedupe: &mut dedupe::Given<'_>,
) -> Result<SmallVec<[MatchKey; 1]>, Invalid> {
    let value = required(raw.user_identifier, "userIdentifier")?;
    let kind = match present(raw.user_identifier_type) {
        Some(f) => {
            let s = string(f, "userIdentifierType")?;
            MatchKeyType::parse_any_case(&s).ok_or_else(|| {
                invalid(
                    Reason::InvalidMatchKey,
                    format!(
                        "field `userIdentifierType`: {s:?} is not one of {}",
                        MatchKeyType::NAMES
                    ),
                )
            })?
        }
        None => MatchKeyType::detect(&value).ok_or_else(|| {
            invalid(
                Reason::AmbiguousIdentifier,
                "field `userIdentifier` is not an email, a UUID MAID or a phone number; set `userIdentifierType`",
            )
        })?,
    };
    dedupe.see(Some(kind), &value);
    let prepared = match_key::prepare(kind, &value, country).map_err(|e| {
        invalid(
            Reason::InvalidMatchKey,
            format!("field `userIdentifier` ({kind:?}) {e}"),
        )
    })?;
    Ok(smallvec![MatchKey {
        kind,
        values: smallvec![prepared],
    }])
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatchKey<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    values: Vec<Cow<'a, str>>,
}

fn parse_match_keys<'a>(f: &Field<'a>) -> Option<Vec<RawMatchKey<'a>>> {
    serde_json::from_str(f.text()).ok()
}

fn match_keys(
    f: Field<'_>,
    country: Option<&str>,
    dedupe: &mut dedupe::Given<'_>,
) -> Result<SmallVec<[MatchKey; 1]>, Invalid> {
    let keys = parse_match_keys(&f).ok_or_else(|| {
        invalid(
            Reason::InvalidMatchKey,
            "field `matchKeys` must be an array of {\"type\", \"values\": [strings]}",
        )
    })?;
    if keys.is_empty() {
        return Err(invalid(
            Reason::InvalidMatchKey,
            "field `matchKeys` is empty",
        ));
    }
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| {
            let kind = MatchKeyType::parse_any_case(&key.kind).ok_or_else(|| {
                invalid(
                    Reason::InvalidMatchKey,
                    format!(
                        "field `matchKeys[{i}].type`: {:?} is not one of {}",
                        key.kind,
                        MatchKeyType::NAMES
                    ),
                )
            })?;
            if key.values.is_empty() {
                return Err(invalid(
                    Reason::InvalidMatchKey,
                    format!("field `matchKeys[{i}].values` is empty"),
                ));
            }
            for v in &key.values {
                dedupe.see(Some(kind), v);
            }
            let values = key
                .values
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    match_key::prepare(kind, v, country).map_err(|e| {
                        invalid(
                            Reason::InvalidMatchKey,
                            format!("field `matchKeys[{i}].values[{j}]` ({kind:?}) {e}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(MatchKey { kind, values })
        })
        .collect()
}

/// The record as far as it could be read, every identifier hashed, for the rejects report.
pub fn redact(raw: &RawEvent<'_>) -> serde_json::Value {
    let country = present(raw.country_code)
        .and_then(|f| f.as_str().ok())
        .and_then(|s| country_code(trim(&s)));
    let mut out = serde_json::Map::new();
    for (name, field) in raw.fields() {
        let value = match name {
            "userIdentifier" => {
                let kind = present(raw.user_identifier_type)
                    .and_then(|f| f.as_str().ok())
                    .and_then(|s| MatchKeyType::parse_any_case(&s));
                match field.as_str() {
                    Ok(s) => match_key::redact(kind.or_else(|| MatchKeyType::detect(&s)), &s, country).into(),
                    Err(_) => serde_json::Value::Null,
                }
            }
            "matchKeys" => match parse_match_keys(&field) {
                Some(keys) => keys
                    .iter()
                    .map(|k| {
                        let kind = MatchKeyType::parse_any_case(&k.kind);
                        serde_json::json!({
                            "type": k.kind,
                            "values": k.values.iter().map(|v| match_key::redact(kind, v, country)).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
                None => serde_json::Value::Null,
            },
            "clientDedupeId" => match field.as_str() {
                Ok(s) => match dedupe::for_record(trim(&s), raw) {
                    Cow::Owned(hashed) => hashed.into(),
                    Cow::Borrowed(_) => field.to_json(),
                },
                Err(_) => field.to_json(),
            },
            _ => field.to_json(),
        };
        out.insert(name.to_owned(), value);
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests;
