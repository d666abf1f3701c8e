//! Every reader (JSON, NDJSON, CSV, each optionally gzip) and event validation on arbitrary
//! bytes: records or rejections, never a panic, and nothing read twice.
#![no_main]

mod common;

use dsp_conversions::read::{self, Encoding, Format, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let format = match selector % 3 {
        0 => Format::Json,
        1 => Format::Ndjson,
        _ => Format::Csv,
    };
    let encoding = Encoding { format, gzip: selector & 0x80 != 0 };
    let limits = Limits { max_record_bytes: 4096, max_object_bytes: 1 << 20 };
    let mut sink = common::Validate::new();
    let _ = read::read_object(bytes, encoding, limits, &mut sink);
    let mut body = common::Validate::new();
    let _ = read::read_json_slice(bytes, &mut body);
});
