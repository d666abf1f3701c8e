#!/usr/bin/env bash
# BENCHMARK TOOLING, not product code. Peak memory and cold start of the real function binary:
# generates a large NDJSON object, uploads it to moto_server, and imports it in dry-run mode
# through tools/lambda_emulator.py (an S3 event), then reports the function process's peak RSS
# (VmHWM from /proc/PID/status), the emulator's cold start (spawn → first /next) and the time.
#
#   tools/bench_memory.sh [SIZE_MB...]        default: 100 1024
#
# Needs: a release build (cargo build --release), moto_server, python3 with boto3.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/dsp-conversions}
WORK=${WORK:-$(mktemp -d /tmp/dsp-bench-memory.XXXXXX)}
if (($#)); then SIZES=("$@"); else SIZES=(100 1024); fi
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 2; }

# s3_event KEY, free_port.
source tools/bench_common.sh

MOTO_PORT=$(free_port)
moto_server -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
EMU_PID=
cleanup() {
  [[ -n $EMU_PID ]] && kill "$EMU_PID" 2>/dev/null || true
  kill "$MOTO_PID" 2>/dev/null || true
  rm -f "$WORK"/*.ndjson
}
trap cleanup EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 50); do curl -sf "$AWS_ENDPOINT_URL/moto-api/" >/dev/null && break; sleep 0.2; done

# 100 MB of generated events; larger objects repeat it (the dry run does not care about
# repeated dedupe ids, and generating is slower than importing).
python3 benches/reference/generate.py 470000 ndjson >"$WORK/base.ndjson"

printf '%-8s %-12s %-10s %-12s %-12s %s\n' size_mb events peak_rss_mb cold_start_ms import_s response
for size in "${SIZES[@]}"; do
  file="$WORK/events-$size.ndjson"
  : >"$file"
  base_bytes=$(stat -c %s "$WORK/base.ndjson")
  while (( $(stat -c %s "$file") + base_bytes <= size * 1024 * 1024 )); do cat "$WORK/base.ndjson" >>"$file"; done
  head -c $(( size * 1024 * 1024 - $(stat -c %s "$file") )) "$WORK/base.ndjson" | sed '$d' >>"$file" || true
  python3 - "$file" "$size" <<'PY'
import sys, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3")
try:
    s3.create_bucket(Bucket="bench")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
s3.upload_file(sys.argv[1], "bench", f"in/events-{sys.argv[2]}.ndjson",
               Config=TransferConfig(multipart_chunksize=64 << 20))
PY
  rm -f "$file"

  EMU_PORT=$(free_port)
  DSP_SECRET_ID=unused DRY_RUN=true DSP_LOOKUP_DEFINITIONS=false \
    DSP_CONVERSION_DEFINITIONS='{"purchase":"def-purchase","add_to_cart":"def-cart","sign_up":"def-signup"}' \
    python3 tools/lambda_emulator.py --quiet --port "$EMU_PORT" --timeout 900 -- "$BIN" \
    >"$WORK/emulator-$size.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$EMU_PORT/_emulator/stats" >/dev/null && break; sleep 0.1; done
  payload=$(s3_event "in/events-$size.ndjson")
  start=$(date +%s.%N)
  response=$(curl -s -X POST --data "$payload" "http://127.0.0.1:$EMU_PORT/2015-03-31/functions/f/invocations")
  end=$(date +%s.%N)
  stats=$(curl -s "http://127.0.0.1:$EMU_PORT/_emulator/stats")
  pid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$stats")
  cold=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cold_start_ms"][0])' "$stats")
  hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  received=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("received"))' "$response")
  printf '%-8s %-12s %-10s %-12s %-12s %s\n' "$size" "$received" "$(( hwm_kb / 1024 ))" "$cold" \
    "$(python3 -c "print(round($end - $start, 1))")" "$response"
  kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true; EMU_PID=
  python3 -c 'import boto3,sys; boto3.client("s3").delete_object(Bucket="bench", Key=sys.argv[1])' "in/events-$size.ndjson"
done
