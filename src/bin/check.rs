//! `dsp-conversions-check FILE… [--out FILE]`: runs the function's own pipeline on local files
//! in dry-run mode, prints what it would send and reject, and exits non-zero on any rejection.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsp_conversions::config::Config;
use dsp_conversions::domain::Unit;
use dsp_conversions::pipeline::{Invocation, Pipeline};
use dsp_conversions::store::{LocalFiles, Memory};
use dsp_conversions::trigger::{Input, Mode, Work, WorkUnit};

const USAGE: &str = "usage: dsp-conversions-check FILE... [--out REQUESTS.ndjson]

Checks conversion files (.json, .ndjson, .jsonl, .csv, optionally .gz) with the same pipeline
the Lambda function runs, in dry-run mode: nothing is sent. Prints the events read, the valid
ones, the rejections by reason with where the first few are, and the requests that would be
sent. --out writes those request bodies, one per line. Exits 1 when anything is rejected.
Configuration comes from the same environment variables as the function (DSP_*).";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut files = Vec::new();
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => match args.next() {
                Some(path) => out = Some(path),
                None => return usage("--out needs a file name"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if arg.starts_with("--") => return usage(&format!("unknown option {arg}")),
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        return usage("no files given");
    }
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let config = Config::from_lookup(|name| match name {
        "DRY_RUN" => Some("true".into()),
        "REJECTS_BUCKET" | "RETRY_QUEUE_URL" => None,
        "DSP_SECRET_ID" => Some(std::env::var(name).unwrap_or_else(|_| "unused".into())),
        // No credentials here: ids and the default only (a saved list resolves names).
        "DSP_LOOKUP_DEFINITIONS" => Some("false".into()),
        _ => std::env::var(name).ok(),
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let bodies: Option<Box<dyn Write + Send>> = match &out {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(Box::new(std::io::BufWriter::new(f))),
            Err(e) => {
                eprintln!("cannot create {path}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let memory = Arc::new(Memory::default());
    let dsp = Arc::new(dsp_conversions::dsp::Dsp::new(&config.dsp, memory.clone()));
    let pipeline = Pipeline::new(Arc::new(config), Arc::new(LocalFiles), memory, dsp);
    let units = files
        .iter()
        .enumerate()
        .map(|(i, path)| WorkUnit {
            unit: Arc::new(Unit::file(i, path)),
            input: Input::Object {
                bucket: String::new(),
                key: path.clone(),
            },
        })
        .collect();
    let work = Work {
        mode: Mode::Objects,
        units,
        messages: Vec::new(),
    };
    let invocation = Invocation {
        request_id: "check".into(),
        started: time::OffsetDateTime::now_utc(),
        cutoff: Instant::now() + Duration::from_secs(365 * 24 * 3600),
    };
    let report = pipeline.run(work, invocation, bodies).await;
    let t = &report.totals;
    println!(
        "{} file(s): {} events, {} valid, {} rejected; {} request(s) would be sent",
        files.len(),
        t.received,
        t.valid_unsent,
        t.rejected,
        report.requests
    );
    let d = &report.deletions;
    if d.received > 0 {
        println!(
            "{} deletion request(s), {} valid, {} rejected",
            d.received, d.valid_unsent, d.rejected
        );
    }
    for (code, summary) in &report.reasons {
        println!("  {code}: {} — {}", summary.count, summary.message);
        for example in &summary.examples {
            println!("      at {example}");
        }
    }
    if let Some(path) = &out {
        println!("request bodies written to {path}");
    }
    if report.failure.is_some() && t.incomplete {
        eprintln!("some files could not be read to the end");
        return ExitCode::from(2);
    }
    if t.rejected + d.rejected > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("{problem}\n\n{USAGE}");
    ExitCode::from(2)
}
