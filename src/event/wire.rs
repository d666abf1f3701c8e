//! An event as the DSP receives it: the JSON of one element of a request's `eventData`, written
//! byte by byte without serde's per-field machinery, as this runs for every event sent. It is
//! the only serializer of [`ConversionEvent`]: the rejects report parses what it writes.

use super::{ConversionEvent, MatchValue, Text};
use crate::read::scan::string_end;

impl ConversionEvent {
    /// Appends the event's JSON to `out`: the fields in the DSP's order, the optional ones only
    /// when set, amounts with at most two decimals.
    // Inlined into the batch's loop over events, as when it had no other caller: a call per
    // event costs about 20 instructions (callgrind).
    #[inline(always)]
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"conversionDefinitionId\":");
        write_str(out, &self.conversion_definition_id);
        out.extend_from_slice(b",\"name\":");
        write_str(out, &self.name);
        out.extend_from_slice(b",\"timestamp\":");
        write_text(out, &self.timestamp);
        out.extend_from_slice(b",\"countryCode\":");
        write_plain(out, self.country_code.as_bytes());
        out.extend_from_slice(b",\"matchKeys\":[");
        for (i, key) in self.match_keys.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"type\":\"");
            out.extend_from_slice(key.kind.as_str().as_bytes());
            out.extend_from_slice(b"\",\"values\":[");
            for (j, value) in key.values.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                match value {
                    MatchValue::Sha256(digest) => {
                        let mut text = [0u8; 64];
                        // 32 bytes always fit 64 hex digits.
                        let _ = hex::encode_to_slice(digest, &mut text);
                        out.push(b'"');
                        out.extend_from_slice(&text);
                        out.push(b'"');
                    }
                    MatchValue::Given(text) => write_str(out, text),
                }
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"],\"clientDedupeId\":");
        write_text(out, &self.client_dedupe_id);
        if let Some(value) = self.value {
            out.extend_from_slice(b",\"value\":");
            if value.is_negative() {
                out.push(b'-');
            }
            write_amount(out, value.cents());
        }
        if let Some(currency) = self.currency_code {
            out.extend_from_slice(b",\"currencyCode\":");
            write_plain(out, currency.as_str().as_bytes());
        }
        if let Some(units) = self.units_sold {
            out.extend_from_slice(b",\"unitsSold\":");
            out.extend_from_slice(itoa::Buffer::new().format(units).as_bytes());
        }
        if let Some(options) = self.data_processing_options {
            out.extend_from_slice(b",\"dataProcessingOptions\":");
            write_plain(out, options.as_bytes());
        }
        out.push(b'}');
    }
}

/// A JSON string: as is when nothing needs escaping (nearly always), else through serde_json,
/// which escapes control characters, `"` and `\\`.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if string_end(s.as_bytes()).is_none() {
        write_plain(out, s.as_bytes());
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing into a Vec cannot fail; keep the JSON well-formed regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// [`write_str`] for inline text, without re-checking its UTF-8 when it needs no escaping.
fn write_text(out: &mut Vec<u8>, text: &Text) {
    if string_end(text.as_bytes()).is_none() {
        write_plain(out, text.as_bytes());
    } else {
        write_str(out, text.as_str());
    }
}

/// A JSON string known to need no escaping (codes and constants of this crate, checked text).
fn write_plain(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// An amount as serde_json writes the f64 `cents / 100` (shortest round-trip form): `12.0`,
/// `12.3`, `12.35`. Exact below 10^14, and amounts stop at 10^13.
// Inlined, as when `write_json` had one caller: outlined, it costs about 12 instructions more
// per event (callgrind).
#[inline(always)]
fn write_amount(out: &mut Vec<u8>, cents: u64) {
    let (units, hundredths) = (cents / 100, (cents % 100) as u8);
    out.extend_from_slice(itoa::Buffer::new().format(units).as_bytes());
    out.push(b'.');
    out.push(b'0' + hundredths / 10);
    if hundredths % 10 != 0 {
        out.push(b'0' + hundredths % 10);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::Amount;

    fn written(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn amount(cents: u64) -> String {
        written(|out| write_amount(out, cents))
    }

    #[test]
    fn amounts_have_at_most_two_decimals() {
        let text = |s| amount(Amount::parse(s).unwrap().cents());
        assert_eq!(text("12.345"), "12.35");
        assert_eq!(text("0.1"), "0.1");
        assert_eq!(text("7"), "7.0");
        assert_eq!(text("9999999999999.99"), "9999999999999.99");
    }

    #[test]
    fn text_is_written_as_serde_json_writes_a_string() {
        for s in [
            "",
            "2026-11-28T17:50:16Z",
            "é",
            "a\"b\\c\u{1}\n",
            &"x".repeat(33),
            &"ü".repeat(40),
        ] {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(written(|out| write_text(out, &Text::from(s))), json);
            assert_eq!(written(|out| write_str(out, s)), json);
        }
    }

    proptest! {
        #[test]
        fn amounts_are_the_shortest_text_of_their_f64(c in 0u64..=Amount::MAX_CENTS) {
            let text = amount(c);
            prop_assert_eq!(&text, &serde_json::to_string(&(c as f64 / 100.0)).unwrap());
            prop_assert_eq!(Amount::parse(&text).map(Amount::cents), Ok(c));
        }
    }
}
