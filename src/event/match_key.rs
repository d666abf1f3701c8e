//! Match keys: the user identifiers of an event, normalized and SHA-256-hashed the way the DSP
//! expects (docs/inputs.md, "Normalization"). This is where emails, phones, names and addresses are hashed.

use std::cell::RefCell;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use super::phone::{self, PhoneError};
use crate::read::record::trim;

crate::domain::code_enum! {
    /// The kind of a match key.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum MatchKeyType {
        /// Street address.
        Address = "ADDRESS",
        /// City.
        City = "CITY",
        /// Email address.
        Email = "EMAIL",
        /// First name.
        FirstName = "FIRST_NAME",
        /// Last name.
        LastName = "LAST_NAME",
        /// Mobile advertising id; sent as given.
        Maid = "MAID",
        /// Phone number.
        Phone = "PHONE",
        /// Postal code.
        Postal = "POSTAL",
        /// LiveRamp id; sent as given.
        RampId = "RAMP_ID",
        /// State or province.
        State = "STATE",
    }
}

impl MatchKeyType {
    /// Parses the DSP's name of a type in any case, ignoring the spaces around it.
    pub fn parse_any_case(s: &str) -> Option<Self> {
        let s = trim(s);
        Self::CODES
            .iter()
            .position(|code| code.eq_ignore_ascii_case(s))
            .map(|i| Self::ALL[i])
    }

    /// Whether the DSP wants values of this type hashed (all but MAID and RAMP_ID).
    pub fn is_hashed(self) -> bool {
        !matches!(self, Self::Maid | Self::RampId)
    }

    /// Guesses the type of a simple-shape `userIdentifier`: EMAIL if it has `@`, MAID if it is a
    /// UUID, PHONE if it looks like a phone number; `None` when it is ambiguous.
    pub fn detect(value: &str) -> Option<Self> {
        let v = trim(value);
        if v.contains('@') {
            Some(Self::Email)
        } else if is_uuid(v) {
            Some(Self::Maid)
        } else if is_phone(v) {
            Some(Self::Phone)
        } else {
            None
        }
    }
}

/// One match key of an event: a type and its values, ready for the DSP.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct MatchKey {
    /// The type.
    #[serde(rename = "type")]
    pub kind: MatchKeyType,
    /// The values; inline when there is one.
    pub values: SmallVec<[MatchValue; 1]>,
}

/// One value of a match key as the DSP receives it.
#[derive(Clone, PartialEq, Eq)]
pub enum MatchValue {
    /// A SHA-256 digest, sent as lower-case hex (kept as bytes: hex is written straight into
    /// the request body).
    Sha256([u8; 32]),
    /// A MAID or RAMP id, sent as given (trimmed).
    Given(String),
}

/// The value as sent.
impl fmt::Display for MatchValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha256(digest) => f.write_str(&hex::encode(digest)),
            Self::Given(s) => f.write_str(s),
        }
    }
}

/// Never prints a given value: MAIDs and RAMP ids are raw identifiers.
impl fmt::Debug for MatchValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha256(_) => write!(f, "Sha256({self})"),
            Self::Given(s) => write!(f, "Given({} chars)", s.chars().count()),
        }
    }
}

impl Serialize for MatchValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Compares the value as sent.
impl PartialEq<str> for MatchValue {
    fn eq(&self, other: &str) -> bool {
        match self {
            Self::Sha256(digest) => hex::encode(digest) == other,
            Self::Given(s) => s == other,
        }
    }
}

impl PartialEq<&str> for MatchValue {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl PartialEq<String> for MatchValue {
    fn eq(&self, other: &String) -> bool {
        self == other.as_str()
    }
}

/// Never prints values: MAIDs and RAMP ids are raw identifiers.
impl fmt::Debug for MatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MatchKey({:?}, {} value(s))",
            self.kind,
            self.values.len()
        )
    }
}

/// Why a match-key value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Nothing is left after normalization.
    #[error("is empty after normalization")]
    Empty,
    /// An email without `@`.
    #[error("is not an email address (no @)")]
    NotEmail,
    /// Not even a possible phone number.
    #[error(transparent)]
    Phone(#[from] PhoneError),
}

/// The value the DSP receives for `raw`: normalized then hashed, passed through when it already
/// is a SHA-256 hex digest (in any case), or (MAID, RAMP_ID) trimmed and sent as given.
/// `country` is the event's ISO 3166-1 alpha-2 code: national phone numbers take its calling code.
pub fn prepare(
    kind: MatchKeyType,
    raw: &str,
    country: Option<&str>,
) -> Result<MatchValue, ValueError> {
    let trimmed = trim(raw);
    if !kind.is_hashed() {
        return if trimmed.is_empty() {
            Err(ValueError::Empty)
        } else {
            Ok(MatchValue::Given(trimmed.to_owned()))
        };
    }
    if let Some(digest) = parse_hex(trimmed) {
        return Ok(MatchValue::Sha256(digest));
    }
    NORMALIZED.with(|buf| {
        let mut buf = buf.borrow_mut();
        normalize_into(kind, trimmed, country, &mut buf)?;
        Ok(MatchValue::Sha256(Sha256::digest(buf.as_bytes()).into()))
    })
}

/// The 32 bytes of a 64-character hex digest, in any case.
fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

thread_local! {
    /// The normalization buffer of [`prepare`], reused: one allocation per thread, not per value.
    static NORMALIZED: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The SHA-256 of a value for the rejects report: normalized when that works (phone numbers in
/// `country`), so that it can be matched with what would have been sent; never the raw value.
pub fn redact(kind: Option<MatchKeyType>, raw: &str, country: Option<&str>) -> String {
    let trimmed = trim(raw);
    if let Some(digest) = parse_hex(trimmed) {
        return hex::encode(digest);
    }
    let mut buf = String::with_capacity(trimmed.len());
    match kind {
        Some(k) if k.is_hashed() && normalize_into(k, trimmed, country, &mut buf).is_ok() => {
            sha256_hex(buf.as_bytes())
        }
        _ => sha256_hex(trimmed.as_bytes()),
    }
}

/// Normalizes `value` (already trimmed) for hashing into `out` (docs/inputs.md); `country` is the
/// event's, for phone numbers.
pub fn normalize_into(
    kind: MatchKeyType,
    value: &str,
    country: Option<&str>,
    out: &mut String,
) -> Result<(), ValueError> {
    out.clear();
    match kind {
        MatchKeyType::Email => {
            if !value.contains('@') {
                return Err(ValueError::NotEmail);
            }
            let value = trim(value);
            if value.is_ascii() {
                out.push_str(value);
                out.make_ascii_lowercase();
            } else {
                out.extend(value.chars().flat_map(char::to_lowercase));
            }
        }
        MatchKeyType::Phone => phone::normalize_into(value, country, out)?,
        MatchKeyType::FirstName
        | MatchKeyType::LastName
        | MatchKeyType::City
        | MatchKeyType::State
        | MatchKeyType::Address => out.extend(
            value
                .bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| char::from(b.to_ascii_lowercase())),
        ),
        MatchKeyType::Postal => out.extend(
            value
                .chars()
                .filter(|&c| !c.is_whitespace() && c != '-')
                .flat_map(char::to_lowercase),
        ),
        MatchKeyType::Maid | MatchKeyType::RampId => out.push_str(trim(value)),
    }
    if out.is_empty() {
        return Err(ValueError::Empty);
    }
    Ok(())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is 64 lower-case hex characters: a value that was hashed already.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_phone(s: &str) -> bool {
    let body = s.strip_prefix('+').unwrap_or(s);
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    (7..=15).contains(&digits)
        && body
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b' ' | b'-' | b'.' | b'(' | b')'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JOHN: &str = "836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f";

    /// (type, value, event country, SHA-256 hex of the normalized value); each hash is
    /// `printf %s NORMALIZED | sha256sum`, the normalized value in the comment.
    const KNOWN_ANSWERS: [(MatchKeyType, &str, Option<&str>, &str); 12] = [
        // john.doe@example.com
        (MatchKeyType::Email, " John.Doe@Example.com ", None, JOHN),
        // 12065550100
        (
            MatchKeyType::Phone,
            "+1 (206) 555-0100",
            None,
            "0000fd214ade3cd6a790d9a949f519b17b7c993625dd4782e14166523c66d415",
        ),
        (
            MatchKeyType::Phone,
            "(206) 555-0100",
            Some("US"),
            "0000fd214ade3cd6a790d9a949f519b17b7c993625dd4782e14166523c66d415",
        ),
        // 442079460018
        (
            MatchKeyType::Phone,
            "020 7946 0018",
            Some("GB"),
            "99a4599795d24445a5be21117f375c1bbe9e795daf7f62666686ce081e1f32dc",
        ),
        // 4930123456
        (
            MatchKeyType::Phone,
            "030 123456",
            Some("DE"),
            "ac75546db905289f50bd750fd5648fec0719074ce391521b2372abeae9110668",
        ),
        // zoann
        (
            MatchKeyType::FirstName,
            " Zoë-Ann ",
            None,
            "24502ab96a25b41fcd350ab08616285d6cc7ba89a9eff950d0ec5cc675acfe60",
        ),
        // 410terryaven
        (
            MatchKeyType::Address,
            "410 Terry Ave. N",
            None,
            "5302ef3b06be3c416f04caf276869ac7294426e611fffbe60832914dd8463338",
        ),
        // sw1a1aa
        (
            MatchKeyType::Postal,
            "SW1A 1AA",
            Some("GB"),
            "830e1d4b9838bab1f5c2acdb23e0b502ff13a9832c4632e8d67a1d43d3b7f614",
        ),
        // 981011234
        (
            MatchKeyType::Postal,
            "98101-1234",
            Some("US"),
            "89f3a522f18a9a8091a091e01ba4c69c7957627b641e1bbbb082367e936f494e",
        ),
        // 981091234
        (
            MatchKeyType::Postal,
            " 98109 1234",
            None,
            "8f0fdb63ed2fc6737484f8221b374837bd14ee18d95d86b012891b15824f13a9",
        ),
        // already hashed, in upper case: passed through, lowercased
        (
            MatchKeyType::Email,
            "836F82DB99121B3481011F16B49DFA5FBC714A0D1B1B9F784A1EBBBF5B39577F",
            None,
            JOHN,
        ),
        (MatchKeyType::LastName, JOHN, Some("US"), JOHN),
    ];

    #[test]
    fn known_answers() {
        for (kind, value, country, hash) in KNOWN_ANSWERS {
            assert_eq!(
                prepare(kind, value, country).unwrap(),
                hash,
                "{kind:?} {value:?} in {country:?}"
            );
        }
        assert_eq!(sha256_hex(b"john.doe@example.com"), JOHN);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashed_values_pass_and_raw_ids_are_sent_as_given() {
        assert_eq!(prepare(MatchKeyType::Email, JOHN, None).unwrap(), JOHN);
        let maid = "6D92078A-8246-4BA4-AE5B-76104861E7DC";
        assert_eq!(prepare(MatchKeyType::Maid, maid, None).unwrap(), maid);
        assert_eq!(
            prepare(MatchKeyType::RampId, " XY1234 ", None).unwrap(),
            "XY1234"
        );
    }

    #[test]
    fn bad_values_say_why() {
        assert_eq!(
            prepare(MatchKeyType::Email, "nobody", None),
            Err(ValueError::NotEmail)
        );
        assert_eq!(
            prepare(MatchKeyType::Phone, "12", None),
            Err(ValueError::Phone(PhoneError::Digits))
        );
        assert_eq!(
            prepare(MatchKeyType::City, "  --  ", None),
            Err(ValueError::Empty)
        );
        assert_eq!(
            prepare(MatchKeyType::Maid, " ", None),
            Err(ValueError::Empty)
        );
        let impossible = prepare(MatchKeyType::Phone, "555-0100 1", Some("US")).unwrap_err();
        assert_eq!(
            impossible.to_string(),
            "is not a possible phone number for calling code +1 (too short)"
        );
        assert_eq!(
            prepare(MatchKeyType::Phone, "206-555-CALL", Some("US"))
                .unwrap_err()
                .to_string(),
            "is not a phone number (only digits, spaces, - . ( ) / and a leading + are allowed)"
        );
    }

    #[test]
    fn detection() {
        assert_eq!(MatchKeyType::detect("a@b.c"), Some(MatchKeyType::Email));
        assert_eq!(
            MatchKeyType::detect("6d92078a-8246-4ba4-ae5b-76104861e7dc"),
            Some(MatchKeyType::Maid)
        );
        assert_eq!(
            MatchKeyType::detect("+44 20 7946 0958"),
            Some(MatchKeyType::Phone)
        );
        assert_eq!(MatchKeyType::detect("John"), None);
        assert_eq!(MatchKeyType::detect(JOHN), None);
    }

    #[test]
    fn redaction_never_returns_the_raw_value() {
        assert_eq!(
            redact(Some(MatchKeyType::Email), " John.Doe@Example.com ", None),
            JOHN
        );
        let maid = "6d92078a-8246-4ba4-ae5b-76104861e7dc";
        assert_eq!(
            redact(Some(MatchKeyType::Maid), maid, None),
            sha256_hex(maid.as_bytes())
        );
        assert_eq!(redact(None, "x", None), sha256_hex(b"x"));
        // a phone number as it would have been sent
        assert_eq!(
            redact(Some(MatchKeyType::Phone), "020 7946 0018", Some("GB")),
            sha256_hex(b"442079460018")
        );
    }

    fn any_type() -> impl Strategy<Value = MatchKeyType> {
        prop::sample::select(vec![
            MatchKeyType::Address,
            MatchKeyType::City,
            MatchKeyType::Email,
            MatchKeyType::FirstName,
            MatchKeyType::LastName,
            MatchKeyType::Phone,
            MatchKeyType::Postal,
            MatchKeyType::State,
        ])
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(kind in any_type(), value in "\\PC{0,40}") {
            let mut once = String::new();
            if normalize_into(kind, value.trim(), None, &mut once).is_ok() {
                let mut twice = String::new();
                prop_assert!(normalize_into(kind, once.trim(), None, &mut twice).is_ok());
                prop_assert_eq!(&once, &twice);
            }
        }

        #[test]
        fn preparing_is_idempotent(kind in any_type(), value in "\\PC{0,40}") {
            if let Ok(sent) = prepare(kind, &value, None) {
                let text = sent.to_string();
                prop_assert!(is_sha256_hex(&text));
                prop_assert_eq!(&sent, &text);
                prop_assert_eq!(prepare(kind, &text, None).unwrap(), sent);
            }
        }
    }
}
