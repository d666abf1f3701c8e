//! Benchmark input shared by the benches: the same simple-shape events as
//! `benches/reference/generate.py` writes, generated in memory, and the configuration that maps
//! their conversion types.

use std::io::Write;

use dsp_conversions::config::Config;
use time::OffsetDateTime;

const TYPES: [&str; 5] = ["purchase", "purchase", "purchase", "add_to_cart", "sign_up"];
const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];
const COUNTRIES: [&str; 4] = ["US", "GB", "DE", "FR"];

/// The configuration the benches run with: dry run, 100 events per request.
pub fn config() -> Config {
    Config::from_lookup(|name| match name {
        "DSP_SECRET_ID" => Some("unused".into()),
        "DSP_LOOKUP_DEFINITIONS" => Some("false".into()),
        "DRY_RUN" => Some("true".into()),
        "DSP_CONVERSION_DEFINITIONS" => Some(
            r#"{"purchase":"def-purchase","add_to_cart":"def-cart","sign_up":"def-signup"}"#.into(),
        ),
        _ => None,
    })
    .expect("bench configuration")
}

/// One event's fields, in the column order of the CSV header.
fn row(i: usize, now: OffsetDateTime) -> [String; 7] {
    let t = now - time::Duration::hours(1) - time::Duration::seconds((i % 86_400) as i64);
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    // The Python generator's value: cents of i, plus 0, 0.005 or 0.01 to exercise rounding.
    let milli = (i % 10_000) * 10 + 5 * (i % 3);
    let value = match milli % 10 {
        0 => format!("{}.{:02}", milli / 1000, (milli % 1000) / 10),
        _ => format!("{}.{:03}", milli / 1000, milli % 1000),
    };
    [
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        TYPES[i % TYPES.len()].to_owned(),
        value,
        CURRENCIES[i % CURRENCIES.len()].to_owned(),
        COUNTRIES[i % COUNTRIES.len()].to_owned(),
        format!("Customer.{i:08}@Example.com"),
        format!("order-{i:010}"),
    ]
}

/// `n` events as NDJSON, one object per line.
pub fn ndjson(n: usize) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::with_capacity(n * 230);
    for i in 0..n {
        let [t, ty, v, cur, cc, id, dd] = row(i, now);
        writeln!(
            out,
            r#"{{"eventTime":"{t}","conversionType":"{ty}","conversionValue":{v},"currencyCode":"{cur}","countryCode":"{cc}","userIdentifier":"{id}","clientDedupeId":"{dd}"}}"#
        )
        .expect("write to a Vec");
    }
    out
}

/// `n` events as CSV with a header row.
pub fn csv(n: usize) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::with_capacity(n * 120);
    out.extend_from_slice(
        b"eventTime,conversionType,conversionValue,currencyCode,countryCode,userIdentifier,clientDedupeId\n",
    );
    for i in 0..n {
        writeln!(out, "{}", row(i, now).join(",")).expect("write to a Vec");
    }
    out
}

/// `n` events as one JSON array.
pub fn json_array(n: usize) -> Vec<u8> {
    let lines = ndjson(n);
    let mut out = Vec::with_capacity(lines.len() + 2);
    out.push(b'[');
    for (i, line) in lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"]\n");
    out
}

/// `bytes` gzip-compressed at the default level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip into a Vec");
    e.finish().expect("gzip into a Vec")
}
