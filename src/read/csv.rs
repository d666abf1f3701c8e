//! CSV with a header row naming the simple-shape fields (any order, optional columns may be
//! missing, unknown columns reject the file); an empty cell means absent.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::rc::Rc;

use super::{reject_rest, Budgeted, Interrupted, Limits, RecordSink};
use crate::domain::{Position, Resume};
use crate::domain::{Reason, Rejection};
use crate::read::record::FIELD_NAMES;
use crate::read::{Field, RawEvent};

/// The csv reader's buffer: it reads ahead by up to this much.
const BUFFER: usize = 64 << 10;

/// Reads rows from `start`. A ranged read (one that does not begin with the header row) comes
/// with the object's `header` row, read separately; otherwise `header` is empty.
pub(super) fn read(
    header: &[u8],
    reader: impl Read,
    gzip: bool,
    limits: Limits,
    start: Resume,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    // The header is read again ahead of the ranged bytes; positions are then shifted back.
    let prefix: Vec<u8> = if header.is_empty() {
        Vec::new()
    } else {
        [header, b"\n"].concat()
    };
    let prefix_lines = u64::from(!prefix.is_empty());
    let line_base = start.line.unwrap_or(1).saturating_sub(1 + prefix_lines);
    let offset_of = |position: u64| {
        start
            .offset
            .map(|o| o + position.saturating_sub(prefix.len() as u64))
    };
    let reader = io::Read::chain(&prefix[..], reader);
    let lines = Rc::new(RefCell::new(LineIndex::default()));
    // A row may not take more than the limit (plus what the csv reader reads ahead).
    let used = Rc::new(std::cell::Cell::new(0));
    let reader = Budgeted {
        inner: reader,
        used: used.clone(),
        max: limits.max_record_bytes + 2 * BUFFER,
    };
    let mut csv = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(BUFFER)
        .from_reader(Indexed {
            inner: reader,
            index: lines.clone(),
        });
    let mut row = ::csv::StringRecord::new();
    let columns = match csv.read_record(&mut row) {
        Ok(true) => match header_columns(&row) {
            Ok(columns) => columns,
            Err(message) => {
                sink.invalid(
                    Position::WHOLE,
                    Rejection::unreadable(Reason::UnknownField, message),
                );
                return Ok(());
            }
        },
        Ok(false) => return Ok(()),
        Err(e) => return csv_error(e, gzip, Position::WHOLE, sink),
    };
    let mut record = start.record.saturating_sub(1);
    loop {
        let at_byte = csv.position().byte();
        let line = line_base + lines.borrow_mut().line_at(at_byte);
        if !sink.keep_going() {
            return Err(Interrupted::Stopped(Resume {
                record: record + 1,
                line: Some(line),
                offset: offset_of(at_byte),
            }));
        }
        used.set(0);
        match csv.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                if row.iter().all(|cell| cell.trim().is_empty()) {
                    continue;
                }
                record += 1;
                let at = Position::at(record, Some(line));
                if row.len() != columns.len() {
                    sink.invalid(
                        at,
                        Rejection::unreadable(
                            Reason::InvalidCsv,
                            format!(
                                "row has {} fields, the header has {}",
                                row.len(),
                                columns.len()
                            ),
                        ),
                    );
                    continue;
                }
                let mut raw = RawEvent::default();
                for (cell, &column) in row.iter().zip(&columns) {
                    if !cell.trim().is_empty() {
                        if let Some(slot) = raw.field_mut(column) {
                            *slot = Some(Field::Text(cell));
                        }
                    }
                }
                sink.record(at, &raw, None);
            }
            Err(e) => {
                record += 1;
                let at = Position::at(record, Some(line));
                if let ::csv::ErrorKind::Utf8 { .. } = e.kind() {
                    sink.invalid(
                        at,
                        Rejection::unreadable(Reason::InvalidEncoding, "row is not valid UTF-8"),
                    );
                    continue;
                }
                return csv_error(e, gzip, at, sink);
            }
        }
    }
}

/// Maps header names to field indices; unknown or repeated columns are an error.
fn header_columns(row: &::csv::StringRecord) -> Result<Vec<usize>, String> {
    let mut columns = Vec::with_capacity(row.len());
    for (i, name) in row.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}');
        let Some(index) = FIELD_NAMES.iter().position(|f| *f == name) else {
            return Err(format!(
                "unknown column {name:?} (column {}) in the header; {}known columns: {}",
                i + 1,
                separator_hint(name),
                FIELD_NAMES.join(", ")
            ));
        };
        if columns.contains(&index) {
            return Err(format!("column {name:?} appears twice in the header"));
        }
        columns.push(index);
    }
    Ok(columns)
}

/// When an unknown column is really several known ones joined by another separator (a
/// spreadsheet's `;` export, a tab or a `|`), says so: that is the fix, not the field name.
fn separator_hint(column: &str) -> &'static str {
    const OTHERS: [(char, &str); 3] = [
        (
            ';',
            "the header looks separated by ';': CSV files must be comma-separated; ",
        ),
        (
            '\t',
            "the header looks separated by tabs: CSV files must be comma-separated; ",
        ),
        (
            '|',
            "the header looks separated by '|': CSV files must be comma-separated; ",
        ),
    ];
    OTHERS
        .iter()
        .find(|(separator, _)| {
            column.contains(*separator)
                && column
                    .split(*separator)
                    .any(|part| FIELD_NAMES.contains(&part.trim()))
        })
        .map_or("", |(_, hint)| hint)
}

fn csv_error(
    e: ::csv::Error,
    gzip: bool,
    at: Position,
    sink: &mut dyn RecordSink,
) -> Result<(), Interrupted> {
    match e.into_kind() {
        ::csv::ErrorKind::Io(io) => reject_rest(io, gzip, at, sink),
        other => {
            sink.invalid(
                at,
                Rejection::unreadable(Reason::InvalidCsv, format!("{other:?}")),
            );
            Ok(())
        }
    }
}

/// Where the line breaks of the input are, for the 1-based line on which each row starts: the
/// csv crate reports where it began looking, before the blank lines and CR/LF it skips.
#[derive(Default)]
struct LineIndex {
    /// Offsets of `\r` and `\n` bytes not yet passed, and whether each is a `\n`.
    breaks: VecDeque<(u64, bool)>,
    /// `\n`s before the first entry of `breaks`.
    newlines_passed: u64,
    /// Bytes read so far.
    read: u64,
}

impl LineIndex {
    /// The line of the first byte at or after `offset` that is not a line break.
    fn line_at(&mut self, offset: u64) -> u64 {
        while let Some(&(at, newline)) = self.breaks.front() {
            if at >= offset {
                break;
            }
            self.newlines_passed += u64::from(newline);
            self.breaks.pop_front();
        }
        // The breaks the csv reader skipped are the run of consecutive offsets from `offset`.
        let skipped = (offset..)
            .zip(&self.breaks)
            .take_while(|(expected, (at, _))| at == expected)
            .filter(|(_, (_, newline))| *newline)
            .count() as u64;
        self.newlines_passed + skipped + 1
    }
}

/// Records line breaks as the csv reader pulls bytes through.
struct Indexed<R> {
    inner: R,
    index: Rc<RefCell<LineIndex>>,
}

impl<R: Read> Read for Indexed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut index = self.index.borrow_mut();
        let base = index.read;
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' || *b == b'\r' {
                index.breaks.push_back((base + i as u64, *b == b'\n'));
            }
        }
        index.read += n as u64;
        Ok(n)
    }
}
