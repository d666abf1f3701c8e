//! The checker (`dsp-conversions-check`), run as the real binary: its summary helps fix a file
//! (every distinct message of a reason, a hint for a CSV that is not comma-separated, a plain
//! "no such file"), `--rejects` writes what the function's rejects report holds, and
//! `definitions` lists the advertiser's conversion definitions from the (fake) DSP.
//!
//! `definitions` needs python3 with moto[server] (`scripts/test.sh` installs it).

// Each test file compiles its own copy of the support modules it needs and uses part of each;
// what this file leaves unused, another test file uses.
#[allow(dead_code)]
mod support {
    pub mod assertions;
    pub mod fake_dsp;
    pub mod moto;
    mod process;
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsp_conversions::config::Config;
use dsp_conversions::domain::Unit;
use dsp_conversions::dsp::Dsp;
use dsp_conversions::pipeline::{Invocation, Pipeline};
use dsp_conversions::store::{LocalFiles, Memory};
use dsp_conversions::trigger::{Input, Mode, Work, WorkUnit};
use serde_json::{json, Value};
use support::assertions::assert_no_leaks;
use support::fake_dsp::{secrets_of, FakeDsp, SECRET};
use support::moto::Moto;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const DEFINITIONS: &str = r#"{"purchase":"582947103856","signup":"582947103857"}"#;

/// The checker with `args`, in a clean environment plus `env`.
fn checker(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsp-conversions-check"));
    cmd.args(args).env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("DSP_CONVERSION_DEFINITIONS", DEFINITIONS)
        .env("DSP_LOOKUP_DEFINITIONS", "false");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run dsp-conversions-check")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn an_hour_ago() -> String {
    (OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&Rfc3339)
        .unwrap()
}

/// An NDJSON file whose faults share reasons with different messages: two events without
/// `eventTime`, one without `conversionType`, two bad country codes, and a valid event.
fn faulty_ndjson(dir: &Path) -> PathBuf {
    let t = an_hour_ago();
    let lines = [
        json!({"conversionType": "purchase", "userIdentifier": "ann@example.com", "countryCode": "US"}),
        json!({"eventTime": t, "userIdentifier": "bob@example.com", "countryCode": "US"}),
        json!({"eventTime": t, "conversionType": "purchase", "userIdentifier": "cy@example.com", "countryCode": "USA"}),
        json!({"conversionType": "signup", "userIdentifier": "dee@example.com", "countryCode": "US"}),
        json!({"eventTime": t, "conversionType": "purchase", "userIdentifier": "eve@example.com", "countryCode": "U1"}),
        json!({"eventTime": t, "conversionType": "purchase", "userIdentifier": "fay@example.com", "countryCode": "US"}),
    ];
    let path = dir.join("faulty.ndjson");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// The rejects report's lines.
fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("rejects file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn the_summary_shows_every_distinct_message_of_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = faulty_ndjson(dir.path());
    let rejects = dir.path().join("rejects.ndjson");
    let out = checker(
        &[
            file.to_str().unwrap(),
            "--rejects",
            rejects.to_str().unwrap(),
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.starts_with("1 file(s): 6 events, 1 valid, 5 rejected"),
        "{text}"
    );

    // Every (reason, message) of the report is in the summary, with its count.
    let mut by_message: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in lines_of(&rejects) {
        let key = (
            line["reason"].as_str().unwrap().to_owned(),
            line["message"].as_str().unwrap().to_owned(),
        );
        *by_message.entry(key).or_default() += 1;
    }
    let missing: Vec<&String> = by_message
        .keys()
        .filter(|(r, _)| r == "MISSING_FIELD")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(missing.len(), 2, "{by_message:?}");
    let countries = by_message
        .keys()
        .filter(|(r, _)| r == "INVALID_COUNTRY_CODE")
        .count();
    assert_eq!(countries, 2, "{by_message:?}");
    assert!(text.contains("  MISSING_FIELD: 3\n"), "{text}");
    assert!(text.contains("  INVALID_COUNTRY_CODE: 2\n"), "{text}");
    for ((_, message), count) in &by_message {
        assert!(
            text.contains(&format!("    {count} × {message}\n")),
            "{message:?} ×{count} not in:\n{text}"
        );
    }
    // Where each is: the two events without eventTime are records 1 and 4.
    let file = file.display();
    assert!(
        text.contains(&format!(
            "at {file} line 1 record 1\n        at {file} line 4 record 4\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("is in {}", rejects.display())),
        "{text}"
    );
}

#[test]
fn without_rejects_the_summary_says_how_to_see_them_all_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = faulty_ndjson(dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let out = checker(
        &[file.to_str().unwrap()],
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("  MISSING_FIELD: 3\n"), "{text}");
    assert!(text.contains("--rejects FILE"), "{text}");
    // The temporary report is gone, and nothing was written beside the input.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn rejects_file_holds_the_lines_the_function_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ndjson = faulty_ndjson(dir.path());
    let csv = dir.path().join("rows.csv");
    std::fs::write(
        &csv,
        format!(
            "eventTime,conversionType,userIdentifier,countryCode,currencyCode,conversionValue\n\
             {t},purchase,ann@example.com,US,USD,10\n\
             {t},purchase,+1 206 555 0100,US,XYZ,10\n\
             2026-11-28T09:30:00,signup,bob@example.com,US,,\n",
            t = an_hour_ago()
        ),
    )
    .unwrap();
    let files = [
        ndjson.to_str().unwrap().to_owned(),
        csv.to_str().unwrap().to_owned(),
    ];
    let rejects = dir.path().join("checker.ndjson");
    let out = checker(
        &[&files[0], &files[1], "--rejects", rejects.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The function's pipeline, in process, with the same configuration and a rejects file.
    let config = Config::from_lookup(|name| match name {
        "DSP_SECRET_ID" => Some("unused".into()),
        "DRY_RUN" => Some("true".into()),
        "DSP_CONVERSION_DEFINITIONS" => Some(DEFINITIONS.into()),
        "DSP_LOOKUP_DEFINITIONS" => Some("false".into()),
        _ => None,
    })
    .unwrap();
    let memory = Arc::new(Memory::default());
    let dsp = Arc::new(Dsp::new(&config.dsp, memory.clone()));
    let mut pipeline = Pipeline::new(Arc::new(config), Arc::new(LocalFiles), memory, dsp);
    let expected = dir.path().join("function.ndjson");
    pipeline.rejects_file = Some(expected.clone());
    let work = Work {
        mode: Mode::Objects,
        units: files
            .iter()
            .enumerate()
            .map(|(i, path)| WorkUnit {
                unit: Arc::new(Unit::file(i, path)),
                input: Input::Object {
                    bucket: String::new(),
                    key: path.clone(),
                },
            })
            .collect(),
        messages: Vec::new(),
    };
    let invocation = Invocation {
        request_id: "in-process".into(),
        started: OffsetDateTime::now_utc(),
        cutoff: Instant::now() + Duration::from_secs(60),
    };
    let report = pipeline.run(work, invocation, None).await;

    let mut got = lines_of(&rejects);
    let mut want = lines_of(&expected);
    assert_eq!(got.len() as u64, report.totals.rejected);
    assert_eq!(got.len(), 7, "{got:#?}");
    let order = |v: &Value| v["origin"].to_string();
    got.sort_by_key(order);
    want.sort_by_key(order);
    assert_eq!(got, want);
    // Each line names its file, record and line, and holds no raw identifier.
    let csv_line = got
        .iter()
        .find(|l| l["origin"]["key"] == files[1].as_str() && l["origin"]["record"] == 3)
        .expect("the CSV's third row");
    assert_eq!(csv_line["origin"]["line"], 4);
    assert_eq!(csv_line["reason"], "INVALID_TIMESTAMP");
    let text = std::fs::read_to_string(&rejects).unwrap();
    assert_no_leaks(
        &text,
        &[
            "ann@example.com".into(),
            "206 555 0100".into(),
            "cy@example.com".into(),
        ],
    );
}

#[test]
fn a_header_separated_by_another_character_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    for (separator, said) in [(";", "';'"), ("\t", "tabs"), ("|", "'|'")] {
        let path = dir.path().join("export.csv");
        let header = [
            "eventTime",
            "conversionType",
            "userIdentifier",
            "countryCode",
        ]
        .join(separator);
        let row = [an_hour_ago().as_str(), "purchase", "ann@example.com", "US"].join(separator);
        std::fs::write(&path, format!("{header}\n{row}\n")).unwrap();
        let out = checker(&[path.to_str().unwrap()], &[]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
        assert!(text.contains("UNKNOWN_FIELD"), "{text}");
        assert!(
            text.contains(&format!(
                "the header looks separated by {said}: CSV files must be comma-separated"
            )),
            "{text}"
        );
    }
    // A header with a plain unknown column gets no such hint.
    let path = dir.path().join("extra.csv");
    std::fs::write(
        &path,
        format!("eventTime,conversionType,userIdentifier,countryCode,email\n{},purchase,ann@example.com,US,x\n", an_hour_ago()),
    )
    .unwrap();
    let text = stdout(&checker(&[path.to_str().unwrap()], &[]));
    assert!(
        text.contains("unknown column \"email\" (column 5)"),
        "{text}"
    );
    assert!(!text.contains("looks separated"), "{text}");
}

#[test]
fn a_missing_file_is_named_plainly_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let present = faulty_ndjson(dir.path());
    let missing = dir.path().join("typo.ndjson");
    let out = checker(&[present.to_str().unwrap(), missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("no such file: {}\n", missing.display())
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_saved_definitions_list_is_read_and_a_bad_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = faulty_ndjson(dir.path());
    let good = dir.path().join("definitions.json");
    std::fs::write(
        &good,
        r#"{"conversionDefinitions": [{"conversionDefinitionId": "582947103856", "name": "purchase",
            "conversionType": "OFF_AMAZON_PURCHASES", "source": "SERVER_TO_SERVER"}], "nextToken": null}"#,
    )
    .unwrap();
    let out = checker(
        &[
            file.to_str().unwrap(),
            "--definitions",
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("6 events"), "{}", stdout(&out));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "[1, 2]").unwrap();
    let out = checker(
        &[
            file.to_str().unwrap(),
            "--definitions",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!(
            "{} is not a list of conversion definitions",
            bad.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn definitions_lists_the_advertisers_conversion_definitions() {
    let moto = Moto::start();
    moto.clients().await.secret("dsp/check", SECRET).await;
    let dsp = FakeDsp::start();
    dsp.control(
        "config",
        json!({"conversion_definitions": [
            {"conversionDefinitionId": "582947103856", "name": "Purchases (web)",
             "conversionType": "OFF_AMAZON_PURCHASES", "source": "SERVER_TO_SERVER"},
            {"conversionDefinitionId": "582947103857", "name": "signup",
             "conversionType": "SIGN_UP", "source": "AMAZON_AD_TAG"},
            {"conversionDefinitionId": "7", "name": "app installs", "conversionType": "OTHER",
             "source": "MMP"}
        ], "definitions_page_size": 2}),
    )
    .await;
    let token_url = format!("{}/auth/o2/token", dsp.url);
    let env = [
        ("DSP_SECRET_ID", "dsp/check"),
        ("DSP_API_URL", dsp.url.as_str()),
        ("DSP_TOKEN_URL", token_url.as_str()),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    let run = |args: &'static [&'static str], env: Vec<(&'static str, String)>| {
        let env: Vec<(&str, String)> = env;
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            checker(args, &env)
        })
    };
    let owned: Vec<(&'static str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();

    // Every page, as an aligned table.
    let out = run(&["definitions"], owned.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "conversionDefinitionId  name             conversionType        source\n\
         582947103856            Purchases (web)  OFF_AMAZON_PURCHASES  SERVER_TO_SERVER\n\
         582947103857            signup           SIGN_UP               AMAZON_AD_TAG\n\
         7                       app installs     OTHER                 MMP\n"
    );
    let needles = secrets_of(&dsp).await;
    assert_no_leaks(&(stdout(&out) + &stderr(&out)), &needles);

    // As JSON, which --definitions reads back.
    let out = run(&["definitions", "--json"], owned.clone())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["conversionDefinitions"].as_array().unwrap().len(), 3);
    assert_eq!(
        listed["conversionDefinitions"][2],
        json!({"conversionDefinitionId": "7", "name": "app installs", "conversionType": "OTHER", "source": "MMP"})
    );
    let parsed = dsp_conversions::dsp::definitions::parse(&out.stdout).unwrap();
    assert_eq!(parsed.list().len(), 3);

    // Credentials that may not list them: a clear refusal, exit 2.
    dsp.control("config", json!({"definitions_list_status": 403}))
        .await;
    let out = run(&["definitions"], owned.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out)
            .contains("the DSP refused to list the conversion definitions (HTTP 403 or 404)")
            && stderr(&out).contains("dsp/check"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");

    // A secret that does not exist: named, exit 2.
    let mut missing = owned.clone();
    missing[0].1 = "dsp/nothing-here".into();
    let out = run(&["definitions"], missing).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).starts_with("cannot list the conversion definitions: ")
            && stderr(&out).contains("dsp/nothing-here"),
        "{}",
        stderr(&out)
    );

    // No DSP_SECRET_ID: the variable is named.
    let out = run(&["definitions"], owned[1..].to_vec()).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DSP_SECRET_ID"), "{}", stderr(&out));
}

#[test]
fn deletion_files_are_checked_with_the_deletions_option() {
    let dir = tempfile::tempdir().unwrap();
    let text = concat!(
        r#"{"userIdentifier":"ann@example.com"}"#,
        "\n",
        r#"{"matchKeys":[{"type":"PHONE","values":["+1 206 555 0100"]}]}"#,
        "\n",
        r#"{"userIdentifier":"ann@example.com","conversionType":"purchase"}"#,
        "\n"
    );
    let path = dir.path().join("erasures.ndjson");
    std::fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    let o = checker(&[&path, "--deletions"], &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("3 deletion request(s), 2 valid, 1 rejected"),
        "{out}"
    );
    assert!(
        out.contains("UNKNOWN_FIELD") && out.contains("conversionType"),
        "{out}"
    );
    assert!(!out.contains("ann@example.com"), "{out}");
    // Without the flag the same records are read as events.
    let o = checker(&[&path], &[]);
    assert!(
        !stdout(&o).contains("deletion request(s)"),
        "{}",
        stdout(&o)
    );
}
