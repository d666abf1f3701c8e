//! A record as read, before validation: every field of both event shapes, borrowed from the
//! input (a JSON text or a CSV row) so that reading costs no copies.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// One field's value as it appears in the input.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// A JSON value, as its (valid JSON) text.
    Json(&'a str),
    /// A JSON string known to have no escapes, as its text with the quotes (the fast path's).
    Plain(&'a str),
    /// A CSV cell: always text.
    Text(&'a str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| Field::Json(raw.get()))
    }
}

/// What a field holds when it is not what the rule wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldTypeError {
    /// Expected a string, found another JSON type.
    NotString(&'static str),
    /// Expected a number, found something else.
    NotNumber,
}

impl<'a> Field<'a> {
    /// The field as a string; JSON strings only (borrowed unless it has escapes).
    pub fn as_str(&self) -> Result<Cow<'a, str>, FieldTypeError> {
        match *self {
            Field::Text(s) => Ok(Cow::Borrowed(s)),
            Field::Plain(text) => Ok(Cow::Borrowed(unquote(text))),
            Field::Json(text) => {
                let bytes = text.as_bytes();
                if bytes.first() != Some(&b'"') {
                    return Err(FieldTypeError::NotString(json_type(text)));
                }
                let inner = &text[1..text.len() - 1];
                if !inner.contains('\\') {
                    return Ok(Cow::Borrowed(inner));
                }
                serde_json::from_str::<String>(text)
                    .map(Cow::Owned)
                    .map_err(|_| FieldTypeError::NotString("string"))
            }
        }
    }

    /// The decimal text of a numeric field: a JSON number, or a string holding one (CSV cells
    /// and JSON producers that quote numbers).
    pub fn number_text(&self) -> Result<Cow<'a, str>, FieldTypeError> {
        match *self {
            Field::Text(s) => Ok(Cow::Borrowed(trim(s))),
            Field::Plain(text) => Ok(Cow::Borrowed(trim(unquote(text)))),
            Field::Json(text) => match text.as_bytes().first() {
                Some(b'-' | b'0'..=b'9') => Ok(Cow::Borrowed(text)),
                Some(b'"') => match self.as_str() {
                    Ok(Cow::Borrowed(s)) => Ok(Cow::Borrowed(trim(s))),
                    Ok(Cow::Owned(s)) => Ok(Cow::Owned(trim(&s).to_owned())),
                    Err(_) => Err(FieldTypeError::NotNumber),
                },
                _ => Err(FieldTypeError::NotNumber),
            },
        }
    }

    /// The field as a JSON value, for the rejects report.
    pub fn to_json(&self) -> serde_json::Value {
        match *self {
            Field::Text(s) => serde_json::Value::String(s.to_owned()),
            Field::Plain(text) => serde_json::Value::String(unquote(text).to_owned()),
            Field::Json(text) => serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
        }
    }

    /// The field's text: JSON text (strings with their quotes), or the CSV cell.
    pub fn text(&self) -> &'a str {
        match *self {
            Field::Json(text) | Field::Plain(text) | Field::Text(text) => text,
        }
    }

    /// Whether the field holds JSON `null` (which counts as absent).
    fn is_null(&self) -> bool {
        matches!(self, Field::Json("null"))
    }
}

/// `str::trim`, without its Unicode tables when both ends are visible ASCII (nearly always):
/// validation trims every field, so this runs about ten times per event.
pub fn trim(s: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|b| (0x21..0x7f).contains(b));
    let bytes = s.as_bytes();
    if visible(bytes.first()) && visible(bytes.last()) {
        s
    } else {
        s.trim()
    }
}

/// A JSON string's text without its quotes.
fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

fn json_type(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// Declares the fields of a record once, as `(rust_name, "jsonName")` with their docs, and
/// generates from that list: [`RawEvent`] (serde reads each field by its JSON name),
/// [`FIELD_NAMES`], the [`index`] of each field, [`RawEvent::field_mut`] and [`RawEvent::fields`].
macro_rules! raw_event {
    ($( $(#[$doc:meta])* ($field:ident, $name:literal), )+) => {
        /// One record of either event shape (docs/inputs.md). Unknown fields are an error: a
        /// typo in a field name would otherwise drop data silently.
        #[derive(Debug, Default, Clone, Copy, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawEvent<'a> {
            $(
                $(#[$doc])*
                #[serde(borrow, rename = $name)]
                pub $field: Option<Field<'a>>,
            )+
        }

        /// The field names, in the order of [`RawEvent::fields`].
        pub const FIELD_NAMES: [&str; [$($name),+].len()] = [$($name),+];

        /// Each field's index in [`FIELD_NAMES`], named after the field: what the readers use
        /// with [`RawEvent::field_mut`].
        #[allow(non_upper_case_globals)]
        pub mod index {
            #[allow(non_camel_case_types)]
            enum Index {
                $($field,)+
            }

            $(
                #[doc = concat!("The index of `", $name, "`.")]
                pub const $field: usize = Index::$field as usize;
            )+
        }

        impl<'a> RawEvent<'a> {
            /// Mutable access to a field by its [`index`]; used by the readers.
            pub fn field_mut(&mut self, index: usize) -> Option<&mut Option<Field<'a>>> {
                Some(match index {
                    $( index::$field => &mut self.$field, )+
                    _ => return None,
                })
            }

            /// The present, non-null fields with their names.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, Field<'a>)> + '_ {
                [$(self.$field),+]
                    .into_iter()
                    .zip(FIELD_NAMES)
                    .filter_map(|(f, name)| f.filter(|f| !f.is_null()).map(|f| (name, f)))
            }
        }
    };
}

raw_event! {
    /// DSP shape: id of the conversion definition.
    (conversion_definition_id, "conversionDefinitionId"),
    /// DSP shape: name of the event.
    (name, "name"),
    /// DSP shape: ISO-8601 time with offset.
    (timestamp, "timestamp"),
    /// Country of the event.
    (country_code, "countryCode"),
    /// DSP shape: `[{"type", "values"}]`.
    (match_keys, "matchKeys"),
    /// Deduplication id.
    (client_dedupe_id, "clientDedupeId"),
    /// DSP shape: value of the conversion.
    (value, "value"),
    /// Currency of the value.
    (currency_code, "currencyCode"),
    /// Units sold.
    (units_sold, "unitsSold"),
    /// DSP shape: `LIMITED_DATA_USE`.
    (data_processing_options, "dataProcessingOptions"),
    /// Simple shape: time of the event.
    (event_time, "eventTime"),
    /// Simple shape: value of the conversion.
    (conversion_value, "conversionValue"),
    /// Simple shape: the one user identifier.
    (user_identifier, "userIdentifier"),
    /// Simple shape: its type, when not guessed.
    (user_identifier_type, "userIdentifierType"),
    /// Simple shape: the conversion type, mapped to a definition.
    (conversion_type, "conversionType"),
    /// The event's source, overriding the request's and the default.
    (source, "source"),
}

impl<'a> RawEvent<'a> {
    /// Parses one JSON object: the fast path for the common record, serde_json for the rest
    /// (and for every error).
    pub fn from_json(text: &'a str) -> serde_json::Result<Self> {
        let mut event = RawEvent::default();
        match super::scan::event(text, &mut event) {
            Some(()) => Ok(event),
            None => serde_json::from_str(text),
        }
    }
}

/// Treats JSON `null` as absent.
pub fn present<'a>(field: Option<Field<'a>>) -> Option<Field<'a>> {
    field.filter(|f| !f.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn trim_is_str_trim(s in "[ \t\u{a0}\u{2003}a-z\u{7f}é]{0,6}") {
            proptest::prop_assert_eq!(trim(&s), s.trim());
        }
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let ev = RawEvent::from_json(r#"{"name":"buy","conversionType":"a\"b"}"#).unwrap();
        assert!(matches!(
            ev.name.unwrap().as_str().unwrap(),
            Cow::Borrowed("buy")
        ));
        assert_eq!(ev.conversion_type.unwrap().as_str().unwrap(), "a\"b");
    }

    #[test]
    fn types_are_checked_per_field() {
        let ev = RawEvent::from_json(r#"{"name":5,"value":"12.5","unitsSold":true}"#).unwrap();
        assert_eq!(
            ev.name.unwrap().as_str(),
            Err(FieldTypeError::NotString("number"))
        );
        assert_eq!(ev.value.unwrap().number_text().unwrap(), "12.5");
        assert_eq!(
            ev.units_sold.unwrap().number_text(),
            Err(FieldTypeError::NotNumber)
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = RawEvent::from_json(r#"{"conversionvalue":1}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `conversionvalue`"),
            "{err}"
        );
    }

    #[test]
    fn null_is_absent() {
        let ev = RawEvent::from_json(r#"{"name":null,"value":1}"#).unwrap();
        let names: Vec<_> = ev.fields().map(|(n, _)| n).collect();
        assert_eq!(names, ["value"]);
    }

    #[test]
    fn indices_name_their_fields() {
        assert_eq!(
            FIELD_NAMES[index::conversion_definition_id],
            "conversionDefinitionId"
        );
        assert_eq!(
            FIELD_NAMES[index::user_identifier_type],
            "userIdentifierType"
        );
        assert_eq!(index::source, FIELD_NAMES.len() - 1);
        let mut ev = RawEvent::default();
        *ev.field_mut(index::units_sold).unwrap() = Some(Field::Text("2"));
        assert!(matches!(ev.units_sold, Some(Field::Text("2"))));
        assert!(ev.field_mut(FIELD_NAMES.len()).is_none());
    }

    #[test]
    fn field_names_match_serde() {
        for (i, name) in FIELD_NAMES.iter().enumerate() {
            let text = format!("{{\"{name}\":\"x\"}}");
            let mut parsed = RawEvent::from_json(&text).unwrap();
            assert!(parsed.field_mut(i).unwrap().is_some(), "{name}");
        }
    }
}
