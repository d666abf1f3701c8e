#!/usr/bin/env bash
# BENCHMARK TOOLING, not product code. Delivery throughput of the real function binary against
# the fake DSP (tools/fake_dsp.py) with 20 ms latency: imports an NDJSON object from moto_server
# through tools/lambda_emulator.py and compares events/s with the ceiling
# min(DSP_MAX_REQUESTS_PER_SECOND, DSP_MAX_IN_FLIGHT / latency) × 100.
#
#   tools/bench_delivery.sh "RPS:IN_FLIGHT:EVENTS" ...     default: 5:4:10000 100:4:50000
#
# Needs: a release build, moto_server, python3 with boto3, curl.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/dsp-conversions}
WORK=$(mktemp -d /tmp/dsp-bench-delivery.XXXXXX)
if (($#)); then CASES=("$@"); else CASES=(5:4:10000 100:4:50000); fi
LATENCY_MS=20
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 2; }

# s3_event KEY, free_port.
source tools/bench_common.sh
MOTO_PORT=$(free_port)
DSP_PORT=$(free_port)
moto_server -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
echo "{\"latency_ms\": $LATENCY_MS}" >"$WORK/dsp.json"
python3 tools/fake_dsp.py --quiet --port "$DSP_PORT" --config "$WORK/dsp.json" >/dev/null &
DSP_PID=$!
EMU_PID=
cleanup() {
  [[ -n $EMU_PID ]] && kill "$EMU_PID" 2>/dev/null || true
  kill "$MOTO_PID" "$DSP_PID" 2>/dev/null || true
}
trap cleanup EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 50); do curl -sf "$AWS_ENDPOINT_URL/moto-api/" >/dev/null && curl -sf "http://127.0.0.1:$DSP_PORT/_control/health" >/dev/null && break; sleep 0.2; done
python3 - <<'PY'
import json, boto3
boto3.client("s3").create_bucket(Bucket="bench")
boto3.client("secretsmanager").create_secret(Name="dsp", SecretString=json.dumps({
    "client_id": "demo-client-id", "client_secret": "demo-client-secret",
    "refresh_token": "demo-refresh-token", "advertiser_id": "demo-advertiser"}))
PY

printf '%-5s %-9s %-7s %-9s %-10s %-12s %-7s %-7s %s\n' rps in_flight events seconds events_s ceiling_ev_s ratio retries response
for case in "${CASES[@]}"; do
  IFS=: read -r rps inflight events <<<"$case"
  key="in/delivery-$rps-$events.ndjson"
  python3 benches/reference/generate.py "$events" ndjson >"$WORK/events.ndjson"
  python3 -c 'import boto3,sys; boto3.client("s3").upload_file(sys.argv[1], "bench", sys.argv[2])' "$WORK/events.ndjson" "$key"
  curl -sf -X POST "http://127.0.0.1:$DSP_PORT/_control/reset" >/dev/null
  curl -sf -X POST --data "{\"latency_ms\": $LATENCY_MS}" "http://127.0.0.1:$DSP_PORT/_control/config" >/dev/null
  EMU_PORT=$(free_port)
  DSP_SECRET_ID=dsp DSP_LOOKUP_DEFINITIONS=false DSP_API_URL=http://127.0.0.1:$DSP_PORT DSP_TOKEN_URL=http://127.0.0.1:$DSP_PORT/auth/o2/token \
    DSP_MAX_REQUESTS_PER_SECOND=$rps DSP_MAX_IN_FLIGHT=$inflight \
    DSP_CONVERSION_DEFINITIONS='{"purchase":"def-purchase","add_to_cart":"def-cart","sign_up":"def-signup"}' \
    python3 tools/lambda_emulator.py --quiet --port "$EMU_PORT" --timeout 900 -- "$BIN" \
    >"$WORK/emulator.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$EMU_PORT/_emulator/stats" >/dev/null && break; sleep 0.1; done
  payload=$(s3_event "$key")
  start=$(date +%s.%N)
  response=$(curl -s -X POST --data "$payload" "http://127.0.0.1:$EMU_PORT/2015-03-31/functions/f/invocations")
  end=$(date +%s.%N)
  python3 - "$rps" "$inflight" "$events" "$start" "$end" "$response" <<'PY'
import json, sys
rps, inflight, events = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
seconds = float(sys.argv[5]) - float(sys.argv[4])
ceiling = min(rps, inflight / 0.020) * 100
rate = events / seconds
# Every attempt counts in `requests`: more requests than batches means retries (429s, 5xx).
retries = json.loads(sys.argv[6]).get("requests", 0) - -(-events // 100)
print(f"{rps:<5} {inflight:<9} {events:<7} {seconds:<9.2f} {rate:<10.0f} {ceiling:<12.0f} {rate / ceiling:<7.2f} {retries:<7} {sys.argv[6]}")
PY
  kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true; EMU_PID=
done
