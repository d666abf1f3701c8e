#!/usr/bin/env python3
"""Delivery under a shared rate limit: K concurrent invocations of the real function binary,
fed by an SQS event source mapping (tools/sqs_mapping.py) against moto_server, deliver to the
fake DSP (tools/fake_dsp.py) whose server-wide token bucket admits L requests/s and answers
the rest 429 with Retry-After.

BENCHMARK TOOLING, not product code. Python 3.11 + boto3, moto_server on PATH; loopback only.

Usage
-----
    python3 tools/bench_shared_rate.py [--binary PATH] [--runs 2] [--limit 5] [--latency-ms 50]
        [--seconds 60] [--scenario NAME ...] [--json FILE]

  --binary PATH    the function (default: $CARGO_TARGET_DIR or target, /debug/dsp-conversions)
  --runs N         runs per scenario, interleaved (run 1 of every scenario, then run 2, ...)
  --limit L        the fake DSP's limit, requests/s (token bucket of L tokens refilled at L/s)
  --latency-ms MS  the fake DSP's latency on every eventData request
  --seconds S      the queue holds S × L requests' worth of events (enough to keep the
                   invocations busy for about S seconds at the limit)
  --scenario NAME  only these scenarios (repeatable); names as in the table below
  --json FILE      also write every run's figures there

Scenarios: "K=k right" (k = 1, 2, 4 function processes, DSP_CONCURRENCY = k,
DSP_MAX_REQUESTS_PER_SECOND = L), "K=k over3x" (the same with DSP_MAX_REQUESTS_PER_SECOND = 3L),
and "alone c=4" (one process, DSP_CONCURRENCY = 4, budget L: the other three never come).

Each run gets fresh function processes (a cold start: the pacer starts at its share), a fresh
queue with a dead-letter queue (RedrivePolicy maxReceiveCount 3) and reset fake counters. Each
message is a DSP request body of EVENTS_PER_MESSAGE events with fresh timestamps and explicit
clientDedupeIds; the function sends DSP_MAX_EVENTS_PER_REQUEST = 10 events per request.

Figures per run
  share    requests admitted per second over the steady span / L. The steady span runs from the
           first request to the moment the queue had no visible message left (from then on
           fewer than K invocations have work: the tail says nothing about sharing).
  whole    the fake's limit_used over the whole run: admitted / (burst + L × span)
  429s     429 answers / all eventData requests
  accepted distinct events the fake accepted / events queued
  dlq      messages moved to the dead-letter queue (must be 0)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sqs_mapping  # noqa: E402
from sqs_mapping import EventSourceMapping, start_emulators  # noqa: E402

import boto3  # noqa: E402

EVENTS_PER_MESSAGE = 10
EVENTS_PER_REQUEST = 10
BATCH_SIZE = 10           # messages per invocation (Lambda's default): 10 requests of 10 events
FUNCTION_TIMEOUT = 60
VISIBILITY_TIMEOUT = 90   # above the function timeout, as AWS advises
MAX_RECEIVE_COUNT = 3

SCENARIOS = {  # name -> (function processes, DSP_CONCURRENCY, budget as a multiple of L)
    "K=1 right": (1, 1, 1), "K=2 right": (2, 2, 1), "K=4 right": (4, 4, 1),
    "K=1 over3x": (1, 1, 3), "K=2 over3x": (2, 2, 3), "K=4 over3x": (4, 4, 3),
    "alone c=4": (1, 4, 1),
}

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with NO_PROXY.open(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wait_up(url: str) -> None:
    for _ in range(150):
        with contextlib.suppress(OSError):
            NO_PROXY.open(url, timeout=2).read()
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def services(limit: float, latency_ms: int, work: str):
    """moto_server and the fake DSP on loopback ports; yields (moto URL, fake DSP URL)."""
    moto_port = free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "moto.log"), "wb"))
    config = os.path.join(work, "dsp.json")
    with open(config, "w") as f:
        json.dump({"latency_ms": latency_ms, "rate_limit_rps": limit}, f)
    dsp = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_dsp.py"), "--quiet",
                            "--port", "0", "--config", config],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = dsp.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"the fake DSP did not start ({line!r})")
        moto_url = f"http://127.0.0.1:{moto_port}"
        dsp_url = f"http://127.0.0.1:{int(line.split()[1])}"
        wait_up(moto_url + "/moto-api/")
        wait_up(dsp_url + "/_control/health")
        yield moto_url, dsp_url
    finally:
        for p in (moto, dsp):
            p.terminate()
        for p in (moto, dsp):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def fill_queue(sqs, name: str, messages: int) -> tuple[str, int]:
    """A queue named `name` with its dead-letter queue, holding `messages` DSP request bodies."""
    dlq_url = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": str(MAX_RECEIVE_COUNT)})})["QueueUrl"]
    now = dt.datetime.now(dt.timezone.utc)
    n = 0
    for start in range(0, messages, 10):
        entries = []
        for m in range(start, min(start + 10, messages)):
            events = []
            for _ in range(EVENTS_PER_MESSAGE):
                events.append({
                    "conversionDefinitionId": "def-purchase", "name": "purchase",
                    "timestamp": (now - dt.timedelta(seconds=n % 3600)).isoformat(timespec="seconds"),
                    "countryCode": "US", "value": 10 + n % 90, "currencyCode": "USD",
                    "matchKeys": [{"type": "EMAIL", "values": [
                        hashlib.sha256(f"user{n}@example.com".encode()).hexdigest()]}],
                    "clientDedupeId": f"{name}-{n}"})
                n += 1
            entries.append({"Id": str(m - start), "MessageBody": json.dumps(
                {"source": "SERVER_TO_SERVER", "eventData": events})})
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url, n


def drained_at(sqs, url: str, stop: threading.Event, out: list) -> None:
    """Records the first moment the queue had no visible message."""
    while not stop.is_set():
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        if int(attrs["Attributes"]["ApproximateNumberOfMessages"]) == 0:
            out.append(time.time())
            return
        time.sleep(0.2)


def run_once(scenario: str, run: int, args, moto_url: str, dsp_url: str, work: str) -> dict:
    processes, concurrency, over = SCENARIOS[scenario]
    limit = args.limit
    sqs = boto3.client("sqs", endpoint_url=moto_url)
    name = f"conv-{scenario.replace('=', '').replace(' ', '-').replace('.', '')}-{run}"
    messages = int(args.seconds * limit * EVENTS_PER_REQUEST / EVENTS_PER_MESSAGE)
    url, events = fill_queue(sqs, name, messages)
    http("POST", dsp_url + "/_control/reset")
    env = dict(os.environ,
               DSP_SECRET_ID="dsp", DSP_API_URL=dsp_url, DSP_TOKEN_URL=dsp_url + "/auth/o2/token",
               DSP_CONCURRENCY=str(concurrency),
               DSP_MAX_REQUESTS_PER_SECOND=str(int(over * limit)),
               DSP_MAX_EVENTS_PER_REQUEST=str(EVENTS_PER_REQUEST),
               DSP_DEFAULT_CONVERSION_DEFINITION_ID="def-purchase",
               DSP_LOOKUP_DEFINITIONS="false",
               RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    with open(os.path.join(work, "function.log"), "ab") as log, \
            start_emulators(args.binary, processes, env=env, timeout=FUNCTION_TIMEOUT,
                            log_file=log) as urls:
        stop, drained = threading.Event(), []
        watcher = threading.Thread(target=drained_at, args=(sqs, url, stop, drained), daemon=True)
        mapping = EventSourceMapping(sqs, url, urls, batch_size=BATCH_SIZE, max_concurrency=processes,
                                     idle_stop_s=2, max_total_s=args.seconds * 4)
        watcher.start()
        counts = mapping.run()
        stop.set()
    state = http("GET", dsp_url + "/_control/state")
    rate = state["rate"]
    requests = rate["admitted"] + rate["throttled"]
    end = drained[0] if drained else rate["last_t"]
    steady = [s for s in rate["per_second"] if rate["first_t"] <= s["t"] and s["t"] + 1 <= end]
    share = (sum(s["admitted"] for s in steady) / len(steady) / limit) if steady else None
    return {
        "scenario": scenario, "run": run, "share": share, "steady_s": len(steady),
        "whole": rate["limit_used"], "requests": requests,
        "share_429": rate["responses_429"] / requests if requests else None,
        "events": events, "accepted": state["accepted_count"], "duplicates": state["duplicates"],
        "dlq": counts["moved_to_dlq"], "invocations": counts["invocations"],
        "invocation_errors": counts["invocation_errors"], "messages_failed": counts["messages_failed"],
        "elapsed_s": counts["elapsed_s"],
        "per_second": [(s["admitted"], s["throttled"]) for s in rate["per_second"]],
    }


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def main() -> int:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    ap = argparse.ArgumentParser(description="Delivery under a shared rate limit.")
    ap.add_argument("--binary", default=os.path.join(target, "debug", "dsp-conversions"))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--limit", type=float, default=5)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    ap.add_argument("--json")
    args = ap.parse_args()
    if not os.access(args.binary, os.X_OK):
        print(f"build first: cargo build --bin dsp-conversions ({args.binary})", file=sys.stderr)
        return 2
    scenarios = args.scenario or list(SCENARIOS)
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    sqs_mapping.quiet = True
    results = []
    with tempfile.TemporaryDirectory(prefix="dsp-bench-shared-rate.") as work, \
            services(args.limit, args.latency_ms, work) as (moto_url, dsp_url):
        os.environ["AWS_ENDPOINT_URL"] = moto_url
        boto3.client("secretsmanager").create_secret(Name="dsp", SecretString=json.dumps({
            "client_id": "demo-client-id", "client_secret": "demo-client-secret",
            "refresh_token": "demo-refresh-token", "advertiser_id": "demo-advertiser"}))
        print(f"{'scenario':<11} {'run':>3} {'share':>6} {'whole':>6} {'429s':>6} {'requests':>8} "
              f"{'accepted':>9} {'dlq':>4} {'s':>6}", flush=True)
        for run in range(1, args.runs + 1):
            for scenario in scenarios:
                r = run_once(scenario, run, args, moto_url, dsp_url, work)
                results.append(r)
                print(f"{scenario:<11} {run:>3} {pct(r['share']):>6} {pct(r['whole']):>6} "
                      f"{pct(r['share_429']):>6} {r['requests']:>8} "
                      f"{r['accepted']:>4}/{r['events']:<4} {r['dlq']:>4} {r['elapsed_s']:>6.1f}",
                      flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    print(f"\nmedians of {args.runs} run(s); limit {args.limit:g} requests/s, latency {args.latency_ms} ms")
    print(f"{'scenario':<11} {'share':>6} {'429s':>6} {'dlq':>4}")
    for scenario in scenarios:
        rs = [r for r in results if r["scenario"] == scenario]
        med = lambda key: statistics.median(r[key] for r in rs if r[key] is not None)  # noqa: E731
        print(f"{scenario:<11} {pct(med('share')):>6} {pct(med('share_429')):>6} "
              f"{max(r['dlq'] for r in rs):>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
