//! Whole-pipeline benchmarks: read → validate/normalize/hash → batch → serialize request
//! bodies, for each input format.
//!
//! - `one_thread/*`: the stages chained on the calling thread, exactly the calls the pipeline
//!   makes, without its channel and ledger: the cost of the work itself.
//! - `run/*`: `Pipeline::run` in dry run with every request body written (to `io::sink`), the
//!   way `dsp-conversions-check --out` runs it: reader thread, channel, ledger and all.
//!
//! Run with `cargo bench --bench pipeline`; pin to one core with `taskset -c 0`.

// criterion_group! and criterion_main! generate functions without docs.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dsp_conversions::batch::{Batch, Batcher};
use dsp_conversions::domain::Rejection;
use dsp_conversions::domain::{Origin, Position, Unit};
use dsp_conversions::dsp::Dsp;
use dsp_conversions::event::{validate, Rules};
use dsp_conversions::pipeline::{Invocation, Pipeline};
use dsp_conversions::read::RawEvent;
use dsp_conversions::read::{read_object, Encoding, Format, Limits, RecordSink};
use dsp_conversions::store::Memory;
use dsp_conversions::trigger::{Input, Mode, Work, WorkUnit};
use time::OffsetDateTime;

/// Events per iteration.
const N: usize = 50_000;

/// Validates, batches and serializes on the reading thread.
struct Chain {
    rules: Rules,
    unit: Arc<Unit>,
    batcher: Batcher,
    valid: u64,
    body_bytes: usize,
}

impl Chain {
    fn send(&mut self, batch: Batch) {
        self.body_bytes += black_box(batch.body()).len();
    }
}

impl RecordSink for Chain {
    fn record(&mut self, position: Position, raw: &RawEvent<'_>, source: Option<&str>) {
        let origin = Origin {
            unit: self.unit.clone(),
            position,
        };
        let valid = validate(raw, source, &self.rules, &origin).expect("valid bench event");
        self.valid += 1;
        if let Some(batch) = self.batcher.push(valid) {
            self.send(batch);
        }
    }
    fn invalid(&mut self, _: Position, rejection: Rejection) {
        panic!("bench input rejected: {}", rejection.message);
    }
}

fn inputs() -> Vec<(&'static str, &'static str, Format, bool, Vec<u8>)> {
    let ndjson = common::ndjson(N);
    vec![
        (
            "ndjson",
            "events.ndjson",
            Format::Ndjson,
            false,
            ndjson.clone(),
        ),
        (
            "ndjson_gz",
            "events.ndjson.gz",
            Format::Ndjson,
            true,
            common::gzip(&ndjson),
        ),
        ("csv", "events.csv", Format::Csv, false, common::csv(N)),
        (
            "json_array",
            "events.json",
            Format::Json,
            false,
            common::json_array(N),
        ),
    ]
}

fn one_thread(c: &mut Criterion) {
    let config = common::config();
    let mut group = c.benchmark_group("one_thread");
    group.throughput(Throughput::Elements(N as u64));
    for (name, key, format, gzip, bytes) in inputs() {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut chain = Chain {
                    rules: Rules::new(config.events.clone(), OffsetDateTime::now_utc()),
                    unit: Arc::new(Unit::object(0, "bucket", key, None)),
                    batcher: Batcher::new(config.max_events_per_request),
                    valid: 0,
                    body_bytes: 0,
                };
                let encoding = Encoding { format, gzip };
                read_object(&bytes[..], encoding, Limits::default(), &mut chain).unwrap();
                let Chain { mut batcher, .. } = chain;
                let rest: Vec<Batch> = std::mem::replace(&mut batcher, Batcher::new(1))
                    .finish()
                    .collect();
                let mut tail = 0;
                for batch in rest {
                    tail += batch.body().len();
                }
                assert_eq!(chain.valid, N as u64);
                black_box(chain.body_bytes + tail)
            })
        });
    }
    group.finish();
}

fn run(c: &mut Criterion) {
    let config = Arc::new(common::config());
    let memory = Arc::new(Memory::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dsp = Arc::new(Dsp::new(&config.dsp, memory.clone()));
    let pipeline = Pipeline::new(config, memory.clone(), memory.clone(), dsp);
    let mut group = c.benchmark_group("run");
    group.throughput(Throughput::Elements(N as u64));
    for (name, key, _, _, bytes) in inputs() {
        memory.put("bucket", key, bytes);
        group.bench_function(name, |b| {
            b.iter(|| {
                let work = Work {
                    mode: Mode::Objects,
                    units: vec![WorkUnit {
                        unit: Arc::new(Unit::object(0, "bucket", key, None)),
                        input: Input::Object {
                            bucket: "bucket".into(),
                            key: key.into(),
                        },
                    }],
                    messages: Vec::new(),
                };
                let invocation = Invocation {
                    request_id: "bench".into(),
                    started: OffsetDateTime::now_utc(),
                    cutoff: Instant::now() + Duration::from_secs(600),
                };
                let report = runtime.block_on(pipeline.run(
                    work,
                    invocation,
                    Some(Box::new(std::io::sink())),
                ));
                assert_eq!(report.totals.valid_unsent, N as u64);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(8));
    targets = one_thread, run
}
criterion_main!(benches);
