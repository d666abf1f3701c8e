//! The fast path for the common record: one pass over a flat JSON object of known fields, with
//! no allocation. It returns the same [`RawEvent`] serde_json would, or `None` whenever it is not
//! sure: a string with escapes, an unknown or repeated field, deep nesting, anything that is not
//! valid JSON. The caller then parses with serde_json, which gives the same result or the precise
//! error. A property test and a fuzz target hold the two paths equal.
//!
//! Nested values (`matchKeys`) are delimited by serde_json itself.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::record::{index, Field, RawEvent, FIELD_NAMES};

/// Nested values with more brackets than this are left to serde_json (its recursion limit).
const MAX_NESTED_BRACKETS: usize = 64;

// The fields seen are the bits of a `u16`.
const _: () = assert!(FIELD_NAMES.len() <= 16);

/// Scans `text` as one event object into `event` (empty on entry; filled in place, as copying
/// its 16 fields costs more than a short record's scan); `None` means "ask serde_json".
pub(super) fn event<'a>(text: &'a str, event: &mut RawEvent<'a>) -> Option<()> {
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    // Fields seen, by index: serde_json rejects a repeated one, even after a `null`.
    let mut seen = 0u16;
    c.whitespace();
    c.expect(b'{')?;
    c.whitespace();
    if c.peek() == Some(b'}') {
        c.at += 1;
    } else {
        loop {
            c.expect(b'"')?;
            let index = c.field_name()?;
            c.whitespace();
            c.expect(b':')?;
            c.whitespace();
            let value = c.value()?;
            if seen & (1 << index) != 0 {
                return None;
            }
            seen |= 1 << index;
            // `Option<Field>` reads JSON `null` as absent.
            *event.field_mut(index)? = Some(value).filter(|v| v.text() != "null");
            c.whitespace();
            match c.next()? {
                b',' => c.whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.whitespace();
    (c.at == c.bytes.len()).then_some(())
}

/// The index of the first `"`, `\\` or control character of `bytes`: eight bytes at a time.
pub(crate) fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // A byte's high bit is set where it is below 0x20, or equal to `"` or `\\` (Mycroft's
        // "has less than" on x, "has zero byte" on x ^ '"' and x ^ '\\'). Bits above a hit may be
        // wrong, the lowest one is exact, and it is the only one used.
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let hits = ((x.wrapping_sub(ONES * 0x20) & !x)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGH;
        if hits != 0 {
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| offset + i)
}

/// The length of `quoted` (a field's name and its closing quote) if `rest` starts with it.
#[inline(always)]
fn starts_with_name(rest: &[u8], quoted: &[u8]) -> Option<usize> {
    rest.starts_with(quoted).then_some(quoted.len())
}

/// The name of the field at `index` and its closing quote (`N` is the name's length plus one),
/// as one constant: comparing it at once, rather than the name then the quote, saves about 120
/// instructions per event (callgrind).
const fn quoted<const N: usize>(index: usize) -> [u8; N] {
    let name = FIELD_NAMES[index].as_bytes();
    let mut out = [b'"'; N];
    let mut i = 0;
    while i < name.len() {
        out[i] = name[i];
        i += 1;
    }
    out
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// After an opening quote: the [`index`] of the field named up to the closing quote,
    /// compared in place against the known names (no scan for the quote; each compare is a few
    /// word loads). Any other name, or one with an escape, is `None`. The names are tried by
    /// their first letter, the most frequent first; a test checks that each one is reached.
    fn field_name(&mut self) -> Option<usize> {
        let rest = self.bytes.get(self.at..)?;
        macro_rules! names {
            ($($field:ident),*) => {
                $(
                    if let Some(len) = starts_with_name(
                        rest,
                        const { &quoted::<{ FIELD_NAMES[index::$field].len() + 1 }>(index::$field) },
                    ) {
                        Some((index::$field, len))
                    } else
                )* { None }
            };
        }
        let (index, len) = match rest.first()? {
            b'c' => names!(
                conversion_type,
                conversion_value,
                country_code,
                currency_code,
                client_dedupe_id,
                conversion_definition_id
            ),
            b'd' => names!(data_processing_options),
            b'e' => names!(event_time),
            b'm' => names!(match_keys),
            b'n' => names!(name),
            b's' => names!(source),
            b't' => names!(timestamp),
            b'u' => names!(user_identifier, user_identifier_type, units_sold),
            b'v' => names!(value),
            _ => None,
        }?;
        self.at += len;
        Some(index)
    }

    /// After an opening quote: moves past the closing quote, if the string has no escapes and
    /// no control characters.
    fn plain_string(&mut self) -> Option<()> {
        let end = self.at + string_end(self.bytes.get(self.at..)?)?;
        (self.bytes.get(end) == Some(&b'"')).then(|| self.at = end + 1)
    }

    fn value(&mut self) -> Option<Field<'a>> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.plain_string()?;
                return self.text.get(start..self.at).map(Field::Plain);
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            b'[' | b'{' => self.nested()?,
            _ => return None,
        }
        self.text.get(start..self.at).map(Field::Json)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.bytes
            .get(self.at..)?
            .starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// A number by JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    /// An array or object, delimited by serde_json.
    fn nested(&mut self) -> Option<()> {
        let rest = self.text.get(self.at..)?;
        let mut de = serde_json::Deserializer::from_str(rest);
        let raw = <&RawValue>::deserialize(&mut de).ok()?.get();
        let brackets = raw.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
        if brackets > MAX_NESTED_BRACKETS {
            return None;
        }
        self.at += raw.len();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn scan(text: &str) -> Option<RawEvent<'_>> {
        let mut e = RawEvent::default();
        event(text, &mut e).map(|()| e)
    }

    /// What a parse produced, comparable: each present field's text and string value.
    fn shape(event: &RawEvent<'_>) -> Vec<(usize, String)> {
        let mut copy = *event;
        (0..FIELD_NAMES.len())
            .filter_map(|i| {
                let f = (*copy.field_mut(i)?)?;
                Some((i, format!("{:?}|{:?}", f.text(), f.as_str())))
            })
            .collect()
    }

    fn agree(text: &str) -> Result<(), TestCaseError> {
        let slow = serde_json::from_str::<RawEvent<'_>>(text);
        if let Some(fast) = scan(text) {
            let slow = slow.map_err(|e| {
                TestCaseError::fail(format!("fast path accepted {text:?}; serde_json: {e}"))
            })?;
            prop_assert_eq!(shape(&fast), shape(&slow), "{:?}", text);
        }
        Ok(())
    }

    #[test]
    fn every_field_name_is_known_by_its_index() {
        for (index, name) in FIELD_NAMES.iter().enumerate() {
            let text = format!("{name}\"");
            let mut c = Cursor {
                text: &text,
                bytes: text.as_bytes(),
                at: 0,
            };
            assert_eq!(c.field_name(), Some(index), "{name}");
            assert_eq!(c.at, text.len());
        }
    }

    #[test]
    fn the_common_record_takes_the_fast_path() {
        let text = r#" {"eventTime":"2026-11-28T17:50:16Z", "conversionValue":-0.015e+2,
            "userIdentifier":"a@b.c","unitsSold":null,"matchKeys":[{"type":"EMAIL","values":["x"]}]}
            "#;
        let fast = scan(text).expect("fast path");
        assert!(matches!(
            fast.event_time,
            Some(Field::Plain("\"2026-11-28T17:50:16Z\""))
        ));
        assert!(matches!(
            fast.conversion_value,
            Some(Field::Json("-0.015e+2"))
        ));
        assert!(matches!(
            fast.match_keys,
            Some(Field::Json(r#"[{"type":"EMAIL","values":["x"]}]"#))
        ));
        agree(text).unwrap();
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        for text in [
            r#"{"name":"a\"b"}"#,
            r#"{"nam\u0065":"a"}"#,
            r#"{"name":"a","name":"b"}"#,
            r#"{"other":1}"#,
            r#"{"value":01}"#,
            r#"{"value":1.}"#,
            r#"{"value":1e}"#,
            r#"{"value":+1}"#,
            r#"{"name":"a",}"#,
            r#"{"name":"a"} x"#,
            "{\"name\":\"a\tb\"}",
            r#"{"name":tru}"#,
            r#"[]"#,
            "",
        ] {
            assert!(scan(text).is_none(), "{text}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(
            FIELD_NAMES
                .iter()
                .map(|n| format!("\"{n}\""))
                .chain(
                    [
                        "\"nope\"",
                        "\"na\\u006de\"",
                        "\"nameX\"",
                        "\"userIdentifierTyp\"",
                        "\"sourc\"",
                    ]
                    .map(String::from),
                )
                .collect::<Vec<_>>(),
        )
    }

    fn value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "\"x\"",
            "\"\"",
            "\"a\\\"b\"",
            "\"é ü\"",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            "0",
            "-0",
            "12.50",
            "1e5",
            "-1.5E-3",
            "01",
            "1.",
            ".5",
            "-",
            "true",
            "false",
            "null",
            "nul",
            "[]",
            "[1,2",
            "{\"type\":\"EMAIL\",\"values\":[\"a\"]}",
            "[{\"a\":[]}]",
            "\"\t\"",
            "\"null\"",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ])
        .prop_map(str::to_owned)
    }

    /// Pieces that, glued together, make valid and invalid JSON of every kind.
    fn fragment() -> impl Strategy<Value = String> {
        let glue = prop::sample::select(vec!["", " ", "\n", ",", ":", "{", "}", "\r\n\t"]);
        prop_oneof![name(), value(), glue.prop_map(str::to_owned)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn string_end_finds_the_first_special_byte(bytes in prop::collection::vec(
            prop::sample::select(vec![b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff]),
            0..40,
        )) {
            prop_assert_eq!(
                string_end(&bytes),
                bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            );
        }

        #[test]
        fn fast_path_agrees_with_serde_json_on_objects(
            pairs in prop::collection::vec(
                (prop_oneof![8 => name(), 1 => fragment()], prop_oneof![8 => value(), 1 => fragment()]),
                0..6,
            ),
            space in prop::sample::select(vec!["", " ", "\n "]),
        ) {
            let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}{space}:{space}{v}")).collect();
            agree(&format!("{{{}}}", body.join(",")))?;
        }

        #[test]
        fn fast_path_agrees_with_serde_json_on_soup(parts in prop::collection::vec(fragment(), 0..16)) {
            agree(&parts.concat())?;
        }
    }
}
