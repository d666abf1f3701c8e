//! Why an event was rejected: one code per rule, used by validation, the DSP client and the
//! rejects report alike.

use std::fmt;

/// The reason code of a rejection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The record is not valid JSON.
    InvalidJson,
    /// The CSV row or header cannot be read.
    InvalidCsv,
    /// The text is not UTF-8.
    InvalidEncoding,
    /// A record (line, row, element) is longer than the limit.
    RecordTooLarge,
    /// The object is larger than the limit after decompression.
    ObjectTooLarge,
    /// The object's format cannot be told from its key or content type.
    UnsupportedFormat,
    /// The object no longer exists.
    ObjectNotFound,
    /// The gzip stream is corrupt or truncated.
    CorruptGzip,
    /// A field or column this function does not know.
    UnknownField,
    /// A required field is missing.
    MissingField,
    /// A field has the wrong type or value.
    InvalidField,
    /// Two fields of the two event shapes say the same thing.
    ConflictingFields,
    /// The timestamp is not ISO-8601 with an offset.
    InvalidTimestamp,
    /// The timestamp is more than 7 days old.
    TimestampTooOld,
    /// The timestamp is more than 5 minutes in the future.
    TimestampInFuture,
    /// Not an ISO 3166-1 alpha-2 code.
    InvalidCountryCode,
    /// Not a currency the DSP accepts.
    InvalidCurrencyCode,
    /// Not a usable conversion value.
    InvalidValue,
    /// A match key or identifier that cannot be used.
    InvalidMatchKey,
    /// A `userIdentifier` whose type cannot be told.
    AmbiguousIdentifier,
    /// No `conversionDefinitionId` and no mapping for the conversion type.
    NoConversionDefinition,
    /// The conversion definition named (by id, name or configuration) is not one of the
    /// advertiser's, or a name names several.
    UnknownConversionDefinition,
    /// The event names a source other than its conversion definition's.
    SourceMismatch,
    /// The event's conversion definition has a source whose events cannot be imported (`MMP`).
    UnsupportedSource,
    /// A source other than `AMAZON_AD_TAG` / `SERVER_TO_SERVER`.
    InvalidSource,
    /// The DSP rejected the event; its code.
    Dsp(String),
    /// The DSP answered 400 to a request holding only this event.
    DspBadRequest,
}

impl Reason {
    /// The code written to the rejects report.
    pub fn code(&self) -> String {
        match self {
            Reason::Dsp(code) if !code.is_empty() => format!("DSP_{code}"),
            Reason::Dsp(_) => "DSP_REJECTED".to_owned(),
            other => other.static_code().to_owned(),
        }
    }

    fn static_code(&self) -> &'static str {
        match self {
            Reason::InvalidJson => "INVALID_JSON",
            Reason::InvalidCsv => "INVALID_CSV",
            Reason::InvalidEncoding => "INVALID_ENCODING",
            Reason::RecordTooLarge => "RECORD_TOO_LARGE",
            Reason::ObjectTooLarge => "OBJECT_TOO_LARGE",
            Reason::UnsupportedFormat => "UNSUPPORTED_FORMAT",
            Reason::ObjectNotFound => "OBJECT_NOT_FOUND",
            Reason::CorruptGzip => "CORRUPT_GZIP",
            Reason::UnknownField => "UNKNOWN_FIELD",
            Reason::MissingField => "MISSING_FIELD",
            Reason::InvalidField => "INVALID_FIELD",
            Reason::ConflictingFields => "CONFLICTING_FIELDS",
            Reason::InvalidTimestamp => "INVALID_TIMESTAMP",
            Reason::TimestampTooOld => "TIMESTAMP_TOO_OLD",
            Reason::TimestampInFuture => "TIMESTAMP_IN_FUTURE",
            Reason::InvalidCountryCode => "INVALID_COUNTRY_CODE",
            Reason::InvalidCurrencyCode => "INVALID_CURRENCY_CODE",
            Reason::InvalidValue => "INVALID_VALUE",
            Reason::InvalidMatchKey => "INVALID_MATCH_KEY",
            Reason::AmbiguousIdentifier => "AMBIGUOUS_IDENTIFIER",
            Reason::NoConversionDefinition => "NO_CONVERSION_DEFINITION",
            Reason::UnknownConversionDefinition => "UNKNOWN_CONVERSION_DEFINITION",
            Reason::SourceMismatch => "SOURCE_MISMATCH",
            Reason::UnsupportedSource => "UNSUPPORTED_SOURCE",
            Reason::InvalidSource => "INVALID_SOURCE",
            Reason::Dsp(_) => "DSP_REJECTED",
            Reason::DspBadRequest => "DSP_BAD_REQUEST",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

/// A permanent rejection: the reason, a message that names the field and the rule (never a raw
/// identifier), and the event as far as it could be read, identifiers hashed.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The reason code.
    pub reason: Reason,
    /// What is wrong.
    pub message: String,
    /// The redacted event, `None` when nothing could be read.
    pub event: Option<serde_json::Value>,
}

impl Rejection {
    /// A rejection of a record that could not be read at all.
    pub fn unreadable(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            event: None,
        }
    }
}
