//! NDJSON / JSON Lines: one event object per line; blank lines are skipped and are not records.
//! A line is parsed where it lies in the reader's buffer; one that straddles two fills is gathered
//! into one reused buffer, bounded by `max_record_bytes`.

use std::io::BufRead;

use super::RawEvent;
use super::{json_rejection, reject_rest, Interrupted, Limits, RecordSink};
use crate::domain::{Position, Resume};
use crate::domain::{Reason, Rejection};

/// A line read into the buffer, or why it was not.
enum Line {
    Read,
    TooLong,
    End,
}

/// Reads the next line into `buf` (without its `\n`), keeping at most `max` bytes; adds the
/// bytes it consumed to `consumed`.
fn next_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
    consumed: &mut u64,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        any = true;
        let (chunk, found) = match memchr(available) {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        *consumed += used as u64;
        if found {
            break;
        }
    }
    Ok(match (any, too_long) {
        (false, _) => Line::End,
        (true, true) => Line::TooLong,
        (true, false) => Line::Read,
    })
}

/// The first `\n` of `haystack` (SIMD where the CPU has it; the crate comes with csv anyway).
fn memchr(haystack: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', haystack)
}

/// Reads lines from `start` (the record, line and byte offset the reader begins at).
pub(super) fn read(
    mut reader: impl BufRead,
    gzip: bool,
    limits: Limits,
    start: Resume,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    let mut buf = Vec::new();
    let mut line_no = start.line.unwrap_or(1).saturating_sub(1);
    let mut record = start.record.saturating_sub(1);
    // Bytes consumed since `start`.
    let mut consumed = 0u64;
    loop {
        if !sink.keep_going() {
            return Err(Interrupted::Stopped(Resume {
                record: record + 1,
                line: Some(line_no + 1),
                offset: start.offset.map(|o| o + consumed),
            }));
        }
        // A line that lies whole in the reader's buffer is parsed where it lies; only a line
        // that straddles two fills (or is too long) is gathered into `buf`.
        let available = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) => {
                return reject_rest(e, gzip, Position::at(record + 1, Some(line_no + 1)), sink);
            }
        };
        if let Some(end) = memchr(available).filter(|end| *end <= limits.max_record_bytes) {
            line_no += 1;
            one_line(&available[..end], line_no, &mut record, sink);
            reader.consume(end + 1);
            consumed += end as u64 + 1;
            continue;
        }
        let line = match next_line(
            &mut reader,
            &mut buf,
            limits.max_record_bytes,
            &mut consumed,
        ) {
            Ok(l) => l,
            Err(e) => {
                return reject_rest(e, gzip, Position::at(record + 1, Some(line_no + 1)), sink);
            }
        };
        line_no += 1;
        match line {
            Line::End => return Ok(()),
            Line::TooLong => {
                record += 1;
                sink.invalid(
                    Position::at(record, Some(line_no)),
                    Rejection::unreadable(
                        Reason::RecordTooLarge,
                        format!(
                            "line is longer than {} bytes (MAX_RECORD_BYTES)",
                            limits.max_record_bytes
                        ),
                    ),
                );
            }
            Line::Read => one_line(&buf, line_no, &mut record, sink),
        }
    }
}

/// Hands on one line (without its `\n`): a record, a rejection, or nothing when it is blank.
fn one_line(line: &[u8], line_no: u64, record: &mut u64, sink: &mut dyn RecordSink) {
    let bytes = line.strip_suffix(b"\r").unwrap_or(line);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    *record += 1;
    let at = Position::at(*record, Some(line_no));
    let Ok(text) = std::str::from_utf8(bytes) else {
        sink.invalid(
            at,
            Rejection::unreadable(Reason::InvalidEncoding, "line is not valid UTF-8"),
        );
        return;
    };
    match RawEvent::from_json(text) {
        Ok(raw) => sink.record(at, &raw, None),
        Err(e) => sink.invalid(at, json_rejection(&e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use proptest::prelude::*;

    use super::*;
    use crate::read::tests::Collect;

    proptest! {
        #[test]
        fn memchr_finds_the_first_newline(bytes in prop::collection::vec(
            prop::sample::select(vec![b'a', b'\n', 0x0b, 0x8a, 0xff]), 0..40)
        ) {
            prop_assert_eq!(memchr(&bytes), bytes.iter().position(|&b| b == b'\n'));
        }

        #[test]
        fn lines_read_the_same_whatever_the_buffer_size(capacity in 1usize..64) {
            let text = b"{\"name\":\"a\"}\r\n\n{\"name\":\"bb\"}\n{\"name\":\"this one is too long\"}\n{\"name\":\"c\"}";
            let limits = Limits { max_record_bytes: 20, max_object_bytes: 1000 };
            let run = |reader: &mut dyn BufRead| {
                let mut sink = Collect::default();
                read(reader, false, limits, Resume::START, &mut sink).unwrap();
                sink.items
            };
            let whole = run(&mut &text[..]);
            prop_assert_eq!(
                &whole,
                &["1@1: a", "2@3: bb", "3@4: RECORD_TOO_LARGE", "4@5: c"].map(String::from).to_vec()
            );
            prop_assert_eq!(run(&mut BufReader::with_capacity(capacity, &text[..])), whole);
        }
    }
}
