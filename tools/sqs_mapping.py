#!/usr/bin/env python3
"""Plays Lambda's SQS event source mapping against an SQS emulator (moto): polls a queue,
invokes the function with batches, deletes what the function did not hand back.

TEST / DEMO / BENCHMARK TOOLING ONLY -- not product code. Python 3.11 + boto3.
The function runs behind tools/lambda_emulator.py (its Invoke API), one emulator per concurrent
invocation, as Lambda runs one invocation at a time per execution environment.

Usage
-----
    python3 tools/sqs_mapping.py --endpoint-url URL --queue-url URL
        (--binary PATH [--timeout S] [--function-log FILE] | --invoke-url URL [--invoke-url URL ...])
        [--batch-size 10] [--batching-window 0] [--max-concurrency 2] [--visibility-timeout S]
        [--no-report-batch-item-failures] [--wait-time 1] [--idle-stop 3] [--max-seconds 120]
        [--region REGION] [--quiet]

  --endpoint-url URL     the SQS endpoint (moto_server), e.g. http://127.0.0.1:5000
  --queue-url URL        the event source queue
  --binary PATH          start --max-concurrency emulators running this function binary; the
                         function's environment is this process's environment
  --timeout S            the function timeout given to those emulators (default 60)
  --function-log FILE    append the function's output there (default: this process's stderr)
  --invoke-url URL       an emulator's invoke URL instead (.../2015-03-31/functions/NAME/invocations);
                         repeat it for more; workers share them round-robin
  --batch-size N         BatchSize: most messages per invocation (1..10000, default 10)
  --batching-window S    MaximumBatchingWindowInSeconds: how long to gather a batch of more
                         than one ReceiveMessage (default 0: one ReceiveMessage per batch)
  --max-concurrency K    ScalingConfig.MaximumConcurrency: most invocations at once (default 2)
  --visibility-timeout S ReceiveMessage's VisibilityTimeout (default: the queue's own, as Lambda)
  --no-report-batch-item-failures
                         FunctionResponseTypes without ReportBatchItemFailures: a successful
                         invocation deletes its whole batch
  --wait-time S          long-poll time of each ReceiveMessage (default 1)
  --idle-stop S          stop once the queue has been empty, with no invocation running, for
                         S seconds (default 3)
  --max-seconds S        stop after S seconds in all (default 120; running invocations finish)
  --region REGION        default: $AWS_REGION, else us-east-1
  --quiet                no progress lines on stderr

At the end it prints exactly one line on stdout, ``MAPPING RESULT {...}``, with the counts
below; exit status 0 (1 when a setup step failed, 2 for bad arguments). Credentials default to
moto's dummy "testing" ones when none are set.

What it does (as the AWS Lambda documentation describes the SQS event source)
----------------------------------------------------------------------------------
- K workers (K = max concurrency) each poll the queue with ReceiveMessage (at most 10 messages a
  call, AttributeNames and MessageAttributeNames All), gather up to batch_size messages within
  the batching window, and invoke the function synchronously with the SQS event.
- The event is {"Records": [...]}, one record per message, built as Lambda builds it:
  messageId, receiptHandle, body, attributes (ApproximateReceiveCount, SentTimestamp, SenderId,
  ApproximateFirstReceiveTimestamp, and for FIFO queues SequenceNumber, MessageGroupId,
  MessageDeduplicationId; AWSTraceHeader and DeadLetterQueueSourceArn when present: each as
  ReceiveMessage returned it, so moto's FIFO records lack SequenceNumber, which moto omits),
  messageAttributes ({stringValue?, binaryValue? (base64), stringListValues: [],
  binaryListValues: [], dataType}), md5OfMessageAttributes (only when there are attributes),
  md5OfBody, eventSource "aws:sqs", eventSourceARN, awsRegion (the queue's).
- Outcome of an invocation:
  - the function errored (X-Amz-Function-Error) or gave no answer (HTTP status other than 200):
    nothing is deleted; the whole batch comes back after the visibility timeout;
  - without ReportBatchItemFailures: the whole batch is deleted;
  - with it: a response of null, {}, or {"batchItemFailures": null or []} deletes the whole batch;
    otherwise every message not named in batchItemFailures is deleted. A response that is not
    JSON, not an object, or names an itemIdentifier that is missing, empty, null or not in the
    batch fails the whole batch (nothing deleted), as Lambda does.
- Messages that are not deleted become visible again after the visibility timeout and are
  received again. The queue's RedrivePolicy moves a message to its dead-letter queue once its
  receive count exceeds maxReceiveCount: moto implements that (on the ReceiveMessage that would
  have received it once too often), so this tool relies on it and counts the messages that
  reached the dead-letter queue while it ran.
- FIFO queues: moto does not hand out messages of a message group that has messages in flight,
  as SQS does, so batches keep each group's order.

Counts (the RESULT line, and EventSourceMapping.run()'s return value)
---------------------------------------------------------------------
  {"invocations", "invocation_errors" (function errors and missing answers),
   "messages_received" (every receive of a message, redeliveries included),
   "messages_deleted", "messages_failed" (received, then not deleted by their invocation),
   "moved_to_dlq", "delete_errors", "max_concurrent" (most invocations at the same moment),
   "stopped": "idle" | "time", "elapsed_s", "dead_letter_queue_url" (null without RedrivePolicy)}

Use from Python
---------------
    from sqs_mapping import EventSourceMapping, start_emulators
    with start_emulators(binary, k=2, env=function_env, timeout=60) as urls:
        stats = EventSourceMapping(sqs_client, queue_url, urls, batch_size=10).run()

EventSourceMapping takes invokers as invoke URLs or as callables payload_bytes -> Invocation;
on_batch(messages, event, invocation, deleted_ids) is called after each invocation (messages as
ReceiveMessage returned them).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))

# What Lambda copies into a record's "attributes" (standard and FIFO queues).
SYSTEM_ATTRIBUTES = ("ApproximateReceiveCount", "SentTimestamp", "SenderId",
                     "ApproximateFirstReceiveTimestamp", "SequenceNumber", "MessageGroupId",
                     "MessageDeduplicationId", "AWSTraceHeader", "DeadLetterQueueSourceArn")
MAX_RECEIVE = 10     # SQS's most messages per ReceiveMessage
MAX_DELETE = 10      # ... and per DeleteMessageBatch

quiet = False


def log(msg: str) -> None:
    if not quiet:
        print(f"sqs_mapping: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The Lambda SQS event
# ---------------------------------------------------------------------------------------------

def lambda_sqs_record(message: dict, queue_arn: str) -> dict:
    """One SQS record exactly as the Lambda event source mapping builds it from a message of
    ReceiveMessage (boto3's shape)."""
    attributes = {k: v for k, v in (message.get("Attributes") or {}).items() if k in SYSTEM_ATTRIBUTES}
    message_attributes = {}
    for name, a in (message.get("MessageAttributes") or {}).items():
        entry = {}
        if "StringValue" in a:
            entry["stringValue"] = a["StringValue"]
        if "BinaryValue" in a:
            entry["binaryValue"] = base64.b64encode(a["BinaryValue"]).decode()
        entry.update({"stringListValues": [], "binaryListValues": [], "dataType": a["DataType"]})
        message_attributes[name] = entry
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message_attributes,
    }
    if message_attributes and "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update({
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    })
    return record


def lambda_sqs_event(messages: list[dict], queue_arn: str) -> dict:
    return {"Records": [lambda_sqs_record(m, queue_arn) for m in messages]}


def messages_to_keep(invocation: Invocation, message_ids: list[str], report_failures: bool) -> set[str]:
    """The ids of a batch that must not be deleted after this invocation (Lambda's rules)."""
    everything = set(message_ids)
    if invocation.status != 200 or invocation.function_error:
        return everything
    if not report_failures:
        return set()
    try:
        response = json.loads(invocation.body) if invocation.body.strip() else None
    except ValueError:
        return everything
    if response is None:
        return set()
    if not isinstance(response, dict):
        return everything
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return everything
    keep = set()
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or ident not in everything:
            return everything
        keep.add(ident)
    return keep


# ---------------------------------------------------------------------------------------------
# Invoking the function
# ---------------------------------------------------------------------------------------------

@dataclass
class Invocation:
    """What one invocation answered: the Invoke API's HTTP status, the X-Amz-Function-Error
    header (None when absent) and the body."""
    status: int
    function_error: str | None
    body: bytes


class UrlInvoker:
    """Invokes through an Invoke API URL (tools/lambda_emulator.py, cargo lambda watch)."""

    def __init__(self, url: str, timeout: float = 900.0):
        self.url, self.timeout = url, timeout
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __call__(self, payload: bytes) -> Invocation:
        req = urllib.request.Request(self.url, data=payload, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(req, timeout=self.timeout) as r:
                return Invocation(r.status, r.headers.get("X-Amz-Function-Error"), r.read())
        except urllib.error.HTTPError as e:
            return Invocation(e.code, e.headers.get("X-Amz-Function-Error"), e.read())
        except OSError as e:
            return Invocation(0, None, json.dumps({"errorType": "InvokeFailed", "errorMessage": str(e)}).encode())


def _drain(stream, sink):
    for line in iter(stream.readline, b""):
        sink.write(line)
        sink.flush()


@contextlib.contextmanager
def start_emulators(binary: str, k: int, env: dict | None = None, timeout: float = 60.0,
                    log_file=None, name: str = "dsp-conversions"):
    """Starts k tools/lambda_emulator.py processes running binary; yields their invoke URLs and
    stops them on exit. The function's output goes to log_file (a binary file object), else to
    this process's stderr."""
    sink = log_file or sys.stderr.buffer
    procs, urls = [], []
    try:
        for _ in range(k):
            proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "lambda_emulator.py"), "--port", "0", "--quiet",
                 "--timeout", str(timeout), "--function-name", name, "--", binary],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=sink if log_file else None,
                env=dict(os.environ if env is None else env))
            procs.append(proc)
            line = proc.stdout.readline().decode(errors="replace")
            if not line.startswith("LISTENING "):
                raise RuntimeError(f"the Lambda emulator did not start (first line {line!r})")
            threading.Thread(target=_drain, args=(proc.stdout, sink), daemon=True).start()
            urls.append(f"http://127.0.0.1:{int(line.split()[1])}/2015-03-31/functions/{name}/invocations")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------------------------
# The event source mapping
# ---------------------------------------------------------------------------------------------

class EventSourceMapping:
    def __init__(self, sqs, queue_url: str, invokers, *, batch_size: int = 10,
                 batching_window_s: float = 0.0, max_concurrency: int | None = None,
                 visibility_timeout: int | None = None, report_batch_item_failures: bool = True,
                 wait_time_s: int = 1, idle_stop_s: float = 3.0, max_total_s: float = 120.0,
                 invoke_timeout_s: float = 900.0, on_batch=None):
        if not invokers:
            raise ValueError("at least one invoker (an invoke URL or a callable) is needed")
        if not 1 <= batch_size <= 10000:
            raise ValueError("batch_size must be in 1..10000")
        self.sqs, self.queue_url = sqs, queue_url
        self.invokers = [UrlInvoker(i, invoke_timeout_s) if isinstance(i, str) else i for i in invokers]
        self.batch_size, self.batching_window_s = batch_size, batching_window_s
        self.max_concurrency = max_concurrency or len(self.invokers)
        self.visibility_timeout = visibility_timeout
        self.report_failures = report_batch_item_failures
        self.wait_time_s, self.idle_stop_s, self.max_total_s = wait_time_s, idle_stop_s, max_total_s
        self.on_batch = on_batch
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.running = 0
        self.counts = {"invocations": 0, "invocation_errors": 0, "messages_received": 0,
                       "messages_deleted": 0, "messages_failed": 0, "delete_errors": 0,
                       "max_concurrent": 0}
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        self.queue_arn = attrs["QueueArn"]
        self.dlq_url = None
        if attrs.get("RedrivePolicy"):
            dlq_arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
            self.dlq_url = sqs.get_queue_url(QueueName=dlq_arn.split(":")[-1])["QueueUrl"]

    def _depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible",
                                          "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return sum(int(v) for v in attrs.values())

    def _receive(self, n: int, wait: int) -> list[dict]:
        kwargs = {"QueueUrl": self.queue_url, "MaxNumberOfMessages": min(n, MAX_RECEIVE),
                  "WaitTimeSeconds": wait, "AttributeNames": ["All"], "MessageAttributeNames": ["All"]}
        if self.visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self.visibility_timeout
        return self.sqs.receive_message(**kwargs).get("Messages", [])

    def _collect(self) -> list[dict]:
        batch = self._receive(self.batch_size, self.wait_time_s)
        if not batch:
            return []
        deadline = time.monotonic() + self.batching_window_s
        while len(batch) < self.batch_size and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self._receive(self.batch_size - len(batch), min(self.wait_time_s, int(left)))
            batch += got
            if not got and int(left) == 0:
                time.sleep(min(left, 0.05))
        return batch

    def _delete(self, messages: list[dict]) -> list[str]:
        deleted = []
        for start in range(0, len(messages), MAX_DELETE):
            chunk = messages[start:start + MAX_DELETE]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            out = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            ok = {e["Id"] for e in out.get("Successful", [])}
            deleted += [m["MessageId"] for i, m in enumerate(chunk) if str(i) in ok]
            with self.lock:
                self.counts["delete_errors"] += len(out.get("Failed", []))
        return deleted

    def _worker(self, invoke):
        while not self.stop.is_set():
            batch = self._collect()
            if not batch:
                continue
            with self.lock:
                self.running += 1
                self.counts["max_concurrent"] = max(self.counts["max_concurrent"], self.running)
                self.counts["messages_received"] += len(batch)
            try:
                event = lambda_sqs_event(batch, self.queue_arn)
                try:
                    result = invoke(json.dumps(event).encode())
                except Exception as e:   # an invoker that raises is an invocation without answer
                    result = Invocation(0, None, json.dumps({"errorType": type(e).__name__,
                                                             "errorMessage": str(e)}).encode())
                ids = [m["MessageId"] for m in batch]
                keep = messages_to_keep(result, ids, self.report_failures)
                deleted = self._delete([m for m in batch if m["MessageId"] not in keep])
                errored = result.status != 200 or bool(result.function_error)
                with self.lock:
                    self.counts["invocations"] += 1
                    self.counts["invocation_errors"] += errored
                    self.counts["messages_deleted"] += len(deleted)
                    self.counts["messages_failed"] += len(batch) - len(deleted)
                log(f"invoked with {len(batch)} message(s): "
                    + (f"error (HTTP {result.status}, {result.function_error or 'no answer'})" if errored
                       else f"{len(deleted)} deleted, {len(batch) - len(deleted)} handed back"))
                if self.on_batch is not None:
                    self.on_batch(batch, event, result, deleted)
            finally:
                with self.lock:
                    self.running -= 1

    def run(self) -> dict:
        """Polls and invokes until the queue has been idle for idle_stop_s or max_total_s has
        passed; returns the counts."""
        started = time.monotonic()
        dlq_before = self._depth(self.dlq_url) if self.dlq_url else 0
        workers = [threading.Thread(target=self._worker, args=(self.invokers[i % len(self.invokers)],),
                                    daemon=True) for i in range(self.max_concurrency)]
        for w in workers:
            w.start()
        idle_since = None
        stopped = "time"
        while time.monotonic() - started < self.max_total_s:
            with self.lock:
                busy = self.running > 0
            if busy or self._depth(self.queue_url) > 0:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.idle_stop_s:
                stopped = "idle"
                break
            time.sleep(0.1)
        self.stop.set()
        for w in workers:
            w.join()
        with self.lock:
            counts = dict(self.counts)
        counts["moved_to_dlq"] = self._depth(self.dlq_url) - dlq_before if self.dlq_url else 0
        counts.update(stopped=stopped, elapsed_s=round(time.monotonic() - started, 3),
                      dead_letter_queue_url=self.dlq_url)
        return counts


def main(argv=None) -> int:
    global quiet
    ap = argparse.ArgumentParser(description="Plays Lambda's SQS event source mapping against moto.")
    ap.add_argument("--endpoint-url", required=True)
    ap.add_argument("--queue-url", required=True)
    ap.add_argument("--binary")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--function-log")
    ap.add_argument("--invoke-url", action="append", default=[])
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--batching-window", type=float, default=0.0)
    ap.add_argument("--max-concurrency", type=int, default=2)
    ap.add_argument("--visibility-timeout", type=int)
    ap.add_argument("--no-report-batch-item-failures", action="store_true")
    ap.add_argument("--wait-time", type=int, default=1)
    ap.add_argument("--idle-stop", type=float, default=3.0)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--region", default=os.environ.get("AWS_REGION") or "us-east-1")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    quiet = args.quiet
    if bool(args.binary) == bool(args.invoke_url):
        ap.error("give either --binary or --invoke-url")
    if args.max_concurrency < 1 or not 1 <= args.batch_size <= 10000:
        ap.error("--max-concurrency must be >= 1 and --batch-size in 1..10000")

    import boto3
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url, region_name=args.region,
                       aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or "testing",
                       aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or "testing")
    options = dict(batch_size=args.batch_size, batching_window_s=args.batching_window,
                   max_concurrency=args.max_concurrency, visibility_timeout=args.visibility_timeout,
                   report_batch_item_failures=not args.no_report_batch_item_failures,
                   wait_time_s=args.wait_time, idle_stop_s=args.idle_stop, max_total_s=args.max_seconds,
                   invoke_timeout_s=args.timeout + 60)
    try:
        if args.invoke_url:
            result = EventSourceMapping(sqs, args.queue_url, args.invoke_url, **options).run()
        else:
            with contextlib.ExitStack() as stack:
                log_file = stack.enter_context(open(args.function_log, "ab")) if args.function_log else None
                urls = stack.enter_context(start_emulators(args.binary, args.max_concurrency,
                                                           timeout=args.timeout, log_file=log_file))
                result = EventSourceMapping(sqs, args.queue_url, urls, **options).run()
    except Exception as e:   # a setup step: the queue, the emulators
        print(f"sqs_mapping: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("MAPPING RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
