//! Event times: the `timestamp` (or `eventTime`) of an event, read as an RFC 3339 date-time
//! (ISO-8601 with a UTC offset) and sent in one canonical form, UTC with seconds,
//! `YYYY-MM-DDThh:mm:ssZ` (docs/dsp-api.md).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::text::Text;

/// Why a timestamp cannot be used. Each says what is wrong, for the rejection message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not shaped like `2026-11-28T09:30:00Z`.
    #[error("is not an ISO-8601 date-time")]
    NotIso8601,
    /// A date and time of day with no offset: which instant is unknown.
    #[error("has no UTC offset")]
    NoOffset,
    /// Shaped right, but the day does not exist (`2026-11-31`, `2026-02-29`, month 13).
    #[error("is not a calendar date")]
    NotCalendarDate,
    /// Shaped right, but the time of day does not exist (`24:00:00`, minute 60).
    #[error("is not a time of day")]
    NotTimeOfDay,
    /// In UTC, before year 0000 or after 9999: no four-digit year to send.
    #[error("is outside the years 0000 to 9999 in UTC")]
    OutOfRange,
}

/// A valid event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    /// The instant, in UTC.
    pub instant: OffsetDateTime,
    /// The instant as the DSP receives it: `YYYY-MM-DDThh:mm:ssZ`.
    pub canonical: Text,
}

/// Reads an RFC 3339 date-time (`2026-11-28T09:30:00.5+01:00`; `t` and `z` in lower case too;
/// `-00:00` is UTC) and gives its instant and canonical text (`2026-11-28T08:30:00Z`): offset
/// applied, fraction of a second dropped, a leap second `:60` read as `:59`.
pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
    let mut r = Reader(text.as_bytes());
    let (year, month, day) = r.date().ok_or(TimestampError::NotIso8601)?;
    if !r.byte(|b| b == b'T' || b == b't') {
        return Err(TimestampError::NotIso8601);
    }
    let (hour, minute, second) = r.time().ok_or(TimestampError::NotIso8601)?;
    if r.byte(|b| b == b'.') && r.digits() == 0 {
        return Err(TimestampError::NotIso8601);
    }
    let offset = r.offset()?;
    if !r.0.is_empty() {
        return Err(TimestampError::NotIso8601);
    }

    let date = Month::try_from(month)
        .ok()
        .and_then(|m| Date::from_calendar_date(i32::from(year), m, day).ok())
        .ok_or(TimestampError::NotCalendarDate)?;
    let leap = second == 60;
    let second = Some(second)
        .filter(|&s| s <= 60)
        .ok_or(TimestampError::NotTimeOfDay)?
        .min(59);
    let time = Time::from_hms(hour, minute, second).map_err(|_| TimestampError::NotTimeOfDay)?;
    let local = PrimitiveDateTime::new(date, time);
    if offset.is_utc() {
        // Most event times: already canonical (`…T…Z`, no fraction), else the text's own
        // fields; no calendar arithmetic either way.
        let as_given = text.len() == 20
            && text.as_bytes().get(10) == Some(&b'T')
            && text.as_bytes().get(19) == Some(&b'Z')
            && !leap;
        return Ok(Timestamp {
            instant: local.assume_utc(),
            canonical: if as_given {
                Text::from(text)
            } else {
                canonical(year, month, day, hour, minute, second)
            },
        });
    }
    let instant = local
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or(TimestampError::OutOfRange)?;
    let (year, month, day) = instant.to_calendar_date();
    let (hour, minute, second) = instant.to_hms();
    Ok(Timestamp {
        instant,
        canonical: canonical(
            u16::try_from(year).unwrap_or_default(),
            u8::from(month),
            day,
            hour,
            minute,
            second,
        ),
    })
}

/// `YYYY-MM-DDThh:mm:ssZ`.
fn canonical(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Text {
    let mut out = *b"0000-00-00T00:00:00Z";
    put(&mut out[0..4], year);
    put(&mut out[5..7], u16::from(month));
    put(&mut out[8..10], u16::from(day));
    put(&mut out[11..13], u16::from(hour));
    put(&mut out[14..16], u16::from(minute));
    put(&mut out[17..19], u16::from(second));
    // Digits and punctuation: ASCII.
    Text::from(std::str::from_utf8(&out).unwrap_or_default())
}

/// Writes `n` into `slot` as decimal digits, zero-padded to its length.
fn put(slot: &mut [u8], mut n: u16) {
    for b in slot.iter_mut().rev() {
        // A digit: below 10.
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// What is left of the text, read from the front.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// Takes one byte that `ok` accepts.
    fn byte(&mut self, ok: impl Fn(u8) -> bool) -> bool {
        match self.0.split_first() {
            Some((&b, rest)) if ok(b) => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// Takes exactly `n` digits (n ≤ 4) as a number.
    fn number(&mut self, n: usize) -> Option<u16> {
        let (head, rest) = self.0.split_at_checked(n)?;
        let mut value = 0;
        for &b in head {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u16::from(b - b'0');
        }
        self.0 = rest;
        Some(value)
    }

    /// Takes any number of digits; how many.
    fn digits(&mut self) -> usize {
        let n = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        self.0 = self.0.get(n..).unwrap_or_default();
        n
    }

    /// `YYYY-MM-DD`, not yet checked against the calendar.
    fn date(&mut self) -> Option<(u16, u8, u8)> {
        let year = self.number(4)?;
        let month = self.two_after(b'-')?;
        let day = self.two_after(b'-')?;
        Some((year, month, day))
    }

    /// `hh:mm:ss`, not yet checked against the clock.
    fn time(&mut self) -> Option<(u8, u8, u8)> {
        let hour = self.two()?;
        let minute = self.two_after(b':')?;
        let second = self.two_after(b':')?;
        Some((hour, minute, second))
    }

    /// `Z`, `z` or `±hh:mm`.
    fn offset(&mut self) -> Result<UtcOffset, TimestampError> {
        if self.0.is_empty() {
            return Err(TimestampError::NoOffset);
        }
        if self.byte(|b| b == b'Z' || b == b'z') {
            return Ok(UtcOffset::UTC);
        }
        let sign = match self.0.first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(TimestampError::NotIso8601),
        };
        self.byte(|_| true);
        let hours = self.two().ok_or(TimestampError::NotIso8601)?;
        let minutes = self.two_after(b':').ok_or(TimestampError::NotIso8601)?;
        if hours > 23 || minutes > 59 {
            return Err(TimestampError::NotIso8601);
        }
        // Both below 60: they fit an i8.
        let (h, m) = (sign * hours as i8, sign * minutes as i8);
        UtcOffset::from_hms(h, m, 0).map_err(|_| TimestampError::NotIso8601)
    }

    fn two(&mut self) -> Option<u8> {
        self.number(2).and_then(|n| u8::try_from(n).ok())
    }

    fn two_after(&mut self, separator: u8) -> Option<u8> {
        if self.byte(|b| b == separator) {
            self.two()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_of(text: &str) -> Result<String, TimestampError> {
        parse(text).map(|t| t.canonical.to_string())
    }

    #[test]
    fn canonical_form_is_utc_with_seconds() {
        for (given, sent) in [
            ("2026-11-28T09:30:00Z", "2026-11-28T09:30:00Z"),
            ("2026-11-28T09:30:00+01:00", "2026-11-28T08:30:00Z"),
            ("2026-11-28T09:30:00.999999-05:30", "2026-11-28T15:00:00Z"),
            ("2026-11-28t09:30:00.5z", "2026-11-28T09:30:00Z"),
            ("2026-11-28T09:30:00-00:00", "2026-11-28T09:30:00Z"),
            // across a day, a month and a year
            ("2027-01-01T00:30:00+01:00", "2026-12-31T23:30:00Z"),
            ("2024-02-28T23:00:00-02:00", "2024-02-29T01:00:00Z"),
            ("2026-06-30T23:59:60Z", "2026-06-30T23:59:59Z"),
            ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"),
        ] {
            assert_eq!(canonical_of(given).as_deref(), Ok(sent), "{given}");
        }
        let t = parse("2026-11-28T09:30:00+01:00").unwrap();
        assert_eq!(t.instant.unix_timestamp(), 1_795_854_600);
        assert_eq!(t.instant.offset(), UtcOffset::UTC);
    }

    #[test]
    fn impossible_dates_are_not_malformed_ones() {
        use TimestampError::*;
        for (given, error) in [
            ("2026-11-31T10:00:00Z", NotCalendarDate),
            ("2026-02-29T10:00:00Z", NotCalendarDate),
            ("2026-13-01T10:00:00Z", NotCalendarDate),
            ("2026-00-10T10:00:00Z", NotCalendarDate),
            ("2026-11-28T24:00:00Z", NotTimeOfDay),
            ("2026-11-28T10:60:00Z", NotTimeOfDay),
            ("2026-11-28T10:00:61Z", NotTimeOfDay),
            ("2026-11-28T09:30:00", NoOffset),
            ("2026-11-28T09:30:00.25", NoOffset),
            ("2026-11-28", NotIso8601),
            ("2026-11-28 09:30:00Z", NotIso8601),
            ("2026-11-28T09:30Z", NotIso8601),
            ("2026-11-28T09:30:00.Z", NotIso8601),
            ("2026-11-28T09:30:00+0100", NotIso8601),
            ("2026-11-28T09:30:00+24:00", NotIso8601),
            ("2026-11-28T09:30:00Z ", NotIso8601),
            ("26-11-28T09:30:00Z", NotIso8601),
            ("2026-11-28éééééééééééé", NotIso8601),
            ("", NotIso8601),
            ("9999-12-31T23:00:00-02:00", OutOfRange),
            ("0000-01-01T00:30:00+01:00", OutOfRange),
        ] {
            assert_eq!(parse(given), Err(error), "{given}");
        }
        assert_eq!(
            NotCalendarDate.to_string(),
            "is not a calendar date",
            "distinct from {NotIso8601}"
        );
    }
}
