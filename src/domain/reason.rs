//! Why an event was rejected: one code per rule, used by validation, the DSP client and the
//! rejects report alike.

use std::fmt;

super::code_enum! {
    /// The reason code of a rejection.
    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Reason {
        /// The record is not valid JSON.
        InvalidJson = "INVALID_JSON",
        /// The CSV row or header cannot be read.
        InvalidCsv = "INVALID_CSV",
        /// The text is not UTF-8.
        InvalidEncoding = "INVALID_ENCODING",
        /// A record (line, row, element) is longer than the limit.
        RecordTooLarge = "RECORD_TOO_LARGE",
        /// The object is larger than the limit after decompression.
        ObjectTooLarge = "OBJECT_TOO_LARGE",
        /// The object's format cannot be told from its key or content type.
        UnsupportedFormat = "UNSUPPORTED_FORMAT",
        /// The object no longer exists.
        ObjectNotFound = "OBJECT_NOT_FOUND",
        /// The gzip stream is corrupt or truncated.
        CorruptGzip = "CORRUPT_GZIP",
        /// A field or column this function does not know.
        UnknownField = "UNKNOWN_FIELD",
        /// A required field is missing.
        MissingField = "MISSING_FIELD",
        /// A field has the wrong type or value.
        InvalidField = "INVALID_FIELD",
        /// Two fields of the two event shapes say the same thing.
        ConflictingFields = "CONFLICTING_FIELDS",
        /// The timestamp is not ISO-8601 with an offset.
        InvalidTimestamp = "INVALID_TIMESTAMP",
        /// The timestamp is more than 7 days old.
        TimestampTooOld = "TIMESTAMP_TOO_OLD",
        /// The timestamp is more than 5 minutes in the future.
        TimestampInFuture = "TIMESTAMP_IN_FUTURE",
        /// Not an ISO 3166-1 alpha-2 code.
        InvalidCountryCode = "INVALID_COUNTRY_CODE",
        /// Not a currency the DSP accepts.
        InvalidCurrencyCode = "INVALID_CURRENCY_CODE",
        /// Not a usable conversion value.
        InvalidValue = "INVALID_VALUE",
        /// A match key or identifier that cannot be used.
        InvalidMatchKey = "INVALID_MATCH_KEY",
        /// A `userIdentifier` whose type cannot be told.
        AmbiguousIdentifier = "AMBIGUOUS_IDENTIFIER",
        /// No `conversionDefinitionId` and no mapping for the conversion type.
        NoConversionDefinition = "NO_CONVERSION_DEFINITION",
        /// The conversion definition named (by id, name or configuration) is not one of the
        /// advertiser's, or a name names several.
        UnknownConversionDefinition = "UNKNOWN_CONVERSION_DEFINITION",
        /// The event names a source other than its conversion definition's.
        SourceMismatch = "SOURCE_MISMATCH",
        /// The event's conversion definition has a source whose events cannot be imported (`MMP`).
        UnsupportedSource = "UNSUPPORTED_SOURCE",
        /// A source other than `AMAZON_AD_TAG` / `SERVER_TO_SERVER`.
        InvalidSource = "INVALID_SOURCE",
        /// The DSP answered 400 to a request holding only this event.
        DspBadRequest = "DSP_BAD_REQUEST",
    }
    else {
        /// The DSP rejected the event; its code.
        Dsp(String),
    }
}

impl Reason {
    /// The code written to the rejects report.
    pub fn code(&self) -> String {
        match self {
            Reason::Dsp(code) if !code.is_empty() => format!("DSP_{code}"),
            other => other.static_code().unwrap_or("DSP_REJECTED").to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_rules_and_of_the_dsp() {
        assert_eq!(Reason::InvalidJson.code(), "INVALID_JSON");
        assert_eq!(Reason::DspBadRequest.to_string(), "DSP_BAD_REQUEST");
        assert_eq!(
            Reason::Dsp("INVALID_ARGUMENT".into()).code(),
            "DSP_INVALID_ARGUMENT"
        );
        assert_eq!(Reason::Dsp(String::new()).code(), "DSP_REJECTED");
        for (reason, code) in Reason::ALL.into_iter().zip(Reason::CODES) {
            assert_eq!(reason.code(), code);
            assert_eq!(Reason::parse(code), Some(reason));
        }
    }
}
