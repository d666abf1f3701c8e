//! NDJSON / JSON Lines: one event object per line; blank lines are skipped and are not records.
//! Lines are read into one reused buffer, bounded by `max_record_bytes`.

use std::io::BufRead;

use super::{json_rejection, reject_rest, Interrupted, Limits, RecordSink};
use crate::event::RawEvent;
use crate::origin::Position;
use crate::outcome::{Reason, Rejection};

/// A line read into the buffer, or why it was not.
enum Line {
    Read,
    TooLong,
    End,
}

/// Reads the next line into `buf` (without its `\n`), keeping at most `max` bytes.
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
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

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

pub(super) fn read(
    mut reader: impl BufRead,
    gzip: bool,
    limits: Limits,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    let mut record = 0u64;
    loop {
        if !sink.keep_going() {
            return Err(Interrupted::Stopped);
        }
        let line = match next_line(&mut reader, &mut buf, limits.max_record_bytes) {
            Ok(l) => l,
            Err(e) => {
                return reject_rest(e, gzip, Position::at(record + 1, Some(line_no + 1)), sink);
            }
        };
        line_no += 1;
        let at = |record| Position::at(record, Some(line_no));
        match line {
            Line::End => return Ok(()),
            Line::TooLong => {
                record += 1;
                sink.invalid(
                    at(record),
                    Rejection::unreadable(
                        Reason::RecordTooLarge,
                        format!(
                            "line is longer than {} bytes (MAX_RECORD_BYTES)",
                            limits.max_record_bytes
                        ),
                    ),
                );
            }
            Line::Read => {
                let bytes = buf.strip_suffix(b"\r").unwrap_or(&buf);
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                record += 1;
                let Ok(text) = std::str::from_utf8(bytes) else {
                    sink.invalid(
                        at(record),
                        Rejection::unreadable(Reason::InvalidEncoding, "line is not valid UTF-8"),
                    );
                    continue;
                };
                match RawEvent::from_json(text) {
                    Ok(raw) => sink.record(at(record), &raw, None),
                    Err(e) => sink.invalid(at(record), json_rejection(&e)),
                }
            }
        }
    }
}
