#!/usr/bin/env bash
# Runs dsp-conversions locally, end to end, on embedded defaults: the real function binary behind
# a Lambda emulator, moto for S3/SQS/Secrets Manager and a fake Amazon DSP. Nothing leaves this
# machine and nothing needs configuring.
#
#   ./scripts/demo.sh [--keep-logs] [--keep]
#
# --keep leaves moto_server and the fake DSP running after a demo that passed and prints the
# function's environment (export lines) and the `cargo lambda watch` / `cargo lambda invoke`
# commands that run the function against them, and how to stop them: the local loop in one command.
#
# Needs python3 (3.11+) and, unless DEMO_BINARY names an already built function binary, cargo.
# Installs with pip only what is missing (moto[server], boto3). See tools/demo.py for what the
# demo does; its last line is `DEMO RESULT {...}`, and it exits 0 only when the accounting holds.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'demo.sh: %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 2; }

command -v python3 >/dev/null 2>&1 || die "python3 is required (3.11 or later)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "python3 is $(python3 -c 'import platform; print(platform.python_version())'); 3.11 or later is required"

# moto.server pulls in moto's server extras (flask); a bare `moto` is not enough to run it.
if python3 -c 'import moto, moto.server, boto3' >/dev/null 2>&1; then
  say "Python packages moto[server] and boto3: already installed"
else
  say "installing the missing Python packages: python3 -m pip install 'moto[server]' boto3"
  python3 -m pip install --quiet 'moto[server]' boto3 \
    || die "pip could not install them; with a system-managed Python, use a virtualenv first:
  python3 -m venv .venv && . .venv/bin/activate && ./scripts/demo.sh"
fi

if [[ -n "${DEMO_BINARY:-}" ]]; then
  binary="$DEMO_BINARY"
  say "using the function binary $binary (DEMO_BINARY)"
else
  command -v cargo >/dev/null 2>&1 || die "cargo is required to build the function (or set DEMO_BINARY)"
  say "building the function: cargo build --bin dsp-conversions"
  cargo build --bin dsp-conversions
  target_dir="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  binary="$target_dir/debug/dsp-conversions"
fi
[[ -x "$binary" ]] || die "$binary is not an executable file"

exec python3 tools/demo.py --binary "$binary" "$@"
