//! `dsp-conversions-check FILE…`: runs the function's own pipeline on local files in dry-run
//! mode and says what it would send and reject, grouped by reason and message so that a file
//! can be fixed from the summary. `dsp-conversions-check definitions` lists the advertiser's
//! conversion definitions with the function's own secret and configuration.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsp_conversions::aws::Aws;
use dsp_conversions::config::Config;
use dsp_conversions::domain::Unit;
use dsp_conversions::dsp::definitions::Listed;
use dsp_conversions::dsp::{Dsp, Session};
use dsp_conversions::event::{DefinitionSource, Definitions};
use dsp_conversions::pipeline::{Invocation, Pipeline, Report};
use dsp_conversions::store::{LocalFiles, Memory};
use dsp_conversions::trigger::{Input, Mode, Work, WorkUnit};
use serde_json::Value;

const USAGE: &str =
    "usage: dsp-conversions-check FILE... [--out REQUESTS.ndjson] [--rejects REJECTS.ndjson]
                             [--definitions LIST.json] [--deletions]
       dsp-conversions-check definitions [--json]

Checks conversion files (.json, .ndjson, .jsonl, .csv, optionally .gz) with the same pipeline
the Lambda function runs, in dry-run mode: nothing is sent and no credentials are needed. Prints
the events read, the valid ones, the rejections by reason and message with where the first few
are, and the requests that would be sent. Exits 1 when anything is rejected, 2 on a usage or
configuration error or a file that cannot be read to the end.

  --out FILE          writes the request bodies that would be sent, one per line
  --rejects FILE      writes every rejection as the function's rejects report does: one JSON
                      line with its origin (file, record, line), reason, message and the event
                      (identifiers hashed)
  --deletions         reads every file as user deletion requests (one person per record), as the
                      function reads objects under DSP_DELETIONS_PREFIX; files whose path starts
                      with that prefix (default deletions/) are read so anyway
  --definitions FILE  resolves conversion definitions from a saved list, as the function does
                      with the DSP's: a /list response {\"conversionDefinitions\": [...]}, e.g. the
                      output of `dsp-conversions-check definitions --json`

Write output files outside the repository, e.g. --out /tmp/requests.ndjson.

`definitions` prints the advertiser's conversion definitions (id, name, conversion type,
source), read from the DSP with the function's secret (DSP_SECRET_ID) and configuration;
--json prints them as a /list response that --definitions reads. Exits 2 when they cannot be
listed.

Configuration comes from the same environment variables as the function (DSP_*).";

/// How many distinct messages of one reason the summary shows.
const MESSAGES_SHOWN: usize = 10;
/// How many positions of one message the summary shows.
const POSITIONS_SHOWN: usize = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("definitions") {
        return match definitions_options(&args[1..]) {
            Ok(Some(json)) => list_definitions(json).await,
            Ok(None) => help(),
            Err(problem) => usage(&problem),
        };
    }
    match check_options(&args) {
        Ok(Some(options)) => check(options).await,
        Ok(None) => help(),
        Err(problem) => usage(&problem),
    }
}

/// What to check and where to write.
struct Options {
    files: Vec<String>,
    out: Option<PathBuf>,
    rejects: Option<PathBuf>,
    definitions: Option<PathBuf>,
    deletions: bool,
}

/// The options of a check; `None` for `--help`.
fn check_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options {
        files: Vec::new(),
        out: None,
        rejects: None,
        definitions: None,
        deletions: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--out" => &mut options.out,
            "--rejects" => &mut options.rejects,
            "--definitions" => &mut options.definitions,
            "--deletions" => {
                options.deletions = true;
                continue;
            }
            "-h" | "--help" => return Ok(None),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => {
                options.files.push(arg.clone());
                continue;
            }
        };
        match args.next() {
            Some(path) => *slot = Some(PathBuf::from(path)),
            None => return Err(format!("{arg} needs a file name")),
        }
    }
    if options.files.is_empty() {
        return Err("no files given".into());
    }
    Ok(Some(options))
}

/// Whether `definitions` prints JSON; `None` for `--help`.
fn definitions_options(args: &[String]) -> Result<Option<bool>, String> {
    let mut json = false;
    for arg in args {
        match arg.as_str() {
            "--json" => json = true,
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("definitions: unexpected argument {arg}")),
        }
    }
    Ok(Some(json))
}

async fn check(options: Options) -> ExitCode {
    // A missing file is the user's typo, said plainly before anything runs (the pipeline would
    // name it as an object of an empty bucket).
    let mut unreadable = false;
    for file in &options.files {
        match std::fs::metadata(file) {
            Ok(m) if m.is_dir() => {
                eprintln!("not a file: {file} is a directory");
                unreadable = true;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("no such file: {file}");
                unreadable = true;
            }
            Err(e) => {
                eprintln!("cannot read {file}: {e}");
                unreadable = true;
            }
        }
    }
    if unreadable {
        return ExitCode::from(2);
    }
    let definitions = match &options.definitions {
        None => None,
        Some(path) => match read_definitions(path) {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };

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
    let bodies: Option<Box<dyn Write + Send>> = match &options.out {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(Box::new(std::io::BufWriter::new(f))),
            Err(e) => {
                eprintln!("cannot create {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    // The summary groups rejections by message from the rejects report, so there always is
    // one: the user's, or a temporary file.
    let (rejects, temporary) = match &options.rejects {
        Some(path) => (path.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "dsp-conversions-check-{}.ndjson",
                std::process::id()
            )),
            true,
        ),
    };
    if let Err(e) = std::fs::File::create(&rejects) {
        eprintln!("cannot create {}: {e}", rejects.display());
        return ExitCode::from(2);
    }

    let memory = Arc::new(Memory::default());
    let dsp = Arc::new(Dsp::new(&config.dsp, memory.clone()));
    let mut pipeline = Pipeline::new(Arc::new(config), Arc::new(LocalFiles), memory, dsp);
    pipeline.definitions = definitions;
    pipeline.rejects_file = Some(rejects.clone());
    let units = options
        .files
        .iter()
        .enumerate()
        .map(|(i, path)| WorkUnit {
            unit: Arc::new(if options.deletions {
                Unit::file(i, path).of_deletions()
            } else {
                Unit::file(i, path)
            }),
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
        options.files.len(),
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
    if t.rejected + d.rejected > 0 {
        match read_rejects(&rejects) {
            Ok(reasons) => print_reasons(&reasons),
            Err(e) => {
                eprintln!(
                    "cannot read the rejections back from {}: {e}",
                    rejects.display()
                );
                print_first_messages(&report);
            }
        }
        if temporary {
            println!("every rejection, with its event (identifiers hashed): --rejects FILE");
        } else {
            println!(
                "every rejection, with its event (identifiers hashed), is in {}",
                rejects.display()
            );
        }
    }
    if temporary {
        let _ = std::fs::remove_file(&rejects);
    }
    if let Some(path) = &options.out {
        println!("request bodies written to {}", path.display());
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

fn read_definitions(path: &Path) -> Result<Definitions, String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("no such file: {}", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    dsp_conversions::dsp::definitions::parse(&bytes).map_err(|e| {
        format!(
            "{} is not a list of conversion definitions ({{\"conversionDefinitions\": [...]}}, as the DSP's /list answers): {e}",
            path.display()
        )
    })
}

/// One distinct message of a reason: how often, and where.
#[derive(Default)]
struct Message {
    count: u64,
    first: usize,
    positions: Vec<String>,
}

/// Rejections by reason, then by message, from a rejects report.
type Grouped = BTreeMap<String, BTreeMap<String, Message>>;

fn read_rejects(path: &Path) -> std::io::Result<Grouped> {
    let mut grouped = Grouped::new();
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    for (n, line) in file.lines().enumerate() {
        let line: Value = serde_json::from_str(&line?)?;
        let text = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
        let message = grouped
            .entry(text("reason"))
            .or_default()
            .entry(text("message"))
            .or_insert_with(|| Message {
                first: n,
                ..Message::default()
            });
        message.count += 1;
        if message.positions.len() < POSITIONS_SHOWN {
            message.positions.push(position(&line["origin"]));
        }
    }
    Ok(grouped)
}

/// An origin of the rejects report as the summary writes it: `FILE line L record R`.
fn position(origin: &Value) -> String {
    let mut text = origin["key"].as_str().unwrap_or("?").to_owned();
    for part in ["line", "record"] {
        if let Some(n) = origin[part].as_u64() {
            text.push_str(&format!(" {part} {n}"));
        }
    }
    text
}

fn print_reasons(grouped: &Grouped) {
    println!("rejected, by reason and message:");
    for (reason, messages) in grouped {
        let total: u64 = messages.values().map(|m| m.count).sum();
        println!("  {reason}: {total}");
        // The most frequent first, then in the order they were met.
        let mut messages: Vec<(&String, &Message)> = messages.iter().collect();
        messages.sort_by_key(|(_, m)| (std::cmp::Reverse(m.count), m.first));
        for (text, m) in messages.iter().take(MESSAGES_SHOWN) {
            println!("    {} × {text}", m.count);
            for at in &m.positions {
                println!("        at {at}");
            }
            if m.count > m.positions.len() as u64 {
                println!("        … and {} more", m.count - m.positions.len() as u64);
            }
        }
        if messages.len() > MESSAGES_SHOWN {
            println!(
                "    … and {} more distinct messages",
                messages.len() - MESSAGES_SHOWN
            );
        }
    }
}

/// The summary the pipeline keeps itself: the first message of each reason.
fn print_first_messages(report: &Report) {
    for (code, summary) in &report.reasons {
        println!("  {code}: {} — {}", summary.count, summary.message);
        for example in &summary.examples {
            println!("      at {example}");
        }
    }
}

/// `definitions`: the advertiser's conversion definitions, as the function lists them.
async fn list_definitions(json: bool) -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let secret_id = config.dsp.secret_id.clone();
    let dsp = Arc::new(Dsp::new(&config.dsp, Arc::new(Aws::from_env())));
    let session = Session::new(dsp, Instant::now() + Duration::from_secs(60));
    let definitions = match session.definitions().await {
        Ok(Listed::Definitions(d)) => d,
        Ok(Listed::Refused) => {
            eprintln!(
                "the DSP refused to list the conversion definitions (HTTP 403 or 404): the \
                 credentials of secret {secret_id} may not list them for its advertiser_id; the \
                 function then resolves conversion definitions by id and \
                 DSP_DEFAULT_CONVERSION_DEFINITION_ID only"
            );
            return ExitCode::from(2);
        }
        Err(cause) => {
            eprintln!("cannot list the conversion definitions: {cause}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", definitions_json(&definitions));
    } else if definitions.list().is_empty() {
        println!("the advertiser has no conversion definitions");
    } else {
        print!("{}", definitions_table(&definitions));
    }
    ExitCode::SUCCESS
}

fn source_name(source: Option<&DefinitionSource>) -> Option<&str> {
    match source? {
        DefinitionSource::Import(s) => Some(s.as_str()),
        DefinitionSource::Other(s) => Some(s),
    }
}

/// The definitions as a `/list` response, which `--definitions` reads back.
fn definitions_json(definitions: &Definitions) -> Value {
    let list: Vec<Value> = definitions
        .list()
        .iter()
        .map(|d| {
            let mut v = serde_json::json!({"conversionDefinitionId": &*d.id, "name": &*d.name});
            if let Some(t) = &d.conversion_type {
                v["conversionType"] = t.as_str().into();
            }
            if let Some(s) = source_name(d.source.as_ref()) {
                v["source"] = s.into();
            }
            v
        })
        .collect();
    serde_json::json!({ "conversionDefinitions": list })
}

/// The definitions as a table aligned in columns.
fn definitions_table(definitions: &Definitions) -> String {
    let mut rows = vec![[
        "conversionDefinitionId".to_owned(),
        "name".to_owned(),
        "conversionType".to_owned(),
        "source".to_owned(),
    ]];
    for d in definitions.list() {
        rows.push([
            d.id.to_string(),
            d.name.to_string(),
            d.conversion_type.clone().unwrap_or_else(|| "-".into()),
            source_name(d.source.as_ref()).unwrap_or("-").to_owned(),
        ]);
    }
    let mut widths = [0; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn help() -> ExitCode {
    println!("{USAGE}");
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("{problem}\n\n{USAGE}");
    ExitCode::from(2)
}
