//! Per-stage benchmarks: reading each format, validation and mapping, batching and request
//! bodies, and SHA-256 per identifier. Run with `cargo bench --bench stages`; figures are in
//! BENCHMARKS.md.

// criterion_group! and criterion_main! generate functions without docs.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dsp_conversions::batch::{self, Batcher};
use dsp_conversions::domain::Rejection;
use dsp_conversions::domain::{Origin, Position, Unit};
use dsp_conversions::event::match_key::{prepare, sha256_hex, MatchKeyType};
use dsp_conversions::event::{validate, Rules, Validated};
use dsp_conversions::read::RawEvent;
use dsp_conversions::read::{read_object, Encoding, Format, Limits, RecordSink};
use time::OffsetDateTime;

/// Events per iteration of the stage benchmarks.
const N: usize = 20_000;

/// Counts records and touches each, so that reading is all that is measured.
#[derive(Default)]
struct Count {
    records: u64,
    invalid: u64,
}

impl RecordSink for Count {
    fn record(&mut self, _: Position, raw: &RawEvent<'_>, source: Option<&str>) {
        black_box((raw.user_identifier.is_some(), source));
        self.records += 1;
    }
    fn invalid(&mut self, _: Position, _: Rejection) {
        self.invalid += 1;
    }
}

fn read(c: &mut Criterion) {
    let ndjson = common::ndjson(N);
    let inputs = [
        ("ndjson", Format::Ndjson, false, ndjson.clone()),
        ("ndjson_gz", Format::Ndjson, true, common::gzip(&ndjson)),
        ("csv", Format::Csv, false, common::csv(N)),
        ("json_array", Format::Json, false, common::json_array(N)),
    ];
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(N as u64));
    for (name, format, gzip, bytes) in &inputs {
        let encoding = Encoding {
            format: *format,
            gzip: *gzip,
        };
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut sink = Count::default();
                read_object(&bytes[..], encoding, Limits::default(), &mut sink).unwrap();
                assert_eq!((sink.records, sink.invalid), (N as u64, 0));
            })
        });
    }
    group.finish();
}

fn origin(record: u64) -> Origin {
    Origin {
        unit: Arc::new(Unit::object(0, "bucket", "events.ndjson", None)),
        position: Position::at(record, Some(record)),
    }
}

fn validated(n: usize) -> Vec<Validated> {
    let rules = Rules::new(common::config().events, OffsetDateTime::now_utc());
    let text = String::from_utf8(common::ndjson(n)).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let raw = RawEvent::from_json(line).unwrap();
            validate(&raw, None, &rules, &origin(i as u64 + 1)).unwrap()
        })
        .collect()
}

fn events(c: &mut Criterion) {
    let rules = Rules::new(common::config().events, OffsetDateTime::now_utc());
    let text = String::from_utf8(common::ndjson(N)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let raws: Vec<RawEvent<'_>> = lines
        .iter()
        .map(|l| RawEvent::from_json(l).unwrap())
        .collect();
    let origins: Vec<Origin> = (1..=N as u64).map(origin).collect();

    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("parse", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(RawEvent::from_json(line).unwrap());
            }
        })
    });
    group.bench_function("validate", |b| {
        b.iter(|| {
            for (raw, origin) in raws.iter().zip(&origins) {
                black_box(validate(raw, None, &rules, origin).unwrap());
            }
        })
    });
    group.finish();
}

fn batches(c: &mut Criterion) {
    let valid = validated(N);
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("batch", |b| {
        b.iter_batched(
            || valid.clone(),
            |events| {
                let mut batcher = Batcher::new(100);
                let mut full = 0;
                for e in events {
                    full += usize::from(batcher.push(e).is_some());
                }
                black_box((full, batcher.finish().count()))
            },
            BatchSize::LargeInput,
        )
    });
    let requests: Vec<&[Validated]> = valid.chunks(100).collect();
    group.bench_function("serialize_bodies", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for chunk in &requests {
                bytes += batch::body(chunk[0].source, chunk).len();
            }
            black_box(bytes)
        })
    });
    group.finish();
}

fn sha256(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Elements(1));
    let email = "customer.00012345@example.com";
    group.bench_function("hex_per_identifier", |b| {
        b.iter(|| sha256_hex(black_box(email.as_bytes())))
    });
    group.bench_function("prepare_email", |b| {
        b.iter(|| {
            prepare(
                MatchKeyType::Email,
                black_box(" Customer.00012345@Example.com "),
                None,
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = sha256, read, events, batches
}
criterion_main!(benches);
