//! Child processes of the tests: the crate root they run from, and a process whose output is
//! collected and which is killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A child process whose output is collected, killed on drop.
pub(super) struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd`, collecting stdout and stderr.
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_reading(cmd, false).0
    }

    /// Spawns a tool of `tools/` that prints `LISTENING <port>` first; returns that port too.
    pub fn spawn_listening(cmd: Command) -> (Self, u16) {
        let (proc, line) = Self::spawn_reading(cmd, true);
        let line = line.unwrap_or_default();
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected LISTENING, got {line:?}"));
        (proc, port)
    }

    /// Spawns `cmd`, collecting stdout and stderr; returns the first stdout line too when
    /// `first_line` is set.
    fn spawn_reading(mut cmd: Command, first_line: bool) -> (Self, Option<String>) {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let first = first_line.then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("first line");
            line.trim().to_owned()
        });
        for stream in [
            Box::new(stdout) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        (Self { child, output }, first)
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
