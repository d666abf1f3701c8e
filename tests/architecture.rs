//! The module graph stays drawn: every top-level module of the library has a place in the flow,
//! and a module may use only modules placed before it. A backwards import (and so any cycle)
//! fails this test with the file and the line.

use std::fs;
use std::path::{Path, PathBuf};

/// The layers, earliest first: the shared base, the stores, then the stages in the order data
/// flows through them, then what runs them.
const LAYERS: &[&str] = &[
    "domain", "store", "aws", "trigger", "read", "event", "batch", "dsp", "outcome", "config",
    "pipeline", "handler",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate root and binaries).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

/// Every `crate::name` on a line that is not a comment.
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        // `dsp_conversions::crate::` cannot happen; skip identifiers that merely end in "crate".
        if !preceded.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            } else if let Some(inner) = after.strip_prefix('{') {
                let group: String = inner.chars().take_while(|c| *c != '}').collect();
                found.extend(
                    group
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").to_owned())
                        .filter(|n| !n.is_empty()),
                );
            }
        }
        rest = after;
    }
    found
}

#[test]
fn modules_only_use_earlier_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(
                LAYERS.contains(&name),
                "module `{name}` has no layer: place it in LAYERS of tests/architecture.rs"
            );
        }
    }
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut backwards = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = rank(&module) else { continue };
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for used in crate_paths(line) {
                match rank(&used) {
                    Some(r) if r > own || (r == own && used != module) => backwards.push(format!(
                        "{}:{}: `{module}` uses `{used}`, which comes later",
                        file.display(),
                        n + 1
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(
        backwards.is_empty(),
        "backwards imports:\n{}",
        backwards.join("\n")
    );
}

#[test]
fn the_checker_finds_a_backwards_import() {
    assert_eq!(crate_paths("use crate::pipeline::Report;"), ["pipeline"]);
    assert_eq!(
        crate_paths("use crate::{domain::Origin, outcome::Ledger};"),
        ["domain", "outcome"]
    );
    assert_eq!(
        crate_paths("    let x = crate::domain::describe(&e);"),
        ["domain"]
    );
    assert!(crate_paths("// crate::pipeline in a comment").is_empty());
    assert!(crate_paths("use dsp_conversions::pipeline;").is_empty());
}
