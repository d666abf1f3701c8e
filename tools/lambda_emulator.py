#!/usr/bin/env python3
"""Minimal AWS Lambda Runtime API emulator that runs a real function binary.

TEST / DEMO TOOLING ONLY -- not product code. Python 3.11, standard library only.
It plays the part of one Lambda execution environment (like `cargo lambda watch`): it starts
the function process, hands it invocations through the Runtime API and returns its answers
through the Invoke API, so tests can drive the real bootstrap binary end to end.

Usage
-----
    python3 tools/lambda_emulator.py [--port 0] [--timeout SECONDS] [--function-name NAME]
                                     [--quiet] -- BINARY [ARGS...]

  --port N             port to bind on 127.0.0.1 (0, the default, picks a free port)
  --timeout SECONDS    function timeout used for the deadline (default 30)
  --function-name NAME function name (default dsp-conversions)
  --quiet              no emulator log lines on stderr (the function's own output still flows)

Start-up: binds, prints exactly one line ``LISTENING <port>`` to stdout (flushed), THEN spawns
BINARY, so that line is always the first thing on stdout. The function's stdout and stderr are
inherited: they appear on the emulator's own stdout/stderr. The function's stdin is /dev/null.
On Linux the function is killed if the emulator dies (even by SIGKILL). On SIGTERM or SIGINT the
emulator terminates the function and exits. A BINARY that cannot be found exits with status 2
before anything is printed on stdout.

The function's environment: the emulator's environment, plus AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>
(always), and, only when not already set: AWS_LAMBDA_FUNCTION_NAME=NAME,
AWS_LAMBDA_FUNCTION_VERSION=$LATEST, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128,
AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/NAME, AWS_LAMBDA_LOG_STREAM_NAME=local, AWS_REGION=us-east-1,
AWS_LAMBDA_INITIALIZATION_TYPE=on-demand (as on real Lambda; never "snap-start", whose
/runtime/restore/* endpoints are not emulated).

The process is spawned once at start-up and again at the next invocation if it has exited, was
killed after a timeout, or reported an init error. One invocation is in flight at a time;
concurrent invoke requests wait their turn in arrival order.

Runtime API (used by the function)
----------------------------------
GET  /2018-06-01/runtime/invocation/next
     Blocks until an invocation is queued, then 200 with the event as body and headers
     Lambda-Runtime-Aws-Request-Id (uuid4), Lambda-Runtime-Deadline-Ms (epoch ms = now + timeout),
     Lambda-Runtime-Invoked-Function-Arn (arn:aws:lambda:us-east-1:123456789012:function:NAME),
     Lambda-Runtime-Trace-Id, Content-Type: application/json.
POST /2018-06-01/runtime/invocation/{id}/response   -> 202 {"status": "OK"}
POST /2018-06-01/runtime/invocation/{id}/error      -> 202 {"status": "OK"}
     An unknown id, or one already answered or given up on (timeout) -> 400
     {"errorType": "InvalidRequestID", "errorMessage": "..."}.
POST /2018-06-01/runtime/init/error                 -> 202 {"status": "OK"} (recorded; that
     process is then treated as failed and replaced at the next invocation)

Invoke API (used by tests and by `cargo lambda invoke`)
-------------------------------------------------------
POST /2015-03-31/functions/{name}/invocations   (any {name} is accepted; body = event JSON,
     an empty body is sent as {})
     200 + the function's response body exactly as the function posted it
         (Content-Type: application/json, X-Amz-Executed-Version: $LATEST);
     200 + X-Amz-Function-Error: Unhandled + the error body exactly as posted, when the function
         posted to /error;
     502 {"errorType", "errorMessage"[, "initError"]} when there is no answer:
         Runtime.InitError   the process posted /runtime/init/error ("initError" = that body,
                             parsed as JSON when it is JSON, else a string)
         Runtime.ExitError   the process exited before answering ("initError" added if any)
         Sandbox.Timedout    no answer by deadline + 5 s (or not picked up within timeout + 5 s);
                             the process is killed and replaced at the next invocation
         Runtime.InvalidEntrypoint  the process could not be started
     Header X-Amz-Invocation-Type: Event -> 202 with an empty body at once; the invocation runs
     in the background (its outcome only shows in stats and logs).
GET  /_emulator/stats -> 200 {"spawned": n, "cold_start_ms": [ms from each spawn to that
     process's first /next], "invocations": n (invoke requests received), "alive": bool,
     "pid": int|null, "errors": n (function /error answers), "init_errors": n, "failures": n
     (502 answers)}

All responses carry Content-Length; connections are kept alive (HTTP/1.1).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RUNTIME = "/2018-06-01/runtime"
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
ANSWER_PATH = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")
GRACE_S = 5.0   # how long past the deadline we wait before declaring a timeout

quiet = False


def log(msg: str) -> None:
    if not quiet:
        print(f"lambda_emulator: {msg}", file=sys.stderr, flush=True)


# PR_SET_PDEATHSIG ties the function's life to ours: a test that SIGKILLs the emulator must not
# leave an orphaned function polling a dead port (and holding the test's stdout pipe open).
# The signal fires when the *thread* that forked dies, so we only ever spawn from the main thread.
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class Invocation:
    def __init__(self, payload: bytes):
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.enqueued = time.monotonic()
        self.delivered_at: float | None = None   # monotonic time /next handed it out
        self.deadline_ms: int | None = None
        self.done = threading.Event()
        self.kind: str | None = None              # "response" or "error"
        self.body = b""


class Proc:
    def __init__(self, popen: subprocess.Popen, spawned_at: float):
        self.popen = popen
        self.spawned_at = spawned_at
        self.seen_next = False
        self.init_error: bytes | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None


class Emulator:
    def __init__(self, command: list[str], timeout: float, name: str):
        self.command = command
        self.timeout = timeout
        self.name = name
        self.port = 0
        self.cond = threading.Condition()     # guards everything below
        self.pending: deque[Invocation] = deque()
        self.active: dict[str, Invocation] = {}   # delivered, not yet answered
        self.proc: Proc | None = None
        self.spawned = 0
        self.cold_start_ms: list[float] = []
        self.invocations = 0
        self.errors = 0
        self.init_errors = 0
        self.failures = 0
        # Ticket lock: a plain Lock is not FIFO, and invocations should run in arrival order.
        self.turn = threading.Condition()
        self.next_ticket = 0
        self.serving = 0
        # Spawn requests from handler threads, served by the main thread (see _die_with_parent).
        self.spawn_requests: queue.Queue = queue.Queue()

    # -- process management (spawn() runs on the main thread only) --------------------------

    def spawn(self) -> Proc | None:
        with self.cond:
            old = self.proc
        if old is not None and old.alive():
            self._stop(old)
        env = dict(os.environ)
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{self.port}"
        for key, val in (("AWS_LAMBDA_FUNCTION_NAME", self.name),
                         ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                         ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
                         ("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{self.name}"),
                         ("AWS_LAMBDA_LOG_STREAM_NAME", "local"),
                         ("AWS_REGION", "us-east-1"),
                         ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")):
            env.setdefault(key, val)
        # Spawn under the lock: the new process's first /next must find itself as self.proc,
        # not be mistaken for a poller of the dead predecessor.
        with self.cond:
            try:
                popen = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent if _prctl else None)
            except OSError as e:
                log(f"cannot start {self.command[0]}: {e}")
                return None
            proc = Proc(popen, time.monotonic())
            self.proc = proc
            self.spawned += 1
            self.cond.notify_all()   # wakes /next waiters of the old process so they give up
        log(f"spawned pid {popen.pid}")
        return proc

    @staticmethod
    def _stop(proc: Proc):
        proc.popen.terminate()
        try:
            proc.popen.wait(3)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()

    def serve_spawns(self, stop: threading.Event):
        """Main-thread loop: perform spawns requested by handler threads."""
        while not stop.is_set():
            try:
                reply = self.spawn_requests.get(timeout=0.2)
            except queue.Empty:
                continue
            reply.put(self.spawn())

    def ensure_process(self) -> Proc | None:
        with self.cond:
            proc = self.proc
            if proc is not None and proc.alive() and proc.init_error is None:
                return proc
        reply: queue.Queue = queue.Queue()
        self.spawn_requests.put(reply)
        return reply.get()

    def shutdown(self):
        with self.cond:
            proc = self.proc
        if proc is not None and proc.alive():
            self._stop(proc)

    # -- invoke side --------------------------------------------------------------------------

    def invoke(self, payload: bytes) -> tuple[int, bytes, dict]:
        with self.turn:
            ticket = self.next_ticket
            self.next_ticket += 1
            while self.serving != ticket:
                self.turn.wait()
        try:
            with self.cond:
                self.invocations += 1
            return self._invoke_now(payload)
        finally:
            with self.turn:
                self.serving += 1
                self.turn.notify_all()

    def _invoke_now(self, payload: bytes) -> tuple[int, bytes, dict]:
        started = time.monotonic()
        proc = self.ensure_process()
        if proc is None:
            return self._fail("Runtime.InvalidEntrypoint", f"could not start {self.command[0]}")
        inv = Invocation(payload)
        with self.cond:
            self.pending.append(inv)
            self.cond.notify_all()
        failure = None
        while failure is None:
            if inv.done.wait(0.05):
                break
            now = time.monotonic()
            with self.cond:
                if inv.done.is_set():
                    break
                if proc.init_error is not None:
                    failure = ("Runtime.InitError", "the function reported an init error")
                elif not proc.alive():
                    failure = ("Runtime.ExitError",
                               f"the function process exited (status {proc.popen.returncode}) "
                               f"before answering invocation {inv.id}")
                elif inv.delivered_at is None and now > inv.enqueued + self.timeout + GRACE_S:
                    failure = ("Sandbox.Timedout",
                               f"the function did not request invocation {inv.id} within "
                               f"{self.timeout + GRACE_S:g} s; process killed")
                elif inv.delivered_at is not None and now > inv.delivered_at + self.timeout + GRACE_S:
                    failure = ("Sandbox.Timedout",
                               f"invocation {inv.id} timed out: no answer within {self.timeout:g} s "
                               f"(+{GRACE_S:g} s grace); process killed")
                if failure:
                    # Forget it, so a late /response gets 400 instead of being taken as current.
                    if inv in self.pending:
                        self.pending.remove(inv)
                    self.active.pop(inv.id, None)
        elapsed = (time.monotonic() - started) * 1000
        if failure is not None:
            if failure[0] == "Sandbox.Timedout":
                self._stop(proc)
            return self._fail(*failure, init_error=proc.init_error, request_id=inv.id)
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if inv.kind == "error":
            headers["X-Amz-Function-Error"] = "Unhandled"
        log(f"invocation {inv.id} -> {inv.kind} ({elapsed:.0f} ms)")
        return 200, inv.body, headers

    def _fail(self, error_type, message, init_error=None, request_id=None):
        with self.cond:
            self.failures += 1
        body = {"errorType": error_type, "errorMessage": message}
        if init_error is not None:
            try:
                body["initError"] = json.loads(init_error)
            except ValueError:
                body["initError"] = init_error.decode("utf-8", "replace")
        log(f"invocation {request_id or '-'} -> 502 {error_type}: {message}")
        return 502, json.dumps(body).encode(), {}

    # -- runtime side -------------------------------------------------------------------------

    def next_invocation(self) -> Invocation | None:
        """Block until an invocation is queued; None if this caller's process is gone."""
        with self.cond:
            proc = self.proc
            if proc is None:
                return None
            if not proc.seen_next:
                proc.seen_next = True
                self.cold_start_ms.append(round((time.monotonic() - proc.spawned_at) * 1000, 1))
            while True:
                # A waiter belongs to the process that was current when it arrived; once that
                # process is replaced or dead, its connection is gone and it must not take work.
                if proc is not self.proc or not proc.alive() or proc.init_error is not None:
                    return None
                if self.pending:
                    inv = self.pending.popleft()
                    inv.delivered_at = time.monotonic()
                    inv.deadline_ms = int(time.time() * 1000 + self.timeout * 1000)
                    self.active[inv.id] = inv
                    return inv
                self.cond.wait(0.5)

    def requeue(self, inv: Invocation):
        with self.cond:
            if self.active.pop(inv.id, None) is not None and not inv.done.is_set():
                inv.delivered_at = None
                self.pending.appendleft(inv)
                self.cond.notify_all()

    def answer(self, request_id: str, kind: str, body: bytes) -> bool:
        with self.cond:
            inv = self.active.pop(request_id, None)
            if inv is None:
                return False
            inv.kind, inv.body = kind, body
            if kind == "error":
                self.errors += 1
            inv.done.set()
            return True

    def init_error(self, body: bytes):
        with self.cond:
            self.init_errors += 1
            if self.proc is not None:
                self.proc.init_error = body or b"{}"
            self.cond.notify_all()
        log("the function reported an init error")

    def stats(self) -> dict:
        with self.cond:
            proc = self.proc
            alive = proc is not None and proc.alive()
            return {"spawned": self.spawned, "cold_start_ms": list(self.cold_start_ms),
                    "invocations": self.invocations, "alive": alive,
                    "pid": proc.popen.pid if alive else None, "errors": self.errors,
                    "init_errors": self.init_errors, "failures": self.failures}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # the runtime client keeps its connection alive
    server_version = "lambda-emulator/1.0"
    emu: Emulator

    def log_message(self, format, *args):
        pass  # the function's own logs matter more; we log invocations ourselves

    def _read_body(self) -> bytes:
        # Read the full body (chunked too: streaming responses use it) so keep-alive holds.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, headers=None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), headers)

    def do_GET(self):
        self._read_body()
        path = self.path.split("?")[0]
        if path == f"{RUNTIME}/invocation/next":
            return self._next()
        if path == "/_emulator/stats":
            return self._json(200, self.emu.stats())
        self._json(404, {"errorType": "NotFound", "errorMessage": f"no route for GET {path}"})

    def do_POST(self):
        body = self._read_body()
        path = self.path.split("?")[0]
        emu = self.emu
        m = ANSWER_PATH.match(path)
        if m:
            if emu.answer(m.group(1), m.group(2), body):
                return self._json(202, {"status": "OK"})
            return self._json(400, {"errorType": "InvalidRequestID",
                                    "errorMessage": f"unknown or already answered request id {m.group(1)}"})
        if path == f"{RUNTIME}/init/error":
            emu.init_error(body)
            return self._json(202, {"status": "OK"})
        if INVOKE_PATH.match(path):
            payload = body if body.strip() else b"{}"
            kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            if kind == "Event":
                threading.Thread(target=emu.invoke, args=(payload,), daemon=True).start()
                return self._send(202, b"")
            status, out, headers = emu.invoke(payload)
            return self._send(status, out, headers)
        self._json(404, {"errorType": "NotFound", "errorMessage": f"no route for POST {path}"})

    def _next(self):
        emu = self.emu
        inv = emu.next_invocation()
        if inv is None:
            # The process this request came from has been replaced or is dead: nobody is
            # listening, so just close.
            self.close_connection = True
            return
        arn = f"arn:aws:lambda:us-east-1:123456789012:function:{emu.name}"
        trace = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"
        try:
            self._send(200, inv.payload, {
                "Lambda-Runtime-Aws-Request-Id": inv.id,
                "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": arn,
                "Lambda-Runtime-Trace-Id": trace,
            })
        except OSError:
            emu.requeue(inv)   # the poller vanished mid-hand-off; let the next /next take it
            raise


class Server(ThreadingHTTPServer):
    daemon_threads = True          # a blocked /next must never keep the emulator alive
    allow_reuse_address = True
    request_queue_size = 64


def main(argv=None) -> int:
    global quiet
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: lambda_emulator.py [--port 0] [--timeout SECONDS] [--function-name NAME] "
             "[--quiet] -- BINARY [ARGS...]")
    if "--" not in argv:
        print(usage, file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    port, timeout, name = 0, 30.0, "dsp-conversions"
    try:
        it = iter(opts)
        for opt in it:
            if opt == "--port":
                port = int(next(it))
            elif opt == "--timeout":
                timeout = float(next(it))
            elif opt == "--function-name":
                name = next(it)
            elif opt == "--quiet":
                quiet = True
            else:
                raise ValueError(f"unknown option {opt}")
    except (StopIteration, ValueError) as e:
        print(f"{usage}\n{e or 'missing option value'}", file=sys.stderr)
        return 2
    if not command:
        print(usage, file=sys.stderr)
        return 2
    binary = command[0]
    resolved = binary if os.sep in binary else shutil.which(binary)
    if not resolved or not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        print(f"lambda_emulator: {binary} is not an executable file", file=sys.stderr)
        return 2

    emu = Emulator([resolved] + command[1:], timeout, name)
    handler = type("BoundHandler", (Handler,), {"emu": emu})
    server = Server(("127.0.0.1", port), handler)
    emu.port = server.server_address[1]

    def on_signal(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    print(f"LISTENING {emu.port}", flush=True)   # before the child can write to stdout
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    stop = threading.Event()
    try:
        emu.spawn()
        emu.serve_spawns(stop)   # the main thread spawns (see _die_with_parent)
    finally:
        stop.set()
        emu.shutdown()
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
