#!/usr/bin/env python3
"""Self-test for the test tooling (fake_dsp.py, lambda_emulator.py, sqs_mapping.py). Not product code.

    python3 tools/test_tools.py        (stdlib unittest; about 15 seconds)

The sqs_mapping tests run against moto in this process and are skipped without moto[server]
and boto3.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
MEDIA = "application/vnd.dspconversioneventimport.v1+json"
DEF_MEDIA = "application/vnd.dspconversiondefinition.v1+json"
DEL_MEDIA = "application/vnd.dspuserdeletionrequest.v1+json"
ADV = "demo-advertiser"
EVENT_PATH = f"/accounts/{ADV}/dsp/conversionDefinitions/eventData"


def start(args: list[str]) -> tuple[subprocess.Popen, int]:
    """Start a tool, wait for its LISTENING line, then keep draining its stdout."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"unexpected first line {line!r}")
    # The emulator's function inherits this pipe; drain it so the child never blocks.
    threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
    return proc, int(line.split()[1])


def drain(pipe):
    with pipe:
        pipe.read()


def stop(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def now_iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(timezone.utc) + delta).replace(microsecond=0).isoformat()


def event(name="purchase", **extra) -> dict:
    ev = {"conversionDefinitionId": "def-1", "name": name, "timestamp": now_iso(),
          "countryCode": "US", "matchKeys": [{"type": "EMAIL", "values": [sha("a@example.com")]}]}
    ev.update(extra)
    return ev


class Client:
    """One keep-alive connection; returns (status, headers, parsed JSON body or None)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(self, method, path, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        raw = resp.read()
        assert resp.getheader("Content-Length") is not None, "missing Content-Length"
        return resp.status, resp, (json.loads(raw) if raw else None)

    def close(self):
        self.conn.close()


class FakeDspTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start([os.path.join(HERE, "fake_dsp.py"), "--port", "0", "--quiet"])

    @classmethod
    def tearDownClass(cls):
        stop(cls.proc)

    def setUp(self):
        self.c = Client(self.port)
        self.assertEqual(self.c.request("POST", "/_control/reset")[0], 200)

    def tearDown(self):
        self.c.close()

    def control(self, method, path, body=None):
        status, _, doc = self.c.request(method, path, body)
        self.assertEqual(status, 200, doc)
        return doc

    def token(self, **over) -> tuple[int, dict]:
        form = {"grant_type": "refresh_token", "refresh_token": "demo-refresh-token",
                "client_id": "demo-client-id", "client_secret": "demo-client-secret", **over}
        status, _, doc = self.c.request("POST", "/auth/o2/token", urllib.parse.urlencode(form),
                                        {"Content-Type": "application/x-www-form-urlencoded"})
        return status, doc

    def headers(self, token=None, **over):
        h = {"Content-Type": MEDIA, "Accept": MEDIA, "Amazon-Advertising-API-ClientId": "demo-client-id",
             "Amazon-Ads-AccountId": ADV}
        if token is None:
            token = self.token()[1]["access_token"]
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(over)
        return h

    def post(self, events, headers=None, source="SERVER_TO_SERVER", client=None):
        return (client or self.c).request("POST", EVENT_PATH, {"source": source, "eventData": events},
                                          headers or self.headers())

    def test_token_and_valid_batch(self):
        status, tok = self.token()
        self.assertEqual(status, 200)
        self.assertTrue(tok["access_token"].startswith("Atza|"))
        self.assertEqual((tok["expires_in"], tok["token_type"]), (3600, "bearer"))
        status, resp, doc = self.post([event(clientDedupeId="a", value=12.5, currencyCode="USD"),
                                       event(clientDedupeId="b", unitsSold=2)])
        self.assertEqual(status, 207, doc)
        self.assertEqual(resp.getheader("Content-Type"), MEDIA)
        self.assertEqual([s["index"] for s in doc["success"]], [1, 2])
        self.assertEqual(doc["error"], [])
        state = self.control("GET", "/_control/state")
        self.assertEqual(state["accepted_count"], 2)
        self.assertEqual(state["accepted"][0]["value"], 12.5)
        self.assertEqual(state["accepted"][0]["advertiserId"], ADV)
        self.assertEqual(state["requests"][-1]["status"], 207)
        self.assertEqual(state["requests"][-1]["dedupe_ids"], ["a", "b"])
        self.assertEqual(state["token_requests"], 2)   # one explicit + one in headers()

    def test_token_errors(self):
        self.assertEqual(self.token(grant_type="password")[1]["error"], "unsupported_grant_type")
        status, doc = self.token(client_secret="nope")
        self.assertEqual((status, doc["error"]), (401, "invalid_client"))
        status, doc = self.token(refresh_token="nope")
        self.assertEqual((status, doc["error"]), (400, "invalid_grant"))
        self.assertEqual(self.control("GET", "/_control/state")["token_failures"], 3)

    def test_auth_failures(self):
        status, _, doc = self.post([event()], self.headers(token=""))
        self.assertEqual((status, doc["code"]), (401, "UNAUTHORIZED"))
        self.assertEqual(self.post([event()], self.headers(token="Atza|forged"))[0], 401)
        h = self.headers()
        self.control("POST", "/_control/expire_tokens")
        self.assertEqual(self.post([event()], h)[0], 401)
        self.assertEqual(self.post([event()], self.headers(**{"Amazon-Ads-AccountId": "other"}))[0], 403)
        self.assertEqual(self.post([event()], self.headers(**{"Amazon-Advertising-API-ClientId": "x"}))[0], 403)
        self.control("POST", "/_control/rotate", {"client_secret": "new-secret"})
        self.assertEqual(self.token()[0], 401)
        self.assertEqual(self.token(client_secret="new-secret")[0], 200)

    def test_media_types(self):
        self.assertEqual(self.post([event()], self.headers(**{"Content-Type": "application/json"}))[0], 415)
        self.assertEqual(self.post([event()], self.headers(Accept="application/json"))[0], 406)

    def test_429_fault_with_retry_after(self):
        self.control("POST", "/_control/faults", {"status": 429, "retry_after": 1})
        h = self.headers()
        status, resp, doc = self.post([event()], h)
        self.assertEqual(status, 429)
        self.assertEqual(resp.getheader("Retry-After"), "1")
        self.assertEqual(self.post([event()], h)[0], 207)   # one-shot
        self.assertEqual(self.control("GET", "/_control/state")["requests"][0]["fault"], "status:429")

    def test_reject_hook_index_from_one(self):
        status, _, doc = self.post([event(), event("__reject__"), event()])
        self.assertEqual(status, 207)
        self.assertEqual([s["index"] for s in doc["success"]], [1, 3])
        (err,) = doc["error"]
        self.assertEqual((err["index"], err["code"]), (2, "INVALID_ARGUMENT"))
        self.assertEqual(err["errors"][0]["fieldName"], "name")

    def test_bad_request_hook(self):
        status, _, doc = self.post([event(), event("__bad_request__")])
        self.assertEqual((status, doc["code"]), (400, "BAD_REQUEST"))
        self.assertIn("index 2", doc["message"])
        self.assertEqual(self.post([], )[0], 400)                      # 0 events
        self.assertEqual(self.post([event()] * 101)[0], 400)           # > 100 events
        self.assertEqual(self.post([event()], source="WEB")[0], 400)

    def test_validation(self):
        bad = [
            event(timestamp=now_iso(-timedelta(days=8))),
            event(timestamp=now_iso(timedelta(minutes=10))),
            event(timestamp=datetime.now().replace(microsecond=0).isoformat()),   # no offset
            event(matchKeys=[{"type": "EMAIL", "values": ["a@example.com"]}]),    # not hashed
            event(value=1.234),
            event(countryCode="usa"),
            event(currencyCode="XXX"),
            event(extra=1),
            {"name": "x"},
        ]
        good = [event(timestamp=now_iso(-timedelta(days=6)).replace("+00:00", "Z"), value=10.10),
                event(matchKeys=[{"type": "MAID", "values": ["6d92078a-8246-4ba4-ae5b-76104861e7dc"]}])]
        status, _, doc = self.post(bad + good)
        self.assertEqual(status, 207, doc)
        self.assertEqual([e["index"] for e in doc["error"]], list(range(1, len(bad) + 1)))
        self.assertEqual([s["index"] for s in doc["success"]], [len(bad) + 1, len(bad) + 2])
        self.assertEqual(doc["error"][3]["errors"][0]["fieldName"], "matchKeys[0].values[0]")
        self.assertNotIn("a@example.com", json.dumps(doc))

    def test_dedupe(self):
        h = self.headers()
        self.assertEqual(len(self.post([event(clientDedupeId="d1")], h)[2]["success"]), 1)
        status, _, doc = self.post([event(clientDedupeId="d1"), event(clientDedupeId="d2")], h)
        self.assertEqual([s["index"] for s in doc["success"]], [1, 2])
        state = self.control("GET", "/_control/state")
        self.assertEqual((state["accepted_count"], state["duplicates"]), (2, 1))

    def test_event_error_and_omit_faults(self):
        self.control("POST", "/_control/faults", [{"event_errors": {"2": "INTERNAL_ERROR"}}, {"omit": [1]}])
        h = self.headers()
        doc = self.post([event(), event()], h)[2]
        self.assertEqual(([s["index"] for s in doc["success"]], doc["error"][0]["code"]), ([1], "INTERNAL_ERROR"))
        doc = self.post([event(), event()], h)[2]
        self.assertEqual(([s["index"] for s in doc["success"]], doc["error"]), ([2], []))
        self.assertEqual(self.c.request("POST", "/_control/faults", {"status": 200})[0], 400)

    def test_drop_closes_connection(self):
        self.control("POST", "/_control/faults", {"drop": True})
        h = self.headers()
        other = Client(self.port)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.post([event()], h, client=other)
        other.close()
        self.assertEqual(self.control("GET", "/_control/state")["requests"][0]["status"], 0)

    def test_keep_alive_across_errors(self):
        h = self.headers()
        self.post([event()], self.headers(**{"Content-Type": "text/plain"}))
        sock = self.c.conn.sock
        self.assertEqual(self.post([event()], h)[0], 207)
        self.assertEqual(self.post([event()], self.headers(token=""))[0], 401)
        self.assertIs(self.c.conn.sock, sock)

    def test_concurrency_and_random(self):
        self.control("POST", "/_control/config", {"latency_ms": 300})
        h = self.headers()
        results = []

        def one():
            c = Client(self.port)
            results.append(self.post([event()], h, client=c)[0])
            c.close()

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [207] * 3)
        self.assertGreaterEqual(self.control("GET", "/_control/state")["max_concurrent"], 2)
        self.control("POST", "/_control/config", {"latency_ms": 0})
        self.control("POST", "/_control/faults", {"random": {"seed": 1, "p500": 1.0}})
        self.assertEqual(self.post([event()], h)[0], 500)
        self.assertEqual(self.token()[0], 200)   # random faults default to the dsp target
        self.control("DELETE", "/_control/faults")
        self.assertEqual(self.post([event()], h)[0], 207)

    # -- DspErrorV1, definitions, deletions, rate limit ----------------------------------------

    def api(self, kind, body, media, headers=None, client=None):
        h = headers or self.headers(**{"Content-Type": media, "Accept": media})
        return (client or self.c).request("POST", f"/accounts/{ADV}/dsp/conversionDefinitions/{kind}", body, h)

    def list_defs(self, body=None, headers=None):
        return self.api("list", {} if body is None else body, DEF_MEDIA, headers)

    def delete(self, entries, headers=None):
        return self.api("delete", {"deletionRequests": entries}, DEL_MEDIA, headers)

    def test_whole_request_errors_are_dsp_error_v1(self):
        ids = set()
        for status, resp, doc in (self.post([event()], self.headers(token="")),
                                  self.post([event()], source="WEB"),
                                  self.post([event()], self.headers(**{"Content-Type": "text/plain"}))):
            self.assertEqual(set(doc), {"code", "message", "requestId", "errors"}, doc)
            self.assertEqual(resp.getheader("x-amzn-RequestId"), doc["requestId"])
            ids.add(doc["requestId"])
        self.assertEqual(len(ids), 3)   # a fresh requestId per response
        status, _, doc = self.post([event()], source="WEB")
        self.assertEqual((status, doc["code"], doc["errors"][0]["fieldName"]), (400, "BAD_REQUEST", "source"))
        status, _, doc = self.post([event(), event("__bad_request__")])
        self.assertEqual(doc["errors"][0]["fieldName"], "eventData[1].name")
        self.control("POST", "/_control/config", {"max_body_bytes": 100})
        self.assertEqual(self.post([event()])[2]["code"], "PAYLOAD_TOO_LARGE")
        self.control("POST", "/_control/faults", {"status": 422, "message": "nope"})
        status, _, doc = self.post([event()])
        self.assertEqual((status, doc["code"], doc["message"]), (422, "UNPROCESSABLE_ENTITY", "nope"))

    def test_invalid_event_status_400(self):
        self.control("POST", "/_control/config", {"invalid_event_status": 400})
        status, _, doc = self.post([event(), event(countryCode="usa"), event("__reject__")])
        self.assertEqual(status, 400, doc)
        self.assertIn("index 2, 3", doc["message"])
        self.assertEqual([e["fieldName"] for e in doc["errors"]], ["eventData[1].countryCode", "eventData[2].name"])
        self.assertEqual(self.control("GET", "/_control/state")["accepted_count"], 0)
        self.assertEqual(self.post([event()])[0], 207)

    def test_list_definitions_paginated(self):
        started = time.time()
        defs = [{"conversionDefinitionId": f"d{i}", "name": f"Def {i}", "conversionType": "LEAD",
                 "source": "SERVER_TO_SERVER"} for i in range(5)] + ["legacy"]
        self.control("POST", "/_control/config", {"conversion_definitions": defs, "definitions_page_size": 4})
        h = self.headers(**{"Content-Type": DEF_MEDIA, "Accept": DEF_MEDIA})
        status, resp, doc = self.list_defs({"maxResults": 2}, h)
        self.assertEqual((status, resp.getheader("Content-Type")), (200, DEF_MEDIA))
        self.assertEqual(doc["conversionDefinitions"][0], {
            "conversionDefinitionId": "d0", "name": "Def 0", "conversionType": "LEAD",
            "source": "SERVER_TO_SERVER", "sourceType": "API", "countingMethod": "EACH"})
        seen = [d["conversionDefinitionId"] for d in doc["conversionDefinitions"]]
        pages = 1
        while "nextToken" in doc:
            doc = self.list_defs({"maxResults": 100, "nextToken": doc["nextToken"]}, h)[2]
            self.assertLessEqual(len(doc["conversionDefinitions"]), 4)   # the page size caps maxResults
            seen += [d["conversionDefinitionId"] for d in doc["conversionDefinitions"]]
            pages += 1
        self.assertEqual((seen, pages), (["d0", "d1", "d2", "d3", "d4", "legacy"], 2))
        self.assertEqual(self.list_defs({"nextToken": "forged"}, h)[0], 400)
        self.assertEqual(self.list_defs({"maxResults": 0}, h)[0], 400)
        self.assertEqual(self.list_defs({"filter": 1}, h)[0], 400)
        self.assertEqual(self.api("list", {}, MEDIA, self.headers())[0], 415)
        self.assertEqual(self.list_defs({}, self.headers(token="", **{"Content-Type": DEF_MEDIA, "Accept": DEF_MEDIA}))[0], 401)
        for status in (403, 404):
            self.control("POST", "/_control/config", {"definitions_list_status": status})
            got, _, doc = self.list_defs({}, h)
            self.assertEqual((got, set(doc)), (status, {"code", "message", "requestId", "errors"}))
        self.control("POST", "/_control/config", {"definitions_list_status": None})
        self.control("POST", "/_control/faults", {"target": "list", "status": 503})
        self.assertEqual(self.list_defs({}, h)[0], 503)
        self.assertEqual(self.list_defs({}, h)[0], 200)
        state = self.control("GET", "/_control/state")
        self.assertEqual(len(state["definition_requests"]), 11)
        # eventData only (a request of an earlier test may still be finishing: not this test's)
        self.assertEqual([r for r in state["requests"] if r["t"] >= started], [])
        self.assertEqual(self.c.request("POST", "/_control/config",
                                        {"conversion_definitions": [{"conversionDefinitionId": "x",
                                                                     "source": "WEB"}]})[0], 400)

    def test_definition_rules_on_events(self):
        self.control("POST", "/_control/config", {"conversion_definitions": [
            {"conversionDefinitionId": "buy", "name": "Buy", "conversionType": "OFF_AMAZON_PURCHASES",
             "source": "SERVER_TO_SERVER"},
            {"conversionDefinitionId": "tag", "name": "Tag", "conversionType": "PAGE_VIEW", "source": "AMAZON_AD_TAG"},
            {"conversionDefinitionId": "app", "name": "App", "conversionType": "OTHER", "source": "MMP"},
            "any"]})
        h = self.headers()
        doc = self.post([event(conversionDefinitionId="buy", value=-1), event(conversionDefinitionId="buy", value=5),
                         event(conversionDefinitionId="tag", value=-1), event(conversionDefinitionId="app"),
                         event(conversionDefinitionId="any", value=-3), event(conversionDefinitionId="nope")], h)[2]
        self.assertEqual([s["index"] for s in doc["success"]], [2, 5])
        errs = {e["index"]: e["errors"][0] for e in doc["error"]}
        self.assertEqual(errs[1]["fieldName"], "value")
        self.assertIn("source AMAZON_AD_TAG", errs[3]["message"])           # wrong source
        self.assertIn("MMP", errs[4]["message"])
        self.assertEqual(errs[6]["fieldName"], "conversionDefinitionId")
        self.assertEqual({e["code"] for e in doc["error"]}, {"INVALID_ARGUMENT"})
        doc = self.post([event(conversionDefinitionId="tag", value=-1), event(conversionDefinitionId="any")],
                        h, source="AMAZON_AD_TAG")[2]
        self.assertEqual([s["index"] for s in doc["success"]], [1, 2])

    def test_deletions(self):
        h = self.headers()
        email = sha("gone@example.com")
        self.post([event(clientDedupeId="x", matchKeys=[{"type": "EMAIL", "values": [email]}]),
                   event(clientDedupeId="y")], h)
        dh = self.headers(**{"Content-Type": DEL_MEDIA, "Accept": DEL_MEDIA})
        status, resp, doc = self.delete([{"matchKeys": [{"type": "EMAIL", "values": [email]}]},
                                         {"matchKeys": [{"type": "EMAIL", "values": ["gone@example.com"]}]},
                                         {"matchKeys": [{"type": "MAID", "values": ["__reject__"]}]},
                                         {"matchKeys": [{"type": "MAID", "values": ["6d92078a-8246-4ba4-ae5b-76104861e7dc"]}],
                                          "extra": 1}], dh)
        self.assertEqual((status, resp.getheader("Content-Type")), (207, DEL_MEDIA))
        self.assertEqual([s["index"] for s in doc["success"]], [1])
        self.assertEqual([e["index"] for e in doc["error"]], [2, 3, 4])
        self.assertEqual(doc["error"][0]["errors"][0]["fieldName"], "matchKeys[0].values[0]")
        self.assertNotIn("gone@example.com", json.dumps(doc))
        state = self.control("GET", "/_control/state")
        self.assertEqual((state["deletions_count"], state["events_deleted"], state["accepted_count"]), (1, 1, 1))
        self.assertEqual(state["deletions"][0], {"advertiserId": ADV,
                                                  "matchKeys": [{"type": "EMAIL", "values": [email]}]})
        self.assertEqual(self.delete([], dh)[0], 400)
        self.assertEqual(self.delete([{"matchKeys": []}] * 101, dh)[0], 400)
        self.assertEqual(self.delete([{"matchKeys": [{"type": "MAID", "values": ["__bad_request__"]}]}], dh)[0], 400)
        self.assertEqual(self.delete([{"matchKeys": [{"type": "EMAIL", "values": [email]}]}], h)[0], 415)
        self.control("POST", "/_control/faults", [{"target": "delete", "status": 429, "retry_after": 2},
                                                  {"target": "delete", "event_errors": {"1": "THROTTLED"}},
                                                  {"target": "delete", "omit": [2]}])
        ok = [{"matchKeys": [{"type": "EMAIL", "values": [email]}]}] * 2
        status, resp, _ = self.delete(ok, dh)
        self.assertEqual((status, resp.getheader("Retry-After")), (429, "2"))
        doc = self.delete(ok, dh)[2]
        self.assertEqual(([s["index"] for s in doc["success"]], doc["error"][0]["code"]), ([2], "THROTTLED"))
        doc = self.delete(ok, dh)[2]
        self.assertEqual(([s["index"] for s in doc["success"]], doc["error"]), ([1], []))
        self.assertEqual([r["fault"] for r in self.control("GET", "/_control/state")["deletion_requests"]][-3:],
                         ["status:429", "event_errors", "omit"])

    def test_server_wide_rate_limit(self):
        h = self.headers()
        self.control("POST", "/_control/config", {"rate_limit_rps": 2, "rate_limit_burst": 2})
        clients = [Client(self.port) for _ in range(2)]
        statuses = []
        for i in range(6):   # two connections, one bucket: only the burst gets through at once
            status, resp, doc = self.post([event()], h, client=clients[i % 2])
            statuses.append(status)
            if status == 429:
                self.assertEqual((doc["code"], resp.getheader("Retry-After")), ("THROTTLED", "1"))
        for c in clients:
            c.close()
        self.assertEqual(statuses[:2], [207, 207])
        self.assertGreaterEqual(statuses.count(429), 3)
        # The list and delete endpoints draw from the same bucket.
        self.assertEqual(self.list_defs({}, self.headers(**{"Content-Type": DEF_MEDIA, "Accept": DEF_MEDIA}))[0], 429)
        rate = self.control("GET", "/_control/rate")
        self.assertEqual((rate["admitted"], rate["throttled"], rate["responses_429"]),
                         (statuses.count(207), statuses.count(429) + 1, statuses.count(429) + 1))
        self.assertEqual(sum(s["admitted"] + s["throttled"] for s in rate["per_second"]), 7)
        self.assertGreater(rate["limit_used"], 0.5)
        self.assertAlmostEqual(rate["throttled_share"], rate["throttled"] / 7)
        self.assertEqual(self.control("GET", "/_control/state")["requests"][-1]["fault"], "rate_limit")
        time.sleep(0.6)
        self.control("POST", "/_control/config", {"retry_after_format": "http-date"})
        self.post([event()], h)
        status, resp, _ = self.post([event()], h)
        self.assertEqual(status, 429)
        when = email.utils.parsedate_to_datetime(resp.getheader("Retry-After"))
        self.assertLess(abs((when - datetime.now(timezone.utc)).total_seconds() - 1), 2)
        self.control("DELETE", "/_control/rate")
        self.assertEqual(self.control("GET", "/_control/rate")["admitted"], 0)
        self.control("POST", "/_control/config", {"rate_limit_rps": None})
        self.assertEqual([self.post([event()], h)[0] for _ in range(5)], [207] * 5)
        self.assertIsNone(self.control("GET", "/_control/rate")["limit_used"])

    def test_config_file_and_get_config(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dsp.json")
            with open(path, "w") as f:
                json.dump({"conversion_definitions": [{"conversionDefinitionId": "d1", "source": "MMP"}, "d2"],
                           "rate_limit_rps": 5}, f)
            proc, port = start([os.path.join(HERE, "fake_dsp.py"), "--port", "0", "--quiet", "--config", path])
            try:
                c = Client(port)
                status, _, cfg = c.request("GET", "/_control/config")
                c.close()
            finally:
                stop(proc)
            self.assertEqual((status, cfg["rate_limit_rps"]), (200, 5))
            self.assertEqual(cfg["conversion_definitions"][1], {
                "conversionDefinitionId": "d2", "name": "d2", "conversionType": "OTHER", "source": None,
                "sourceType": "UNKNOWN", "countingMethod": "EACH"})
            with open(path, "w") as f:
                json.dump({"rate_limit_rps": -1}, f)
            bad = subprocess.run([sys.executable, os.path.join(HERE, "fake_dsp.py"), "--config", path],
                                 capture_output=True, timeout=10)
            self.assertEqual(bad.returncode, 2)

    def test_random_faults_on_deletions(self):
        self.control("POST", "/_control/faults", {"random": {"seed": 3, "p503": 1.0, "target": "delete"}})
        dh = self.headers(**{"Content-Type": DEL_MEDIA, "Accept": DEL_MEDIA})
        self.assertEqual(self.delete([{"matchKeys": [{"type": "EMAIL", "values": [sha("x")]}]}], dh)[0], 503)
        self.assertEqual(self.post([event()])[0], 207)

    def test_http_date_retry_after_on_faults(self):
        self.control("POST", "/_control/config", {"retry_after_format": "http-date"})
        self.control("POST", "/_control/faults", {"status": 429, "retry_after": 30})
        resp = self.post([event()])[1]
        when = email.utils.parsedate_to_datetime(resp.getheader("Retry-After"))
        self.assertLess(abs((when - datetime.now(timezone.utc)).total_seconds() - 30), 2)


FUNCTION = r'''
import json, os, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with opener.open(base + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        assert int(r.headers["Lambda-Runtime-Deadline-Ms"]) > 0
        payload = r.read()
    event = json.loads(payload)
    if event == {"exit": True}:
        os._exit(3)
    if event == {"fail": True}:
        url, body = base + rid + "/error", json.dumps({"errorType": "TestError", "errorMessage": "asked to fail"}).encode()
    elif isinstance(event, dict) and "env" in event:
        url, body = base + rid + "/response", json.dumps({"value": os.environ.get(event["env"])}).encode()
    else:
        url, body = base + rid + "/response", payload
    opener.open(urllib.request.Request(url, data=body, method="POST")).read()
'''


class EmulatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        script = os.path.join(cls.tmp.name, "function.py")
        with open(script, "w") as f:
            f.write(FUNCTION)
        cls.proc, cls.port = start([os.path.join(HERE, "lambda_emulator.py"), "--port", "0", "--quiet",
                                    "--timeout", "5", "--", sys.executable, script])

    @classmethod
    def tearDownClass(cls):
        stop(cls.proc)
        cls.tmp.cleanup()

    def invoke(self, payload: bytes):
        c = Client(self.port)
        try:
            c.conn.request("POST", "/2015-03-31/functions/dsp-conversions/invocations", body=payload)
            resp = c.conn.getresponse()
            return resp.status, resp.getheader("X-Amz-Function-Error"), resp.read()
        finally:
            c.close()

    def stats(self):
        c = Client(self.port)
        try:
            return c.request("GET", "/_emulator/stats")[2]
        finally:
            c.close()

    def test_invocations(self):
        before = self.stats()
        body = b'{"hello": "world",  "n": [1, 2]}'
        self.assertEqual(self.invoke(body), (200, None, body))   # byte-exact echo
        status, err, out = self.invoke(b'{"fail": true}')
        self.assertEqual((status, err, json.loads(out)["errorType"]), (200, "Unhandled", "TestError"))
        status, _, out = self.invoke(b'{"env": "AWS_LAMBDA_FUNCTION_NAME"}')
        self.assertEqual(json.loads(out), {"value": "dsp-conversions"})
        status, _, out = self.invoke(b'{"exit": true}')
        self.assertEqual((status, json.loads(out)["errorType"]), (502, "Runtime.ExitError"))
        self.assertEqual(self.invoke(b'{"again": 1}')[0], 200)     # respawned
        stats = self.stats()
        self.assertEqual((stats["spawned"] - before["spawned"], stats["invocations"] - before["invocations"],
                          stats["alive"]), (1, 5, True))
        self.assertEqual(len(stats["cold_start_ms"]), stats["spawned"])
        c = Client(self.port)
        self.assertEqual(c.request("POST", "/2018-06-01/runtime/invocation/nope/response", b"{}")[0], 400)
        c.close()

    def test_concurrent_invocations_queue(self):
        out = []
        threads = [threading.Thread(target=lambda i=i: out.append(self.invoke(b'{"i": %d}' % i)))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(o[2] for o in out), [b'{"i": %d}' % i for i in range(4)])


SQS_FUNCTION = r'''
import json, os, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with opener.open(base + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    with open(os.environ["EVENTS_LOG"], "a") as f:
        f.write(json.dumps(event) + "\n")
    bodies = [json.loads(rec["body"]) for rec in event["Records"]]
    time.sleep(max([b.get("sleep", 0) for b in bodies]))
    if any(b.get("crash") for b in bodies):
        url, out = base + rid + "/error", {"errorType": "Crash", "errorMessage": "asked to"}
    else:
        out = {"batchItemFailures": [{"itemIdentifier": rec["messageId"]}
                                     for rec, b in zip(event["Records"], bodies) if b.get("fail")]}
        url = base + rid + "/response"
    opener.open(urllib.request.Request(url, data=json.dumps(out).encode(), method="POST")).read()
'''


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError:        # the mapping tests need moto[server] and boto3
    boto3 = None


@unittest.skipIf(boto3 is None, "moto[server] and boto3 are not installed")
class SqsMappingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, HERE)
        import sqs_mapping
        cls.m = sqs_mapping
        sqs_mapping.quiet = True
        logging.getLogger("werkzeug").setLevel(logging.ERROR)   # moto's access log
        port = free_port()
        cls.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        cls.moto.start()
        cls.endpoint = f"http://127.0.0.1:{port}"
        cls.sqs = boto3.client("sqs", endpoint_url=cls.endpoint, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        cls.tmp = tempfile.TemporaryDirectory()
        script = os.path.join(cls.tmp.name, "function.py")
        with open(script, "w") as f:
            f.write(SQS_FUNCTION)
        cls.events_log = os.path.join(cls.tmp.name, "events.ndjson")
        env = dict(os.environ, EVENTS_LOG=cls.events_log)
        cls.emulators = []
        for _ in range(2):
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "lambda_emulator.py"), "--port", "0",
                                     "--quiet", "--timeout", "10", "--", sys.executable, script],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                    env=env)
            port = int(proc.stdout.readline().split()[1])
            threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
            cls.emulators.append((proc, f"http://127.0.0.1:{port}/2015-03-31/functions/f/invocations"))
        cls.urls = [u for _, u in cls.emulators]

    @classmethod
    def tearDownClass(cls):
        for proc, _ in cls.emulators:
            stop(proc)
        cls.moto.stop()
        cls.tmp.cleanup()

    def queue(self, name, max_receive=2, **attrs):
        dlq = self.sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive})
        url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1", "RedrivePolicy": redrive,
                                                                **attrs})["QueueUrl"]
        return url, dlq

    def events(self) -> list[dict]:
        with open(self.events_log) as f:
            return [json.loads(line) for line in f]

    def test_batches_deletes_redelivers_and_dead_letters(self):
        url, dlq = self.queue("mapping")
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 0}),
                              MessageAttributes={"origin": {"DataType": "String", "StringValue": "test"}})
        for i in range(1, 12):
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i, "sleep": 0.2}))
        for body in ({"fail": True}, {"fail": True, "n": 99}):
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
        stats = self.m.EventSourceMapping(self.sqs, url, self.urls, batch_size=4, idle_stop_s=1.0,
                                          max_total_s=30).run()
        self.assertEqual((stats["stopped"], stats["messages_deleted"], stats["moved_to_dlq"],
                          stats["invocation_errors"], stats["delete_errors"]), ("idle", 12, 2, 0, 0), stats)
        self.assertEqual(stats["messages_failed"], 4)          # the two failures, received twice each
        self.assertEqual(stats["max_concurrent"], 2)
        self.assertEqual(stats["dead_letter_queue_url"], dlq)
        dead = self.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
        self.assertEqual(sorted(json.loads(m["Body"]).get("n", 0) for m in dead), [0, 99])
        records = [r for e in self.events() for r in e["Records"] if r["eventSourceARN"].endswith(":mapping")]
        self.assertLessEqual(max(len(e["Records"]) for e in self.events()), 4)
        first = next(r for r in records if json.loads(r["body"]) == {"n": 0})
        self.assertEqual(list(first), ["messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                                       "md5OfMessageAttributes", "md5OfBody", "eventSource", "eventSourceARN",
                                       "awsRegion"])
        self.assertEqual((first["eventSource"], first["awsRegion"]), ("aws:sqs", "us-east-1"))
        self.assertEqual(first["messageAttributes"], {"origin": {"stringValue": "test", "stringListValues": [],
                                                                 "binaryListValues": [], "dataType": "String"}})
        self.assertEqual(first["attributes"]["ApproximateReceiveCount"], "1")
        self.assertTrue({"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(first["attributes"]))
        retried = [r["attributes"]["ApproximateReceiveCount"] for r in records if json.loads(r["body"]).get("fail")]
        self.assertEqual(sorted(retried), ["1", "1", "2", "2"])
        plain = next(r for r in records if json.loads(r["body"]).get("n") == 1)
        self.assertNotIn("md5OfMessageAttributes", plain)

    def test_function_errors_keep_the_batch_and_the_cli_reports(self):
        url, dlq = self.queue("crashing", max_receive=1)
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"crash": True}))
        out = subprocess.run([sys.executable, os.path.join(HERE, "sqs_mapping.py"), "--endpoint-url", self.endpoint,
                              "--queue-url", url, "--invoke-url", self.urls[0], "--max-concurrency", "1",
                              "--idle-stop", "0.5", "--max-seconds", "20", "--quiet"],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"))
        self.assertEqual(out.returncode, 0, out.stderr)
        line = next(x for x in out.stdout.splitlines() if x.startswith("MAPPING RESULT "))
        result = json.loads(line[len("MAPPING RESULT "):])
        self.assertEqual((result["invocations"], result["invocation_errors"], result["messages_deleted"],
                          result["moved_to_dlq"], result["stopped"]), (1, 1, 0, 1, "idle"), result)

    def test_fifo_records(self):
        url = self.sqs.create_queue(QueueName="orders.fifo", Attributes={
            "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody="{}", MessageGroupId="g1")
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        (msg,) = self.sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
        rec = self.m.lambda_sqs_record(msg, arn)
        self.assertEqual(rec["attributes"]["MessageGroupId"], "g1")
        self.assertIn("MessageDeduplicationId", rec["attributes"])   # (moto gives no SequenceNumber)
        self.assertEqual((rec["eventSourceARN"], rec["messageAttributes"]), (arn, {}))

    def test_batch_item_failure_rules(self):
        Inv, keep = self.m.Invocation, self.m.messages_to_keep
        ids = ["a", "b", "c"]
        self.assertEqual(keep(Inv(200, None, b'{"batchItemFailures": [{"itemIdentifier": "b"}]}'), ids, True), {"b"})
        for body in (b"", b"null", b"{}", b'{"batchItemFailures": []}', b'{"batchItemFailures": null}'):
            self.assertEqual(keep(Inv(200, None, body), ids, True), set(), body)
        for body in (b"not json", b"[]", b'{"batchItemFailures": [{"itemIdentifier": ""}]}',
                     b'{"batchItemFailures": [{"itemIdentifier": null}]}', b'{"batchItemFailures": [{"id": "a"}]}',
                     b'{"batchItemFailures": [{"itemIdentifier": "zzz"}]}', b'{"batchItemFailures": "a"}'):
            self.assertEqual(keep(Inv(200, None, body), ids, True), set(ids), body)
        self.assertEqual(keep(Inv(200, "Unhandled", b"{}"), ids, True), set(ids))
        self.assertEqual(keep(Inv(502, None, b"{}"), ids, False), set(ids))
        self.assertEqual(keep(Inv(200, None, b'{"batchItemFailures": [{"itemIdentifier": "b"}]}'), ids, False), set())


if __name__ == "__main__":
    unittest.main(verbosity=2)
