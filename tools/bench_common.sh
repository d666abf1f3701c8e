# BENCHMARK TOOLING, not product code. Helpers shared by tools/bench_memory.sh and
# tools/bench_delivery.sh (sourced from the repository's root).

# The sample S3 notification of events/, pointed at bucket "bench" and key $1.
s3_event() {
  python3 - "$1" <<'PY'
import json, sys
event = json.load(open("events/s3-put.json"))
record = event["Records"][0]
record["s3"]["bucket"]["name"] = "bench"
record["s3"]["object"]["key"] = sys.argv[1]
event["Records"] = [record]
print(json.dumps(event))
PY
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
