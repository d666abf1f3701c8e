#!/usr/bin/env bash
# The project's test command: installs what is missing on a fresh machine (moto[server], boto3,
# cfn-lint, cargo-nextest, cargo-deny, clippy and rustfmt; cargo-deny compiles from crates.io in a
# few minutes the first time), then checks formatting, lints, the dependency policy (deny.toml),
# the Python tools' self-test, and runs every Rust test: unit, property, and integration tests
# against moto_server, the fake DSP and the real binary under the Lambda runtime emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

installing() { echo "test.sh: installing $1 (missing on this machine)" >&2; }
python3 -c 'import moto, boto3, flask_cors' 2>/dev/null || { installing 'moto[server] boto3'; pip install --quiet 'moto[server]' boto3; }
command -v moto_server >/dev/null || { installing 'moto[server]'; pip install --quiet 'moto[server]'; }
command -v cfn-lint >/dev/null || { installing cfn-lint; pip install --quiet cfn-lint; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || { installing 'clippy rustfmt'; rustup component add clippy rustfmt; }
cargo nextest --version >/dev/null 2>&1 || { installing cargo-nextest; cargo install --locked cargo-nextest; }
cargo deny --version >/dev/null 2>&1 || { installing cargo-deny; cargo install --locked cargo-deny; }

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo deny --locked check bans licenses sources
python3 tools/test_tools.py
cargo nextest run --locked --no-fail-fast
