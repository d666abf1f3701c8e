//! The `clientDedupeId` of an event that gives one (DESIGN.md §1). The DSP keeps only the first
//! event with a given id, and an id must not carry user identifiers: one that contains an `@` or
//! one of the event's own identifiers is sent, and written in rejects, as its SHA-256 hex, which
//! deduplicates as well (the same id always gives the same hex).

use std::borrow::Cow;
use std::cell::RefCell;

use smallvec::SmallVec;

use super::match_key::{self, sha256_hex, MatchKeyType};
use crate::read::record::{present, trim};
use crate::read::RawEvent;

/// Identifiers shorter than this are not looked for: a one- or two-letter name or state (`J`,
/// `WA`) identifies nobody, and would turn many ordinary ids into hashes.
const SHORTEST: usize = 3;

/// The id to send for `given` (trimmed): `given` itself, or its SHA-256 hex when it contains an
/// `@` or one of `identifiers` (type when known, value before hashing) — as given or as
/// normalized for hashing, and for a phone number its digits, in either case ignoring ASCII
/// case. `country` is the event's, for phone numbers. Hashed values (64 hex) are not raw
/// identifiers and are not looked for.
pub fn client_dedupe_id<'a, 'v>(
    given: &'a str,
    identifiers: impl IntoIterator<Item = (Option<MatchKeyType>, &'v str)>,
    country: Option<&str>,
) -> Cow<'a, str> {
    let reveals = given.contains('@')
        || identifiers
            .into_iter()
            .any(|(kind, value)| contains_identifier(given, kind, value, country));
    if reveals {
        Cow::Owned(sha256_hex(given.as_bytes()))
    } else {
        Cow::Borrowed(given)
    }
}

/// [`client_dedupe_id`] with the identifiers of a record as read: its `userIdentifier` or the
/// values of its `matchKeys`.
pub fn for_record<'a>(given: &'a str, raw: &RawEvent<'_>, country: Option<&str>) -> Cow<'a, str> {
    if given.contains('@') {
        return client_dedupe_id(given, [], country);
    }
    let mut identifiers: SmallVec<[(Option<MatchKeyType>, Cow<'_, str>); 2]> = SmallVec::new();
    if let Some(value) = present(raw.user_identifier).and_then(|f| f.as_str().ok()) {
        let kind = present(raw.user_identifier_type)
            .and_then(|f| f.as_str().ok())
            .and_then(|s| MatchKeyType::parse(&s))
            .or_else(|| MatchKeyType::detect(&value));
        identifiers.push((kind, value));
    }
    if let Some(keys) = present(raw.match_keys).and_then(|f| super::parse_match_keys(&f)) {
        for key in keys {
            let kind = MatchKeyType::parse(&key.kind);
            identifiers.extend(key.values.into_iter().map(|v| (kind, v)));
        }
    }
    client_dedupe_id(
        given,
        identifiers.iter().map(|(kind, v)| (*kind, v.as_ref())),
        country,
    )
}

thread_local! {
    /// The normalization buffer of [`contains_identifier`], reused.
    static NORMALIZED: RefCell<String> = const { RefCell::new(String::new()) };
}

fn contains_identifier(
    id: &str,
    kind: Option<MatchKeyType>,
    value: &str,
    country: Option<&str>,
) -> bool {
    let value = trim(value);
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    if contains(id, value) {
        return true;
    }
    let Some(kind) = kind else {
        return false;
    };
    if kind == MatchKeyType::Phone {
        let mut digits = [0u8; 32];
        let mut n = 0;
        for (slot, d) in digits
            .iter_mut()
            .zip(value.bytes().filter(u8::is_ascii_digit))
        {
            *slot = d;
            n += 1;
        }
        if contains_bytes(id, digits.get(..n).unwrap_or_default()) {
            return true;
        }
    }
    kind.is_hashed()
        && NORMALIZED.with(|buf| {
            let mut buf = buf.borrow_mut();
            match_key::normalize_into(kind, value, country, &mut buf).is_ok() && contains(id, &buf)
        })
}

/// Whether `id` contains `part` (of at least [`SHORTEST`] bytes), ignoring ASCII case.
fn contains(id: &str, part: &str) -> bool {
    contains_bytes(id, part.as_bytes())
}

fn contains_bytes(id: &str, part: &[u8]) -> bool {
    part.len() >= SHORTEST
        && id
            .as_bytes()
            .windows(part.len())
            .any(|w| w.eq_ignore_ascii_case(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(given: &str, identifiers: &[(Option<MatchKeyType>, &str)]) -> String {
        client_dedupe_id(given, identifiers.iter().copied(), Some("US")).into_owned()
    }

    #[test]
    fn ids_without_identifiers_are_sent_as_given() {
        let email = (Some(MatchKeyType::Email), "John.Doe@Example.com");
        let phone = (Some(MatchKeyType::Phone), "+1 (206) 555-0100");
        assert_eq!(sent("order-1", &[email, phone]), "order-1");
        assert_eq!(sent("order-1", &[]), "order-1");
        // a hashed value is not a raw identifier
        let hashed = "836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f";
        let id = format!("order-{hashed}");
        assert_eq!(sent(&id, &[(Some(MatchKeyType::Email), hashed)]), id);
        // two letters identify nobody
        assert_eq!(
            sent("WA-order-1", &[(Some(MatchKeyType::State), "WA")]),
            "WA-order-1"
        );
    }

    #[test]
    fn ids_with_identifiers_are_sent_hashed() {
        let email = (Some(MatchKeyType::Email), " John.Doe@Example.com ");
        let phone = (Some(MatchKeyType::Phone), "(206) 555-0100");
        let maid = (
            Some(MatchKeyType::Maid),
            "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        );
        let name = (Some(MatchKeyType::LastName), "O'Brien");
        for given in [
            // an @, whatever it is
            "a@b",
            // the value as given, in any case
            "order-1-JOHN.DOE@EXAMPLE.COM",
            "(206) 555-0100/1",
            "6D92078A-8246-4BA4-AE5B-76104861E7DC:7",
            // the value as hashed: E.164 digits, lowercased name
            "tel-12065550100",
            "obrien-42",
            // the digits of a phone number as given
            "2065550100-7",
        ] {
            assert_eq!(
                sent(given, &[email, phone, maid, name]),
                sha256_hex(given.as_bytes()),
                "{given}"
            );
        }
        // the same id, the same hex: still a dedupe id
        assert_eq!(
            sent("tel-12065550100", &[phone]),
            "33ea0bd1ce9e1be89ece1f4f40168ffd4226bcc15b7cb9e0457f56fc3f338ad2"
        );
    }
}
