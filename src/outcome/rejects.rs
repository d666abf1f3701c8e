//! The rejects report: one NDJSON line per rejected event (origin, reason, message, redacted
//! event), spooled to a temporary file so memory does not grow, then stored as one object per
//! invocation. Without a bucket, rejections are logged with origin and reason only.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use time::OffsetDateTime;

use crate::domain::{Origin, Rejection};

/// Where rejections go.
pub enum Rejects {
    /// Spooled to a file, to be stored under `key`.
    Spool {
        /// The spool file.
        path: PathBuf,
        /// Its writer.
        writer: BufWriter<File>,
        /// Lines written.
        lines: u64,
    },
    /// Logged, origin and reason only.
    Log,
    /// Counted only (dry run).
    Discard,
}

impl Rejects {
    /// A spool file for invocation `request_id`.
    pub fn spool(request_id: &str) -> io::Result<Self> {
        let safe: String = request_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let path =
            std::env::temp_dir().join(format!("dsp-rejects-{safe}-{}.ndjson", std::process::id()));
        let file = File::create(&path)?;
        Ok(Self::Spool {
            path,
            writer: BufWriter::new(file),
            lines: 0,
        })
    }

    /// Rejections written to the file at `path` (kept, even when empty).
    pub fn file(path: &std::path::Path) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self::Spool {
            path: path.to_owned(),
            writer: BufWriter::new(file),
            lines: 0,
        })
    }

    /// Records one rejection.
    pub fn write(&mut self, origin: &Origin, rejection: &Rejection) -> io::Result<()> {
        match self {
            Self::Spool { writer, lines, .. } => {
                serde_json::to_writer(&mut *writer, &line(origin, rejection))?;
                writer.write_all(b"\n")?;
                *lines += 1;
                Ok(())
            }
            Self::Log => {
                tracing::warn!(origin = %origin, reason = %rejection.reason, "event rejected");
                Ok(())
            }
            Self::Discard => Ok(()),
        }
    }

    /// Finishes the spool: the file to store, if anything was written.
    pub fn finish(self) -> io::Result<Option<PathBuf>> {
        match self {
            Self::Spool {
                path,
                mut writer,
                lines,
            } => {
                writer.flush()?;
                if lines == 0 {
                    let _ = std::fs::remove_file(&path);
                    return Ok(None);
                }
                Ok(Some(path))
            }
            _ => Ok(None),
        }
    }
}

/// One line of the report.
pub fn line(origin: &Origin, rejection: &Rejection) -> serde_json::Value {
    serde_json::json!({
        "origin": origin.to_json(),
        "reason": rejection.reason.code(),
        "message": rejection.message,
        "event": rejection.event,
    })
}

/// `${prefix}YYYY/MM/DD/{request_id}.ndjson`, dated at the start of the invocation (UTC).
pub fn key(prefix: &str, started: OffsetDateTime, request_id: &str) -> String {
    let d = started.to_offset(time::UtcOffset::UTC).date();
    format!(
        "{prefix}{:04}/{:02}/{:02}/{request_id}.ndjson",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn key_is_dated_in_utc() {
        let started = datetime!(2026-11-28 23:30:00 -05:00);
        assert_eq!(
            key("rejected/", started, "req-1"),
            "rejected/2026/11/29/req-1.ndjson"
        );
    }
}
