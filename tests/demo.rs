//! The one-command local demo (`scripts/demo.sh`) runs the real function binary end to end
//! against moto and the fake DSP, and its accounting holds.
//!
//! Needs python3 with moto[server] and boto3 (the script installs them with pip when missing).
#![cfg(unix)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Sends `signal` to the process group led by `child` (the demo and everything it started).
fn signal_group(child: &Child, signal: &str) {
    let _ = Command::new("bash")
        .args([
            "-c",
            &format!("kill -{signal} -- -{} 2>/dev/null", child.id()),
        ])
        .status();
}

fn drain(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs the demo; `None` as status when it had to be killed.
fn run_demo() -> (Option<ExitStatus>, String, String) {
    let mut child = Command::new("bash")
        .arg("scripts/demo.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DEMO_BINARY", env!("CARGO_BIN_EXE_dsp-conversions"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("cannot run bash scripts/demo.sh");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait().expect("cannot wait for the demo") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                // SIGTERM first: the demo then stops moto, the fake DSP and the emulator itself.
                signal_group(&child, "TERM");
                let grace = Instant::now() + Duration::from_secs(10);
                while Instant::now() < grace && matches!(child.try_wait(), Ok(None)) {
                    thread::sleep(Duration::from_millis(100));
                }
                signal_group(&child, "KILL");
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(100)),
        }
    };
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

#[test]
fn demo_runs_to_the_end_and_its_accounting_matches_the_fake_dsp() {
    let (status, stdout, stderr) = run_demo();
    let shown = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let status =
        status.unwrap_or_else(|| panic!("the demo did not finish within {TIMEOUT:?}\n{shown}"));
    assert!(status.success(), "the demo failed ({status})\n{shown}");

    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DEMO RESULT "))
        .unwrap_or_else(|| panic!("no `DEMO RESULT` line\n{shown}"));
    let result: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("`DEMO RESULT` is not JSON ({e}): {line}\n{shown}"));
    let count = |name: &str| -> u64 {
        result[name]
            .as_u64()
            .unwrap_or_else(|| panic!("`DEMO RESULT` has no count {name:?}: {line}\n{shown}"))
    };
    let (accepted, rejected, redelivered) =
        (count("accepted"), count("rejected"), count("redelivered"));
    let (dsp_accepted, rejects_lines) = (count("dsp_accepted"), count("rejects_lines"));
    count("dsp_requests");

    assert!(accepted > 0, "nothing was accepted: {line}\n{shown}");
    assert_eq!(
        accepted, dsp_accepted,
        "the function's accepted count is not what the DSP stored: {line}\n{shown}"
    );
    // At least the XYZ currency (NDJSON), the offset-less timestamp (CSV) and the non-JSON SQS body.
    assert!(rejected >= 2, "too few rejections: {line}\n{shown}");
    assert_eq!(
        rejects_lines, rejected,
        "not every rejected event is a line in the rejects objects: {line}\n{shown}"
    );
    assert_eq!(redelivered, 0, "events were redelivered: {line}\n{shown}");
}
