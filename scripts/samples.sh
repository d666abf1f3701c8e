#!/usr/bin/env bash
# Writes copies of the samples of events/ -- the data files (events/data/*) and the Lambda payloads
# (events/*.json, the ones `cargo lambda invoke --data-file` takes) -- with their timestamps moved so
# that the newest is one hour old: the DSP takes events at most 7 days old, and the committed
# samples carry fixed dates. The repository is left as it is.
#
#   ./scripts/samples.sh [DIR]      # DIR defaults to /tmp/dsp-samples; prints it
#
# Then e.g.:
#   cargo run --bin dsp-conversions-check -- /tmp/dsp-samples/data/*
#   cargo lambda invoke dsp-conversions --data-file /tmp/dsp-samples/sqs-simple-events.json
#
# Needs python3 (3.11+), standard library only; tools/demo.py does the rewriting, the same way
# for the demo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-/tmp/dsp-samples}"
case "$dir" in
  -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) printf 'samples.sh: unknown option %s\n' "$dir" >&2; exit 2 ;;
esac

command -v python3 >/dev/null 2>&1 || { echo "samples.sh: python3 is required (3.11 or later)" >&2; exit 2; }
mkdir -p "$dir"
python3 "$root/tools/demo.py" --samples "$dir" >&2
printf '%s\n' "$(cd "$dir" && pwd)"
