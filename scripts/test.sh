#!/usr/bin/env bash
# The project's test command (README "Run the tests"): formatting, lints, the dependency
# policy (deny.toml), the fake DSP and emulator self-test, then every Rust test (unit, property, integration against moto_server,
# the fake DSP and the real binary under the runtime emulator, the demo, the SAM template).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo deny --locked check bans licenses sources
python3 tools/test_tools.py
cargo nextest run --locked --no-fail-fast
