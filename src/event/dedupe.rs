//! The `clientDedupeId` of an event that gives one (docs/inputs.md). The DSP keeps only the first
//! event with a given id, and an id must not carry user identifiers: one that contains an `@` or
//! one of the event's own identifiers is sent, and written in rejects, as its SHA-256 hex, which
//! deduplicates as well (the same id always gives the same hex).

use std::borrow::Cow;
use std::cell::RefCell;

use super::match_key::{self, sha256_hex, MatchKeyType};
use crate::read::record::{present, trim};
use crate::read::RawEvent;

/// Identifiers shorter than this are not looked for: a one- or two-letter name or state (`J`,
/// `WA`) identifies nobody, and would turn many ordinary ids into hashes.
const SHORTEST: usize = 3;

/// The id to send for `given` (trimmed): `given` itself, or its SHA-256 hex when it contains an
/// `@` or one of `identifiers` (type when known, value before hashing): as given or as
/// normalized for hashing, ignoring ASCII case; a phone number however written (its last 7
/// digits in a row). Hashed values (64 hex) are not raw identifiers and are not looked for.
pub fn client_dedupe_id<'a, 'v>(
    given: &'a str,
    identifiers: impl IntoIterator<Item = (Option<MatchKeyType>, &'v str)>,
) -> Cow<'a, str> {
    let mut check = Given::new(Some(given));
    for (kind, value) in identifiers {
        check.see(kind, value);
    }
    check.sent(given)
}

/// [`client_dedupe_id`] with the identifiers of a record as read (its `userIdentifier` or the
/// values of its `matchKeys`), for the rejects report: it parses the match keys again.
pub fn for_record<'a>(given: &'a str, raw: &RawEvent<'_>) -> Cow<'a, str> {
    let mut check = Given::new(Some(given));
    if check.reveals {
        return check.sent(given);
    }
    if let Some(value) = present(raw.user_identifier).and_then(|f| f.as_str().ok()) {
        let kind = present(raw.user_identifier_type)
            .and_then(|f| f.as_str().ok())
            .and_then(|s| MatchKeyType::parse(&s))
            .or_else(|| MatchKeyType::detect(&value));
        check.see(kind, &value);
    }
    if let Some(keys) = present(raw.match_keys).and_then(|f| super::parse_match_keys(&f)) {
        for key in &keys {
            let kind = MatchKeyType::parse(&key.kind);
            for value in &key.values {
                check.see(kind, value);
            }
        }
    }
    check.sent(given)
}

/// The [`client_dedupe_id`] rule applied while an event's identifiers are read, one by one, so
/// that validation looks at each value once.
#[derive(Debug)]
pub struct Given<'a> {
    id: Option<&'a str>,
    reveals: bool,
}

impl<'a> Given<'a> {
    /// The id the event gives (trimmed), if any.
    pub fn new(id: Option<&'a str>) -> Self {
        Self {
            id,
            reveals: id.is_some_and(has_at),
        }
    }

    /// Looks for one identifier of the event in the id.
    pub fn see(&mut self, kind: Option<MatchKeyType>, value: &str) {
        // An email has an `@` (or it is rejected), so it is in no id without one.
        if kind == Some(MatchKeyType::Email) {
            return;
        }
        if let (Some(id), false) = (self.id, self.reveals) {
            self.reveals = contains_identifier(id, kind, value);
        }
    }

    /// The id to send for `id` (the given one): itself, or its SHA-256 hex.
    pub fn sent<'s>(&self, id: &'s str) -> Cow<'s, str> {
        if self.reveals {
            Cow::Owned(sha256_hex(id.as_bytes()))
        } else {
            Cow::Borrowed(id)
        }
    }
}

thread_local! {
    /// The normalization buffer of [`contains_normalized`], reused.
    static NORMALIZED: RefCell<String> = const { RefCell::new(String::new()) };
}

fn contains_identifier(id: &str, kind: Option<MatchKeyType>, value: &str) -> bool {
    let value = trim(value);
    // Called for ids without an `@`: a value with one is in none of them.
    if has_at(value) || value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    if contains(id, value) {
        return true;
    }
    match kind {
        // Unknown, or normalized by lowercasing at most: looked for above.
        None | Some(MatchKeyType::Email | MatchKeyType::Maid | MatchKeyType::RampId) => false,
        // However it is written (national, with its calling code, after 00), a phone number
        // ends with the same digits: its last 7 are enough, and cost no normalization.
        Some(MatchKeyType::Phone) => contains_bytes(id, last_digits(value, &mut [0; 7])),
        Some(kind) => contains_normalized(id, kind, value),
    }
}

/// The last digits of `value`, at most as many as `buf` holds.
fn last_digits<'b>(value: &str, buf: &'b mut [u8]) -> &'b [u8] {
    let mut n = 0;
    for (slot, d) in buf
        .iter_mut()
        .rev()
        .zip(value.bytes().rev().filter(u8::is_ascii_digit))
    {
        *slot = d;
        n += 1;
    }
    buf.get(buf.len() - n..).unwrap_or_default()
}

/// Whether `id` contains `value` as normalized for hashing.
fn contains_normalized(id: &str, kind: MatchKeyType, value: &str) -> bool {
    NORMALIZED.with(|buf| {
        let mut buf = buf.borrow_mut();
        // Not a phone number: no country needed.
        match_key::normalize_into(kind, value, None, &mut buf).is_ok() && contains(id, &buf)
    })
}

/// Whether `s` has an `@` (a plain loop: ids and identifiers are short).
fn has_at(s: &str) -> bool {
    s.bytes().any(|b| b == b'@')
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
        client_dedupe_id(given, identifiers.iter().copied()).into_owned()
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
            // a phone number however written
            "2065550100-7",
            "call-0012065550100",
            "5550100",
        ] {
            assert_eq!(
                sent(given, &[email, phone, maid, name]),
                sha256_hex(given.as_bytes()),
                "{given}"
            );
        }
        let national = (Some(MatchKeyType::Phone), "020 7946 0018");
        assert_eq!(
            sent("uk-442079460018", &[national]),
            sha256_hex(b"uk-442079460018")
        );
        // the same id, the same hex: still a dedupe id
        assert_eq!(
            sent("tel-12065550100", &[phone]),
            "33ea0bd1ce9e1be89ece1f4f40168ffd4226bcc15b7cb9e0457f56fc3f338ad2"
        );
    }
}
