#!/usr/bin/env python3
"""Local end-to-end demo of dsp-conversions: the real function binary, fake AWS, fake Amazon DSP.

DEMO TOOLING ONLY -- not product code. Python 3.11, standard library + boto3 (moto for the server).
Run it through ``./scripts/demo.sh``, which installs what is missing and builds the function.

Usage
-----
    python3 tools/demo.py --binary target/debug/dsp-conversions [--keep-logs] [--keep]
    python3 tools/demo.py --samples DIR

  --binary PATH  the function's bootstrap binary (required unless --samples)
  --keep-logs    keep the temporary directory with the logs (it is kept anyway when the demo fails)
  --keep         after a demo that passed, leave moto_server and the fake DSP running (with the
                 secret, buckets, queue and uploaded objects), write the samples with the demo's
                 fresh timestamps and the function's environment into the temporary directory,
                 and print the export lines, the cargo lambda watch / invoke commands and how to
                 stop the services. Implies --keep-logs.
  --samples DIR  only write the samples of events/ (data/* and the payloads *.json) into DIR with
                 timestamps moved so that the newest is one hour old (scripts/samples.sh)

What it does
------------
1. Starts, each on a free 127.0.0.1 port: ``moto_server`` (S3, SQS, Secrets Manager),
   ``tools/fake_dsp.py`` (Amazon DSP + Login with Amazon) and ``tools/lambda_emulator.py`` running
   the binary with the function's environment pointed at both. Every process is stopped at exit,
   whatever happens (Ctrl-C included).
2. Creates the secret ``dsp-conversions/demo`` (the fake DSP's credentials), the buckets
   ``dsp-conversions-uploads`` and ``dsp-conversions-rejects`` and the queue ``dsp-conversions``.
3. Uploads fresh copies of ``events/data/*`` (every timestamp moved forward by the same amount,
   so that the newest event is one hour old; the CSV's offset-less timestamp stays invalid) under
   the keys the ``events/*.json`` payloads name.
4. Plays the parts AWS plays, wired as template.yaml wires them: S3 -> SQS (the upload bucket
   notifies the queue: one S3 event notification message per object), a producer -> SQS (the
   sample message bodies), SQS -> Lambda (the event source mapping of ``tools/sqs_mapping.py``:
   batches of up to 10, deleting what the function did not report in ``batchItemFailures``,
   until the queue is empty; retry messages the function queued itself go through the same loop).
5. Prints what happened, then one machine-readable line:
   ``DEMO RESULT {"accepted", "rejected", "redelivered", "dsp_accepted", "dsp_requests", "rejects_lines"}``.

Exit status 0 only when every invocation answered, the function's accepted total equals the fake
DSP's accepted_count, every rejected event is a line in the rejects objects, received == accepted
+ rejected + redelivered, the rejects objects hold none of the samples' raw identifiers and the
queue is empty at the end. (1: a check failed or a step could not run; 2: bad arguments.)

Counts come from the function: every invocation is an SQS event, whose response is only
batchItemFailures, so they come from each invocation's summary log line (AWS_LAMBDA_LOG_FORMAT=JSON:
{"level", "fields": {"message": "summary", "received", "accepted", ...}, "span": {"requestId"}}).
The logs (function.log, moto.log, fake_dsp.log) are in a temporary directory, removed at exit
unless --keep-logs is given or the demo failed.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import csv
import ctypes
import gzip
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import sqs_mapping  # noqa: E402  (tools/ is not a package)

sqs_mapping.quiet = True   # the demo tells each batch itself

EVENTS = ROOT / "events"
DATA = EVENTS / "data"

REGION = "us-east-1"
SECRET_ID = "dsp-conversions/demo"
SECRET = {
    "client_id": "demo-client-id",
    "client_secret": "demo-client-secret",
    "refresh_token": "demo-refresh-token",
    "advertiser_id": "demo-advertiser",
}
UPLOADS = "dsp-conversions-uploads"
REJECTS = "dsp-conversions-rejects"
QUEUE = "dsp-conversions"
# The advertiser's conversion definitions, as the fake DSP lists them: each has one source.
DEFINITIONS = [
    {"conversionDefinitionId": "582947103856", "name": "Purchase", "conversionType": "OFF_AMAZON_PURCHASES",
     "source": "SERVER_TO_SERVER"},
    {"conversionDefinitionId": "582947103857", "name": "Sign-up", "conversionType": "SIGN_UP",
     "source": "SERVER_TO_SERVER"},
    {"conversionDefinitionId": "582947103858", "name": "Web purchase", "conversionType": "OFF_AMAZON_PURCHASES",
     "source": "AMAZON_AD_TAG"},
    {"conversionDefinitionId": "582947103859", "name": "Web sign-up", "conversionType": "SIGN_UP",
     "source": "AMAZON_AD_TAG"},
]
# Conversion types to definitions, by id or by the name shown in the DSP console.
CONVERSION_DEFINITIONS = {"purchase": "582947103856", "signup": "Sign-up", "web_signup": "Web sign-up"}
FUNCTION_TIMEOUT_S = 60

# Data file -> the key the sample payload names (see events/README.md).
OBJECTS = [
    ("conversions.ndjson", "incoming/2026/11/28/conversions.ndjson"),    # events/s3-put.json
    ("daily export+1.csv.gz", "incoming/daily export+1.csv.gz"),         # events/s3-put-csv-gz.json
    ("conversions.json", "incoming/2026/11/28/conversions.json"),        # events/sqs-s3-notification.json
    ("conversions.csv", "incoming/2026/11/28/conversions.csv"),          # events/eventbridge-object-created.json
]
SQS_SAMPLES = ["sqs-dsp-request.json", "sqs-simple-events.json", "sqs-mixed-invalid.json"]

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
SQS_VISIBILITY_S = 2
SQS_PHASE_S = 60

class DemoError(Exception):
    """A step that cannot go on; its message says which and why."""


# --------------------------------------------------------------------------------------------
# Processes: own process group each, stopped at exit whatever happens.

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _child_setup():
    os.setsid()                      # own process group: we kill the whole tree
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)    # PR_SET_PDEATHSIG: die with us, even if we are SIGKILLed


class Processes:
    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.lock = threading.Lock()
        self.kept: set[str] = set()   # names that may outlive the demo (--keep)

    def start(self, name, argv, outlive=False, **kwargs) -> subprocess.Popen:
        """Starts argv in its own process group; it dies with the demo unless outlive is set
        (then only stop_all, or the user, stops it)."""
        setup = os.setsid if outlive else _child_setup
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=setup, **kwargs)
        with self.lock:
            self.procs.append((name, proc))
        return proc

    def keep(self, names):
        """At exit, leave these running."""
        self.kept = set(names)

    def pid(self, name) -> int:
        return next(proc.pid for n, proc in self.procs if n == name)

    def stop_all(self):
        with self.lock:
            procs = [(n, p) for n, p in self.procs if n not in self.kept]
            self.procs = [(n, p) for n, p in self.procs if n in self.kept]
        for _, proc in reversed(procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc in reversed(procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)   # whatever is left of the group
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_listening_line(proc, name, timeout=20.0) -> int:
    """The port from the ``LISTENING <port>`` line a tool prints first on its stdout (a pipe)."""
    result: dict = {}

    def reader():
        result["line"] = proc.stdout.readline()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    line = result.get("line", b"").decode(errors="replace").strip()
    if not line.startswith("LISTENING "):
        raise DemoError(f"{name} did not start (first line on stdout: {line!r})")
    return int(line.split()[1])


def wait_for_listening_in_file(path: Path, proc, name, timeout=20.0) -> int:
    """The port from the ``LISTENING <port>`` line a tool prints first into its log file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        first = path.read_text(errors="replace").split("\n", 1)
        if len(first) == 2 and first[0].startswith("LISTENING "):
            return int(first[0].split()[1])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise DemoError(f"{name} did not start; see {path}")


def wait_for_http(url, proc, name, log, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"{name} exited with status {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return                       # it answers: good enough
        except OSError:
            time.sleep(0.1)
    raise DemoError(f"{name} did not answer at {url} within {timeout:.0f} s; see {log}")


def http_json(method, url, body=None, timeout=10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


# --------------------------------------------------------------------------------------------
# Fresh timestamps: every RFC 3339 timestamp with an offset moves by the same whole-second delta.

def _parse_ts(m: re.Match) -> datetime:
    text = m.group(0)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def newest_timestamp(texts) -> datetime | None:
    found = [_parse_ts(m) for t in texts for m in TIMESTAMP.finditer(t)]
    return max(found, default=None)


def shift_timestamps(text: str, delta: timedelta) -> str:
    def repl(m: re.Match) -> str:
        fraction, offset = m.group(1) or "", m.group(2)
        whole = datetime.fromisoformat(m.group(0)[:19] + ("+00:00" if offset == "Z" else offset))
        moved = whole + delta            # whole seconds: the fraction's digits stay as written
        return moved.strftime("%Y-%m-%dT%H:%M:%S") + fraction + offset
    return TIMESTAMP.sub(repl, text)


def _text_of(name: str, raw: bytes) -> str:
    return (gzip.decompress(raw) if name.endswith(".gz") else raw).decode()


def fresh_samples(now: datetime | None = None) -> tuple[timedelta, dict[str, bytes]]:
    """Every sample of events/ -- the data objects and the Lambda payloads, by path relative to
    events/ -- with every timestamp moved by one delta, so that the newest is one hour old and
    the samples keep their order across files (an event of a data file stays older than the S3
    notification that announces it). The CSV's offset-less timestamp stays invalid, on purpose."""
    paths = sorted(p for p in DATA.iterdir() if p.is_file()) + sorted(EVENTS.glob("*.json"))
    texts = {str(p.relative_to(EVENTS)): _text_of(p.name, p.read_bytes()) for p in paths}
    newest = newest_timestamp(texts.values())
    target = (now or datetime.now(timezone.utc)) - timedelta(hours=1)
    delta = timedelta(seconds=round((target - newest).total_seconds())) if newest else timedelta()
    files = {}
    for rel, text in texts.items():
        body = shift_timestamps(text, delta).encode()
        files[rel] = gzip.compress(body, mtime=0) if rel.endswith(".gz") else body
    return delta, files


def write_samples(dest: Path, now: datetime | None = None) -> timedelta:
    """Writes fresh_samples() under dest (dest/data/..., dest/*.json); returns the delta."""
    delta, files = fresh_samples(now)
    for rel, body in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return delta


# --------------------------------------------------------------------------------------------
# The function's JSON log lines.

class FunctionLog:
    def __init__(self, path: Path):
        self.path = path

    def size(self) -> int:
        return self.path.stat().st_size

    def lines_since(self, offset: int) -> tuple[list[dict], list[str]]:
        """The JSON log lines written since offset, and the other (non-JSON) lines."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            raw = f.read().decode(errors="replace")
        objects, other = [], []
        for line in raw.splitlines():
            line = line.strip()
            try:
                obj = json.loads(line) if line.startswith("{") else None
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                objects.append(obj)
            elif line:
                other.append(line)
        return objects, other


def summary_of(lines: list[dict]) -> dict | None:
    for obj in lines:
        fields = obj.get("fields")
        if isinstance(fields, dict) and fields.get("message") == "summary":
            return fields
    return None


def problems_of(lines: list[dict]) -> list[str]:
    """WARN and ERROR lines, as "LEVEL message (key=value ...)"."""
    out = []
    for obj in lines:
        level = str(obj.get("level", "")).upper()
        if level not in ("WARN", "WARNING", "ERROR"):
            continue
        fields = dict(obj.get("fields") or {})
        message = fields.pop("message", "")
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        out.append(f"{level} {message}" + (f" ({extra})" if extra else ""))
    return out


# --------------------------------------------------------------------------------------------

class Demo:
    def __init__(self, binary: Path, keep_logs: bool, keep: bool = False):
        self.binary = binary
        self.keep = keep
        self.keep_logs = keep_logs or keep
        self.tmp = Path(tempfile.mkdtemp(prefix="dsp-conversions-demo-"))
        self.samples = self.tmp / "samples"
        self.procs = Processes()
        self.function_log = FunctionLog(self.tmp / "function.log")
        self.invocations: list[dict] = []        # one per invocation, what the function reported
        self.labels: dict[str, str] = {}         # SQS message id -> where it comes from
        self.descriptions: dict[str, str] = {}   # SQS message id -> what its body holds
        self.failed_invocations = 0
        self.leftover_messages = 0
        self.started = time.monotonic()

    # ---- infrastructure ----

    def start(self):
        print("Starting local stand-ins (each on a free port of 127.0.0.1):")
        moto_port = free_port()
        moto_log = self.tmp / "moto.log"
        moto_cmd = (["moto_server"] if shutil.which("moto_server")
                    else [sys.executable, "-m", "moto.server"])
        with open(moto_log, "wb") as log:
            moto = self.procs.start("moto", moto_cmd + ["-H", "127.0.0.1", "-p", str(moto_port)],
                                    outlive=self.keep, stdout=log, stderr=subprocess.STDOUT)
        self.moto_url = f"http://127.0.0.1:{moto_port}"

        dsp_log = self.tmp / "fake_dsp.log"
        with open(dsp_log, "wb") as log:
            fake_config = self.tmp / "fake_dsp.json"
            fake_config.write_text(json.dumps({"conversion_definitions": DEFINITIONS}))
            dsp = self.procs.start("fake DSP", [sys.executable, str(ROOT / "tools/fake_dsp.py"),
                                                "--port", "0", "--quiet", "--config", str(fake_config)],
                                   outlive=self.keep, stdout=subprocess.PIPE, stderr=log)
        self.dsp_url = f"http://127.0.0.1:{read_listening_line(dsp, 'fake DSP')}"

        wait_for_http(self.moto_url + "/moto-api/", moto, "moto_server", moto_log)
        print(f"  AWS (moto: S3, SQS, Secrets Manager)     {self.moto_url}")
        print(f"  Amazon DSP + Login with Amazon (fake)    {self.dsp_url}")

        self.create_aws_resources()

        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and not k.startswith("DSP_")
               and k not in ("REJECTS_BUCKET", "REJECTS_PREFIX", "RETRY_QUEUE_URL", "DRY_RUN",
                             "SECRET_CACHE_TTL_SECONDS")}
        self.function_env = {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_LOG_LEVEL": "INFO",
            "DSP_SECRET_ID": SECRET_ID,
            "DSP_API_URL": self.dsp_url,
            "DSP_TOKEN_URL": self.dsp_url + "/auth/o2/token",
            "DSP_CONVERSION_DEFINITIONS": json.dumps(CONVERSION_DEFINITIONS, separators=(",", ":")),
            "DSP_DEFAULT_COUNTRY_CODE": "US",
            "REJECTS_BUCKET": REJECTS,
            "RETRY_QUEUE_URL": self.queue_url,
        }
        env.update(self.function_env)
        with open(self.function_log.path, "wb") as log:
            emulator = self.procs.start(
                "Lambda emulator",
                [sys.executable, str(ROOT / "tools/lambda_emulator.py"), "--port", "0",
                 "--timeout", str(FUNCTION_TIMEOUT_S), "--quiet", "--", str(self.binary)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        port = wait_for_listening_in_file(self.function_log.path, emulator, "Lambda emulator")
        self.invoke_url = f"http://127.0.0.1:{port}/2015-03-31/functions/_/invocations"
        print(f"  Lambda (emulator running {self._rel(self.binary)})  "
              f"http://127.0.0.1:{port}")
        print("  The function's environment:")
        for k, v in self.function_env.items():
            if k == "AWS_SECRET_ACCESS_KEY":
                v = "(moto's dummy)"
            print(f"    {k}={v}")
        print(f"\nCreated in moto: secret {SECRET_ID} (the fake DSP's demo credentials), "
              f"buckets {UPLOADS} and {REJECTS}, queue {QUEUE}")

    def _rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(ROOT))
        except ValueError:
            return str(path)

    def create_aws_resources(self):
        import boto3
        kw = dict(endpoint_url=self.moto_url, region_name=REGION,
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        self.s3 = boto3.client("s3", **kw)
        self.sqs = boto3.client("sqs", **kw)
        secrets = boto3.client("secretsmanager", **kw)
        secrets.create_secret(Name=SECRET_ID, SecretString=json.dumps(SECRET))
        for bucket in (UPLOADS, REJECTS):
            self.s3.create_bucket(Bucket=bucket)
        self.queue_url = self.sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    # ---- sample data ----

    def prepare_samples(self):
        delta, files = fresh_samples()
        sign = "forward" if delta >= timedelta() else "back"
        print(f"\nSample timestamps moved {sign} by {_human(abs(delta))} so that the newest "
              f"is one hour old (the DSP takes events up to 7 days old), as scripts/samples.sh "
              f"does.")
        if self.keep:
            for rel, body in files.items():
                (self.samples / rel).parent.mkdir(parents=True, exist_ok=True)
                (self.samples / rel).write_bytes(body)
        texts = {name: _text_of(name, files[f"data/{name}"]) for name, _ in OBJECTS}
        records = []
        for sample in SQS_SAMPLES:
            for i, rec in enumerate(json.loads(files[sample])["Records"], 1):
                records.append((f"{sample} #{i}", rec))
        self.objects = []
        print(f"Uploaded to s3://{UPLOADS}/:")
        for name, key in OBJECTS:
            body = files[f"data/{name}"]
            etag = self.s3.put_object(Bucket=UPLOADS, Key=key, Body=body)["ETag"].strip('"')
            self.objects.append({"name": name, "key": key, "size": len(body), "etag": etag})
            print(f"  {key}  ({len(body)} bytes, from events/data/{name})")
        self.messages = [(label, rec["body"], rec.get("messageAttributes") or {})
                         for label, rec in records]
        self.raw_identifiers = raw_identifiers(
            [texts[name] for name, _ in OBJECTS if ".csv" not in name] + [r["body"] for _, r in records],
            [texts[name] for name, _ in OBJECTS if ".csv" in name])

    # ---- invocations ----

    def invoke(self, payload: dict) -> dict:
        """POSTs one invocation; returns status, error flag, body and the log lines it wrote."""
        offset = self.function_log.size()
        req = urllib.request.Request(self.invoke_url, data=json.dumps(payload).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=FUNCTION_TIMEOUT_S + 30) as r:
                status, error, raw = r.status, r.headers.get("X-Amz-Function-Error"), r.read()
        except urllib.error.HTTPError as e:    # 502: the emulator got no answer at all
            status, error, raw = e.code, None, e.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        time.sleep(0.05)                  # the summary line is written before the answer; be safe
        lines, other = self.function_log.lines_since(offset)
        summary = summary_of(lines)
        result = {"status": status, "error": error, "body": body, "summary": summary,
                  "problems": problems_of(lines) + [f"(not JSON) {line}" for line in other[:10]]}
        if error or status != 200:
            self.failed_invocations += 1
        return result

    def record_counts(self, kind: str, label: str, counts: dict | None, result: dict):
        self.invocations.append({
            "kind": kind, "label": label, "result": result,
            "received": int((counts or {}).get("received", 0)),
            "accepted": int((counts or {}).get("accepted", 0)),
            "rejected": int((counts or {}).get("rejected", 0)),
            "redelivered": int((counts or {}).get("redelivered", 0)),
            "requests": int((counts or {}).get("requests", 0)),
            "rejects_object": (result.get("summary") or {}).get("rejects_object") or "",
        })

    def s3_notification(self, obj: dict) -> dict:
        template = json.loads((EVENTS / "s3-put.json").read_text())
        event = copy.deepcopy(template)
        rec = event["Records"][0]
        now = datetime.now(timezone.utc)
        rec["eventTime"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        rec["responseElements"]["x-amz-request-id"] = uuid.uuid4().hex[:16].upper()
        rec["s3"]["bucket"]["name"] = UPLOADS
        rec["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{UPLOADS}"
        rec["s3"]["object"] = {
            "key": urllib.parse.quote_plus(obj["key"], safe="/"),   # as S3 sends it
            "size": obj["size"],
            "eTag": obj["etag"],
            "sequencer": f"{time.time_ns():018X}"[-18:],
        }
        return event

    def run_s3(self):
        print(f"\n1. S3 -> SQS: the upload bucket notifies {QUEUE} of each new object, as the "
              f"template wires it (one S3 event notification per object)")
        for obj in self.objects:
            event = self.s3_notification(obj)
            mid = self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(event))["MessageId"]
            self.labels[mid] = f"S3 notification for {obj['key']}"
            self.descriptions[mid] = _describe_body(json.dumps(event))
            encoded = event["Records"][0]["s3"]["object"]["key"]
            print(f"  {obj['key']}" + (f"  (notification key: {encoded})" if encoded != obj["key"] else ""))

    def run_sqs(self):
        print(f"\n2. Producer -> SQS: {len(self.messages)} sample message bodies sent to {QUEUE}")
        for label, body, attributes in self.messages:
            kwargs = {}
            if attributes:
                kwargs["MessageAttributes"] = {
                    name: {"DataType": a["dataType"], "StringValue": a["stringValue"]}
                    for name, a in attributes.items() if a.get("stringValue") is not None}
            mid = self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body, **kwargs)["MessageId"]
            self.labels[mid] = label
            self.descriptions[mid] = _describe_body(body)
            print(f"  {label}: {_describe_body(body)}")

        print(f"\n3. SQS -> Lambda (tools/sqs_mapping.py plays the event source mapping): batches "
              f"of up to 10, visibility timeout {SQS_VISIBILITY_S} s; messages not in "
              f"batchItemFailures are deleted")
        self.batch_no = 0
        mapping = sqs_mapping.EventSourceMapping(
            self.sqs, self.queue_url, [self._mapping_invoke], batch_size=10, max_concurrency=1,
            visibility_timeout=SQS_VISIBILITY_S, idle_stop_s=0.5, max_total_s=SQS_PHASE_S,
            on_batch=self._on_batch)
        counts = mapping.run()
        if counts["stopped"] == "idle":
            print("  The queue is empty.")
        else:
            print(f"  Stopped after {SQS_PHASE_S} s.")
        self.leftover_messages = self._queue_depth()
        if self.leftover_messages:
            print(f"  {self.leftover_messages} message(s) still in the queue.")

    def _mapping_invoke(self, payload: bytes) -> sqs_mapping.Invocation:
        """The event source mapping's invoker: the demo's own invoke, which also reads the logs."""
        self.last_result = result = self.invoke(json.loads(payload))
        body = result["body"]
        raw = body if isinstance(body, str) else json.dumps(body)
        return sqs_mapping.Invocation(result["status"], result["error"], raw.encode())

    def _on_batch(self, got: list[dict], _event: dict, _invocation, deleted: list[str]):
        result = self.last_result
        self.batch_no += 1
        body, summary = result["body"], result["summary"]
        print(f"  batch {self.batch_no}: {len(got)} message(s)")
        if result["error"] or result["status"] != 200 or not isinstance(body, dict) \
                or not isinstance(body.get("batchItemFailures"), list):
            print(f"    -> {_function_error(result)}")
            print("       every message of the batch becomes visible again")
        else:
            print(f"    -> {json.dumps(body)}")
        if summary:
            print(f"    summary log line: received {summary.get('received')}, accepted "
                  f"{summary.get('accepted')}, rejected {summary.get('rejected')}, "
                  f"redelivered {summary.get('redelivered')}, DSP requests {summary.get('requests')}")
        else:
            print("    !! no summary log line found for this invocation")
        for p in result["problems"]:
            print(f"    log: {p}")
        failed = {m["MessageId"] for m in got} - set(deleted)
        if len(failed) == len(got) and len(got) > 1:
            print(f"      all {len(got)} messages reported failed: SQS will redeliver them")
        for m in got:
            mid = m["MessageId"]
            if mid not in self.labels:
                self.labels[mid] = f"retry message {mid[:8]}… (queued by the function)"
                self.descriptions[mid] = _describe_body(m["Body"])
            label = f"{self.labels[mid]}: {self.descriptions[mid]}"
            if mid in failed:
                if len(failed) != len(got) or len(got) == 1:
                    print(f"      {label}\n        -> reported failed: SQS will redeliver it")
            else:
                print(f"      {label}\n        -> done (deleted)")
        self.record_counts("sqs", f"batch {self.batch_no}", summary, result)

    def _queue_depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return sum(int(v) for v in attrs.values())

    # ---- the report ----

    def rejects_lines(self) -> list[tuple[str, dict]]:
        out = []
        self.rejects_text = ""
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=REJECTS):
            for item in page.get("Contents", []):
                text = self.s3.get_object(Bucket=REJECTS, Key=item["Key"])["Body"].read().decode()
                self.rejects_text += text
                for line in text.splitlines():
                    if line.strip():
                        out.append((f"s3://{REJECTS}/{item['Key']}", json.loads(line)))
        return out

    def origin_order(self, origin) -> tuple:
        """Rejections in the order the inputs were handed to the function."""
        if not isinstance(origin, dict):
            return (3, 0, 0)
        record = origin.get("record") or 0
        keys = [key for _, key in OBJECTS]
        if origin.get("key") in keys:
            return (0, keys.index(origin["key"]), record)
        ids = list(self.labels)
        if origin.get("messageId") in ids:
            return (1, ids.index(origin["messageId"]), record)
        return (2, 0, record)

    def origin_text(self, origin: dict) -> str:
        if not isinstance(origin, dict):
            return "(no origin)"
        if origin.get("messageId"):
            where = "SQS message " + (self.labels.get(origin["messageId"]) or origin["messageId"])
        elif origin.get("key"):
            where = f"s3://{origin.get('bucket', '?')}/{origin['key']}"
        else:
            where = "(unknown)"
        parts = []
        if origin.get("record") is not None:
            parts.append(f"record {origin['record']}")
        if origin.get("line") is not None:
            parts.append(f"line {origin['line']}")
        return where + (f", {', '.join(parts)}" if parts else "")

    def report(self) -> int:
        totals = {k: sum(i[k] for i in self.invocations)
                  for k in ("received", "accepted", "rejected", "redelivered", "requests")}
        rejects = self.rejects_lines()
        state = http_json("GET", self.dsp_url + "/_control/state")
        dsp_requests = state.get("requests", [])
        statuses = Counter(str(r.get("status")) for r in dsp_requests)

        print("\nRejected events (read back from the rejects objects; identifiers there are hashed):")
        if not rejects:
            print("  none")
        for _, line in sorted(rejects, key=lambda r: self.origin_order(r[1].get("origin"))):
            print(f"  {self.origin_text(line.get('origin'))}")
            print(f"    {line.get('reason')}: {line.get('message')}")
        objects = sorted({obj for obj, _ in rejects})
        for obj in objects:
            n = sum(1 for o, _ in rejects if o == obj)
            print(f"  rejects object: {obj}  ({n} line{'s' if n != 1 else ''})")
        named = sorted({i["rejects_object"] for i in self.invocations if i["rejects_object"]})
        if named != objects:
            print(f"  !! the summary log lines name {named}")

        print("\nTotals reported by the function (sum over all invocations):")
        print(f"  received     {totals['received']}")
        print(f"  accepted     {totals['accepted']}")
        reasons = Counter(line.get("reason") for _, line in rejects)
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
        print(f"  rejected     {totals['rejected']}" + (f"  ({by_reason})" if by_reason else ""))
        print(f"  redelivered  {totals['redelivered']}")
        print(f"  DSP requests {totals['requests']}  over {len(self.invocations)} invocations")

        print("\nWhat the fake Amazon DSP received:")
        print(f"  events stored (accepted_count) {state.get('accepted_count')}, "
              f"duplicates {state.get('duplicates')}")
        by_status = ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items()))
        print(f"  requests {len(dsp_requests)}" + (f"  (HTTP status: {by_status})" if by_status else "")
              + f", access tokens fetched {state.get('token_requests')}")
        for r in dsp_requests:
            print(f"    {r.get('status')} {r.get('source')}: {_plural(r.get('events'), 'event')}, "
                  f"{r.get('succeeded')} succeeded, {r.get('failed')} failed")

        checks = [
            (self.failed_invocations == 0,
             f"every invocation answered ({self.failed_invocations} function errors)"),
            (totals["accepted"] == state.get("accepted_count"),
             f"accepted by the function ({totals['accepted']}) == stored by the DSP "
             f"({state.get('accepted_count')})"),
            (totals["rejected"] == len(rejects),
             f"every rejected event ({totals['rejected']}) is a line in the rejects objects "
             f"({len(rejects)})"),
            (totals["received"] == totals["accepted"] + totals["rejected"] + totals["redelivered"],
             f"received ({totals['received']}) == accepted + rejected + redelivered"),
            (not (leaked := leaked_identifiers(self.rejects_text, self.raw_identifiers)),
             f"the rejects objects hold none of the {len(self.raw_identifiers)} raw identifiers of "
             f"the samples" + (f" ({len(leaked)} found!)" if leaked else "")),
            (self.leftover_messages == 0,
             f"the queue is empty at the end ({self.leftover_messages} messages left)"),
        ]
        print("\nChecks:")
        for ok, text in checks:
            print(f"  {'ok  ' if ok else 'FAIL'} {text}")
        passed = all(ok for ok, _ in checks)

        self.keep_logs = self.keep_logs or not passed
        if self.keep and passed:
            self.print_local_loop()
        elif self.keep:
            print("\n--keep: the demo failed, so moto_server and the fake DSP are stopped too.")
        where = "kept" if self.keep_logs else "removed at exit; pass --keep-logs to keep it"
        print(f"\nFunction log (JSON lines): {self.function_log.path}  ({where})")
        print(f"DEMO {'PASSED' if passed else 'FAILED'} in {time.monotonic() - self.started:.1f} s")
        result = {"accepted": totals["accepted"], "rejected": totals["rejected"],
                  "redelivered": totals["redelivered"],
                  "dsp_accepted": state.get("accepted_count"), "dsp_requests": len(dsp_requests),
                  "rejects_lines": len(rejects)}
        print("DEMO RESULT " + json.dumps(result), flush=True)
        return 0 if passed else 1

    def print_local_loop(self):
        """--keep: moto_server and the fake DSP stay up, with the secret, the buckets, the queue
        and the uploaded objects; cargo lambda watch takes the emulator's place."""
        self.procs.keep(["moto", "fake DSP"])
        env = {k: v for k, v in self.function_env.items() if not k.startswith("AWS_LAMBDA_")}
        env_file = self.tmp / "function.env"
        # Single-quoted: cargo-lambda's --env-file reads the JSON of DSP_CONVERSION_DEFINITIONS
        # only that way.
        env_file.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
        pids = " ".join(f"-{self.procs.pid(n)}" for n in ("moto", "fake DSP"))
        print(f"""
--keep: moto_server ({self.moto_url}) and the fake DSP ({self.dsp_url}) are still running,
with the secret, the buckets, the queue and the uploaded objects. The function's environment
(also in {env_file}):
""")
        for k, v in env.items():
            print(f"  export {k}='{v}'")
        print(f"""
Run the function under cargo-lambda (from {ROOT}; it serves port 9000):

  cargo lambda watch --bin dsp-conversions --env-file {env_file}

and invoke it from another terminal with the samples, whose timestamps the demo refreshed:

  cargo lambda invoke dsp-conversions --data-file {self.samples}/sqs-simple-events.json
  cargo lambda invoke dsp-conversions --data-file {self.samples}/s3-put.json

Stop the services (each runs in its own process group), then remove the directory:

  kill -- {pids}
  rm -rf {self.tmp}""")

    def cleanup(self):
        self.procs.stop_all()
        if not self.keep_logs and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


HASHED = re.compile(r"^[0-9a-f]{64}$")


def raw_identifiers(json_texts: list[str], csv_texts: list[str]) -> set[str]:
    """Every user identifier the samples hold in clear (e-mails, phones, MAIDs, names...)."""
    found: set[str] = set()

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "userIdentifier" and isinstance(x, str):
                    found.add(x)
                elif k == "matchKeys" and isinstance(x, list):
                    for mk in x:
                        if isinstance(mk, dict):
                            found.update(s for s in mk.get("values") or [] if isinstance(s, str))
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for text in json_texts:
        for line in [text] + text.splitlines():      # a JSON document, or NDJSON lines
            try:
                walk(json.loads(line))
            except ValueError:
                pass
    for text in csv_texts:
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("userIdentifier"):
                found.add(row["userIdentifier"])
    # Short values (a postal code, a first name) could turn up by chance: leave them out.
    return {x.strip() for x in found if len(x.strip()) >= 6 and not HASHED.match(x.strip())}


def leaked_identifiers(text: str, identifiers: set[str]) -> list[str]:
    """The identifiers found in text, as written or normalized (lowercase; phone digits)."""
    low = text.lower()
    digits_runs = set(re.findall(r"\d{7,}", text))
    out = []
    for ident in identifiers:
        digits = re.sub(r"\D", "", ident)
        is_phone = not re.search(r"[A-Za-z@]", ident) and len(digits) >= 7
        if ident.lower() in low or (is_phone and any(digits in run for run in digits_runs)):
            out.append(ident)
    return out


def _describe_body(body: str) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return "not JSON"
    if isinstance(value, list):
        return f"a JSON array of {len(value)} events"
    if isinstance(value, dict):
        if isinstance(value.get("eventData"), list):
            n = len(value["eventData"])
            return f"a DSP request ({value.get('source', 'no source')}) with {n} event{'s' if n != 1 else ''}"
        if "Records" in value:
            return "an S3 event notification"
        return "one event"
    return "a JSON value that is not an event"


def _function_error(result: dict) -> str:
    """How an invocation that did not answer normally ended, in one line."""
    body = result["body"]
    if isinstance(body, dict) and ("errorType" in body or "errorMessage" in body):
        what = f"{body.get('errorType', '?')}: {body.get('errorMessage', '')}"
    else:
        what = json.dumps(body) if not isinstance(body, str) else body
    if result["error"]:
        return f"FUNCTION ERROR (X-Amz-Function-Error: {result['error']}) {what}"
    if result["status"] != 200:
        return f"NO ANSWER (HTTP {result['status']}) {what}"
    return f"UNEXPECTED ANSWER {what}"


def _plural(n, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _human(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    parts += [f"{h}h", f"{m}m", f"{s}s"]
    return " ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Runs dsp-conversions locally against moto and a fake DSP.")
    parser.add_argument("--binary", help="the function's binary")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary log directory")
    parser.add_argument("--keep", action="store_true",
                        help="leave moto_server and the fake DSP running after the demo and print "
                             "how to run the function against them with cargo-lambda")
    parser.add_argument("--samples", metavar="DIR", type=Path,
                        help="only write the samples of events/ with fresh timestamps into DIR")
    args = parser.parse_args(argv)
    if args.samples:
        delta = write_samples(args.samples)
        sign = "forward" if delta >= timedelta() else "back"
        print(f"samples of {EVENTS} written to {args.samples}, timestamps moved {sign} by "
              f"{_human(abs(delta))} (the newest is one hour old)")
        return 0
    if not args.binary:
        parser.error("--binary is required (or --samples DIR)")
    binary = Path(args.binary)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        print(f"demo: {binary} is not an executable file", file=sys.stderr)
        return 2

    # Only the demo's own settings reach boto3 and the function: no profile, no real account.
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

    demo = Demo(binary, args.keep_logs, args.keep)
    atexit.register(demo.cleanup)

    def on_signal(signum, _frame):
        print(f"\ndemo: stopped by {signal.Signals(signum).name}; stopping what it started",
              file=sys.stderr)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started in background
    print(f"dsp-conversions local demo  (work directory {demo.tmp})\n")
    try:
        demo.start()
        demo.prepare_samples()
        demo.run_s3()
        demo.run_sqs()
        return demo.report()
    except DemoError as e:
        demo.keep_logs = True
        print(f"\ndemo: {e}", file=sys.stderr)
        print(f"Logs: {demo.tmp}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())
