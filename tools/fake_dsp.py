#!/usr/bin/env python3
"""Fake Amazon DSP Conversions API + Login with Amazon token endpoint, with fault injection.

TEST / DEMO TOOLING ONLY -- not product code. Python 3.11, standard library only.
It mimics the behaviour described in DESIGN.md section 1 closely enough for the Lambda's
integration tests and for the local demo, and lets tests inject failures.

Usage
-----
    python3 tools/fake_dsp.py [--port 0] [--config JSON_FILE] [--verbose] [--quiet]

  --port N       port to bind on 127.0.0.1 (0, the default, picks a free port)
  --config FILE  JSON object merged over the default configuration (below)
  --verbose      also log one stderr line per accepted event (no identifiers)
  --quiet        no per-request stderr lines at all

After binding, exactly one line ``LISTENING <port>`` is printed to stdout (flushed); nothing
else is ever written to stdout. Log lines go to stderr, one per request (method, path, status,
event counts). Authorization headers, client secrets, refresh tokens and access tokens are
never logged. If a test pipes stderr it must drain it (or pass --quiet, or inherit/discard
stderr): a full pipe would stall the server.
SIGTERM / SIGINT exit cleanly.

Point the Lambda at it with DSP_API_URL=http://127.0.0.1:<port> and
DSP_TOKEN_URL=http://127.0.0.1:<port>/auth/o2/token.

Configuration (defaults; overridable by --config and by POST /_control/config)
----------------------------------------------------------------------------
    {"client_id": "demo-client-id", "client_secret": "demo-client-secret",
     "refresh_token": "demo-refresh-token",
     "advertisers": ["demo-advertiser"],   # advertiser ids known to these credentials
     "profile_id": null,                    # if set, Amazon-Advertising-API-Scope must equal it
     "conversion_definitions": [],          # if non-empty, conversionDefinitionId must be one of these
     "token_ttl": 3600,                     # access token lifetime, seconds
     "latency_ms": 0}                       # added delay on every DSP response (not token/control)
Unknown keys are rejected (400 from the control API, exit 2 from --config).

Endpoints
---------
POST /auth/o2/token   (Login with Amazon; application/x-www-form-urlencoded)
    grant_type=refresh_token&refresh_token=...&client_id=...&client_secret=...
    200 {"access_token": "Atza|<32 hex>", "expires_in": token_ttl, "token_type": "bearer",
         "refresh_token": <same as sent>}
    Errors, checked in this order, body {"error": ..., "error_description": ...}:
      400 invalid_request          body is not form-urlencoded or a parameter is missing
      400 unsupported_grant_type   grant_type != refresh_token
      401 invalid_client           client_id or client_secret wrong
      400 invalid_grant            refresh_token wrong
    Every token request (faulted ones included) counts in token_requests; every non-200
    counts in token_failures. Tokens expire after token_ttl seconds.

POST /accounts/{advertiserId}/dsp/conversionDefinitions/eventData
    Checks, in this order (error body {"code", "message", "details"}; message == details):
      415 UNSUPPORTED_MEDIA_TYPE  Content-Type media type is not
                                  application/vnd.dspconversioneventimport.v1+json (parameters
                                  such as ";charset=utf-8" are ignored)
      406 NOT_ACCEPTABLE          Accept does not list exactly that media type (*/* is not enough)
      401 UNAUTHORIZED            no "Authorization: Bearer <token>", or the token was not issued
                                  here, expired, or was revoked
      403 FORBIDDEN               Amazon-Advertising-API-ClientId != client_id
      403 FORBIDDEN               advertiserId not in advertisers, or Amazon-Ads-AccountId != it
      403 FORBIDDEN               profile_id set and Amazon-Advertising-API-Scope != it
      400 BAD_REQUEST             body not a JSON object {"source", "eventData"}; unknown top-level
                                  key; source not AMAZON_AD_TAG|SERVER_TO_SERVER; eventData not a
                                  list of 1..100 JSON objects; or any event's name is exactly
                                  "__bad_request__" (message: "eventData index <i> (1-based): ...")
    Otherwise 207 Multi-Status:
      {"success": [{"index": i, "message": "..."}],
       "error":   [{"index": i, "code": "INVALID_ARGUMENT", "message": "Invalid conversion event",
                    "errors": [{"errorType": "...", "fieldName": "...", "message": "..."}]}]}
    index counts from 1 in request order; every index appears exactly once unless an "omit"
    fault removes it. Both lists are always present (possibly empty).
    Per-event validation (each problem is one errors[] entry; errorType is one of
    MISSING_FIELD, UNKNOWN_FIELD, INVALID_TYPE, INVALID_FORMAT, INVALID_VALUE):
      required conversionDefinitionId (non-empty string; must be in conversion_definitions when
        that list is non-empty), name (non-empty string), timestamp, countryCode, matchKeys;
      timestamp: ISO-8601 with an explicit offset (Z or +hh:mm), at most 7 days old and at most
        5 minutes in the future;
      countryCode: 2 uppercase ASCII letters;
      matchKeys: non-empty list of {"type", "values"} (no other keys); type in ADDRESS CITY EMAIL
        FIRST_NAME LAST_NAME MAID PHONE POSTAL RAMP_ID STATE; values a non-empty list of non-empty
        strings, each 64 lowercase hex chars except for MAID and RAMP_ID (fieldName e.g.
        "matchKeys[0].values[1]", 0-based);
      optional clientDedupeId (non-empty string), value (JSON number, at most 2 decimals,
        judged on the exact JSON text), currencyCode (AED AUD BRL CAD CNY DKK EUR GBP INR JPY MXN
        NOK NZD SAR SEK SGD TRY USD), unitsSold (JSON integer), dataProcessingOptions
        (== "LIMITED_DATA_USE");
      any other key is an UNKNOWN_FIELD error;
      name exactly "__reject__": rejected with an INVALID_VALUE errors[] entry, fieldName "name"
        (lets tests provoke a DSP-side permanent rejection).
    Storage: accepted events are stored keyed by (advertiserId, clientDedupeId); the first one
    wins. A later event with the same key is still listed under success (message mentions the
    duplicate) but only counted in "duplicates". Events without clientDedupeId are always stored.

Fault injection
---------------
Faults target the DSP endpoint ("target": "dsp", default) or the token endpoint ("target":
"token"). Control endpoints are never faulted.
1. One-shot FIFO queue. Each DSP (or token) request consumes the first queued fault with its
   target, before any validation (so a fault is consumed even by a request that would fail
   with 401/415/...). Fault objects (each may also carry "count": n, default 1 = used n times):
     {"status": 429, "retry_after": 1}   429 THROTTLED + "Retry-After: 1" (no header if omitted)
     {"status": 500} / {"status": 503}   INTERNAL_ERROR / SERVICE_UNAVAILABLE
     {"status": 400, "message": "..."}   BAD_REQUEST with that message
     {"status": 401} / {"status": 403}   UNAUTHORIZED / FORBIDDEN (any 400..599 is allowed)
     {"drop": true}                      read the request, close the connection, send nothing
     {"latency_ms": 2000}                delay, then answer normally (may be combined with
                                         status/drop/event_errors/omit: delay first)
     {"event_errors": {"2": "INTERNAL_ERROR"}}  answer normally, but report these 1-based indices
                                         under "error" with that code, "errors": [], not stored
     {"omit": [3]}                       answer 207 normally but list these indices nowhere
   event_errors and omit apply to the DSP target only. For the token target a status fault
   answers {"error": ..., "error_description": ...} (429 too_many_requests, 5xx server_error,
   401 invalid_client, other 4xx invalid_request).
2. Random faults, used only when no queued fault matched:
     {"random": {"seed": 1, "p429": 0.1, "p500": 0.05, "p503": 0.05, "pdrop": 0.02,
                 "pslow": 0.05, "slow_ms": 3000, "p_event_transient": 0.01, "retry_after": 1,
                 "target": "dsp"}}
   All keys optional (probabilities default 0, slow_ms 3000, retry_after 1, target dsp).
   Per request one draw picks at most one of 429/500/503/drop/slow (slow = delay slow_ms then
   answer normally); then each event of a 207 independently becomes a transient error with
   probability p_event_transient (code THROTTLED or INTERNAL_ERROR, not stored).
   Random 429s carry Retry-After: retry_after.

Control API (JSON in, JSON out; not faulted, not delayed, not recorded in "requests")
-----------------------------------------------------------------------------------
  POST   /_control/config         merge keys into the config -> 200 {"ok": true}
  POST   /_control/reset          back to the startup config; clears stored events, logs,
                                  counters, faults, random mode and tokens -> 200 {"ok": true}
  POST   /_control/faults         a fault object or a list of them (appended to the queue), or
                                  {"random": {...}} (random mode on) / {"random": null} (off)
                                  -> 200 {"ok": true, "queued": <faults pending>}
  DELETE /_control/faults         clear the queue and random mode -> 200 {"ok": true}
  POST   /_control/expire_tokens  revoke every issued token -> 200 {"ok": true, "revoked": n}
  POST   /_control/rotate         {"client_secret"?, "refresh_token"?}: replace credentials (old
                                  ones are rejected from now on) and revoke tokens -> 200
  GET    /_control/state          200 {
      "accepted": [<stored event as received, plus "advertiserId" and "source">],
      "accepted_count": n, "duplicates": n,
      "requests": [{"path", "status", "source", "events", "t", "fault", "advertiserId",
                    "succeeded", "failed", "dedupe_ids"}],
      "token_requests": n, "token_failures": n, "max_concurrent": n, "in_flight": n,
      "faults_pending": n, "issued_tokens": [every access token issued, for leak tests]}
      "requests" lists DSP endpoint calls only (token calls are only counted), in
      completion order; status is 0 for a dropped connection; source/events come from the
      body as far as it parsed (null / 0 otherwise); fault is null or a label such as
      "status:429", "drop", "latency:2000", "event_errors", "omit", "random:500",
      "random:slow", "random:event_transient"; succeeded/failed count the 207 lists;
      dedupe_ids lists the clientDedupeId of each event (null when absent).
      "value" numbers come back as JSON numbers (e.g. 12.5).
      max_concurrent: most DSP requests handled at the same moment (delays count as in flight).
  GET    /_control/health         200 {"ok": true}

Bad control input -> 400 {"error": "..."}. Unknown paths -> 404, wrong method -> 405.
All responses carry Content-Length; connections are kept alive (HTTP/1.1) unless the client
asks otherwise or a "drop" fault fires.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MEDIA_TYPE = "application/vnd.dspconversioneventimport.v1+json"
EVENT_DATA_PATH = re.compile(r"^/accounts/([^/]+)/dsp/conversionDefinitions/eventData$")

DEFAULT_CONFIG = {
    "client_id": "demo-client-id",
    "client_secret": "demo-client-secret",
    "refresh_token": "demo-refresh-token",
    "advertisers": ["demo-advertiser"],
    "profile_id": None,
    "conversion_definitions": [],
    "token_ttl": 3600,
    "latency_ms": 0,
}

SOURCES = {"AMAZON_AD_TAG", "SERVER_TO_SERVER"}
MATCH_KEY_TYPES = {"ADDRESS", "CITY", "EMAIL", "FIRST_NAME", "LAST_NAME", "MAID", "PHONE",
                   "POSTAL", "RAMP_ID", "STATE"}
UNHASHED_TYPES = {"MAID", "RAMP_ID"}
CURRENCIES = set("AED AUD BRL CAD CNY DKK EUR GBP INR JPY MXN NOK NZD SAR SEK SGD TRY USD".split())
REQUIRED_FIELDS = ("conversionDefinitionId", "name", "timestamp", "countryCode", "matchKeys")
OPTIONAL_FIELDS = ("clientDedupeId", "value", "currencyCode", "unitsSold", "dataProcessingOptions")
MAX_EVENTS = 100
MAX_AGE = timedelta(days=7)
MAX_FUTURE = timedelta(minutes=5)
HEX64 = re.compile(r"[0-9a-f]{64}")
COUNTRY = re.compile(r"[A-Z]{2}")

DSP_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                   406: "NOT_ACCEPTABLE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "THROTTLED",
                   500: "INTERNAL_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE",
                   504: "GATEWAY_TIMEOUT"}

FAULT_KEYS = {"target", "count", "status", "retry_after", "message", "drop", "latency_ms",
              "event_errors", "omit"}
RANDOM_KEYS = {"seed", "p429", "p500", "p503", "pdrop", "pslow", "slow_ms",
               "p_event_transient", "retry_after", "target"}

quiet = False
verbose = False


def log(line: str) -> None:
    if not quiet:
        print(line, file=sys.stderr, flush=True)


def json_default(obj):
    # Numbers are parsed as Decimal (to judge "at most 2 decimals" on the exact text); turn
    # them back into plain JSON numbers for the state dump.
    if isinstance(obj, Decimal):
        return int(obj) if obj == obj.to_integral_value() and "." not in str(obj) else float(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes):
    return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return is_int(v) or (isinstance(v, Decimal) and v.is_finite())


def decimals(v) -> int:
    """Number of significant decimal places of a JSON number (trailing zeros do not count)."""
    if is_int(v):
        return 0
    sign, digits, exp = v.as_tuple()
    digits = list(digits)
    while exp < 0 and len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exp += 1
    return max(0, -exp)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def validate_config(patch, base=None) -> dict:
    """Return base merged with patch, or raise ValueError naming the bad key."""
    if not isinstance(patch, dict):
        raise ValueError("config must be a JSON object")
    cfg = copy.deepcopy(base if base is not None else DEFAULT_CONFIG)
    for key, val in patch.items():
        if key not in DEFAULT_CONFIG:
            raise ValueError(f"unknown config key {key!r}")
        if key in ("client_id", "client_secret", "refresh_token") and not isinstance(val, str):
            raise ValueError(f"{key} must be a string")
        if key == "profile_id" and val is not None and not isinstance(val, (str, int)):
            raise ValueError("profile_id must be a string or null")
        if key in ("advertisers", "conversion_definitions") and not (
                isinstance(val, list) and all(isinstance(x, str) for x in val)):
            raise ValueError(f"{key} must be a list of strings")
        if key in ("token_ttl", "latency_ms") and not (is_number(val) and val >= 0):
            raise ValueError(f"{key} must be a non-negative number")
        cfg[key] = float(val) if isinstance(val, Decimal) else val
    if cfg["profile_id"] is not None:
        cfg["profile_id"] = str(cfg["profile_id"])
    return cfg


def parse_fault(obj) -> dict:
    """Validate one queued fault; strict so that a typo in a test fails loudly."""
    if not isinstance(obj, dict):
        raise ValueError("a fault must be a JSON object")
    unknown = set(obj) - FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}")
    fault = dict(obj)
    fault.setdefault("target", "dsp")
    fault.setdefault("count", 1)
    if fault["target"] not in ("dsp", "token"):
        raise ValueError("target must be 'dsp' or 'token'")
    if not (is_int(fault["count"]) and fault["count"] >= 1):
        raise ValueError("count must be an integer >= 1")
    actions = [k for k in ("status", "drop", "event_errors", "omit") if k in fault]
    if len(actions) > 1:
        raise ValueError(f"a fault takes only one of status/drop/event_errors/omit, got {actions}")
    if not actions and "latency_ms" not in fault:
        raise ValueError("a fault needs one of status, drop, latency_ms, event_errors, omit")
    if "status" in fault and not (is_int(fault["status"]) and 400 <= fault["status"] <= 599):
        raise ValueError("status must be an integer in 400..599")
    if "retry_after" in fault and not (is_int(fault["retry_after"]) and fault["retry_after"] >= 0):
        raise ValueError("retry_after must be a non-negative integer (seconds)")
    if "drop" in fault and fault["drop"] is not True:
        raise ValueError("drop must be true")
    if "latency_ms" in fault and not (is_number(fault["latency_ms"]) and fault["latency_ms"] >= 0):
        raise ValueError("latency_ms must be a non-negative number")
    if "event_errors" in fault:
        ee = fault["event_errors"]
        if not isinstance(ee, dict) or not ee:
            raise ValueError("event_errors must be a non-empty object {index: code}")
        try:
            fault["event_errors"] = {int(k): str(v) for k, v in ee.items()}
        except ValueError:
            raise ValueError("event_errors keys must be 1-based indices") from None
        if min(fault["event_errors"]) < 1:
            raise ValueError("event_errors indices are 1-based")
    if "omit" in fault:
        om = fault["omit"]
        if not (isinstance(om, list) and om and all(is_int(i) and i >= 1 for i in om)):
            raise ValueError("omit must be a non-empty list of 1-based indices")
        fault["omit"] = set(om)
    if fault["target"] == "token" and ("event_errors" in fault or "omit" in fault):
        raise ValueError("event_errors/omit only apply to the dsp target")
    return fault


def parse_random(obj) -> dict | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ValueError("random must be an object or null")
    unknown = set(obj) - RANDOM_KEYS
    if unknown:
        raise ValueError(f"unknown random keys: {sorted(unknown)}")
    cfg = {"seed": None, "p429": 0, "p500": 0, "p503": 0, "pdrop": 0, "pslow": 0,
           "slow_ms": 3000, "p_event_transient": 0, "retry_after": 1, "target": "dsp"}
    cfg.update(obj)
    for key in ("p429", "p500", "p503", "pdrop", "pslow", "p_event_transient"):
        if not (is_number(cfg[key]) and 0 <= cfg[key] <= 1):
            raise ValueError(f"{key} must be a probability in [0, 1]")
        cfg[key] = float(cfg[key])
    if sum(cfg[k] for k in ("p429", "p500", "p503", "pdrop", "pslow")) > 1:
        raise ValueError("p429 + p500 + p503 + pdrop + pslow must not exceed 1")
    if cfg["target"] not in ("dsp", "token"):
        raise ValueError("target must be 'dsp' or 'token'")
    if cfg["seed"] is not None and not (is_int(cfg["seed"]) or isinstance(cfg["seed"], str)):
        raise ValueError("seed must be an integer, a string or null")
    if not (is_number(cfg["slow_ms"]) and cfg["slow_ms"] >= 0):
        raise ValueError("slow_ms must be a non-negative number")
    if not (is_int(cfg["retry_after"]) and cfg["retry_after"] >= 0):
        raise ValueError("retry_after must be a non-negative integer")
    cfg["slow_ms"] = float(cfg["slow_ms"])
    return cfg


def validate_event(ev: dict, cfg: dict, now: datetime) -> list[dict]:
    """Return the errors[] entries for one event (empty when it is valid)."""
    errs = []

    def err(error_type, field, message):
        errs.append({"errorType": error_type, "fieldName": field, "message": message})

    for key in ev:
        if key not in REQUIRED_FIELDS and key not in OPTIONAL_FIELDS:
            err("UNKNOWN_FIELD", key, f"unknown field {key!r}")
    for key in REQUIRED_FIELDS:
        if key not in ev or ev[key] is None:
            err("MISSING_FIELD", key, f"{key} is required")

    cdid = ev.get("conversionDefinitionId")
    if cdid is not None:
        if not isinstance(cdid, str) or not cdid:
            err("INVALID_TYPE", "conversionDefinitionId", "conversionDefinitionId must be a non-empty string")
        elif cfg["conversion_definitions"] and cdid not in cfg["conversion_definitions"]:
            err("INVALID_VALUE", "conversionDefinitionId",
                "conversionDefinitionId is not a conversion definition of this advertiser")

    name = ev.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        err("INVALID_TYPE", "name", "name must be a non-empty string")
    elif name == "__reject__":
        err("INVALID_VALUE", "name", "name '__reject__' is rejected by the fake DSP (test hook)")

    ts = ev.get("timestamp")
    if ts is not None:
        if not isinstance(ts, str):
            err("INVALID_TYPE", "timestamp", "timestamp must be a string")
        else:
            try:
                parsed = datetime.fromisoformat(ts)
            except ValueError:
                parsed = None
                err("INVALID_FORMAT", "timestamp", "timestamp is not ISO-8601")
            if parsed is not None:
                if parsed.tzinfo is None or parsed.utcoffset() is None:
                    err("INVALID_FORMAT", "timestamp", "timestamp must carry an offset (Z or +hh:mm)")
                elif parsed < now - MAX_AGE:
                    err("INVALID_VALUE", "timestamp", "timestamp is more than 7 days old")
                elif parsed > now + MAX_FUTURE:
                    err("INVALID_VALUE", "timestamp", "timestamp is more than 5 minutes in the future")

    cc = ev.get("countryCode")
    if cc is not None and not (isinstance(cc, str) and COUNTRY.fullmatch(cc)):
        err("INVALID_FORMAT", "countryCode", "countryCode must be an ISO 3166-1 alpha-2 code (2 uppercase letters)")

    mks = ev.get("matchKeys")
    if mks is not None:
        if not isinstance(mks, list) or not mks:
            err("INVALID_TYPE", "matchKeys", "matchKeys must be a non-empty list")
        else:
            for i, mk in enumerate(mks):
                where = f"matchKeys[{i}]"
                if not isinstance(mk, dict):
                    err("INVALID_TYPE", where, "match key must be an object {type, values}")
                    continue
                for key in mk:
                    if key not in ("type", "values"):
                        err("UNKNOWN_FIELD", f"{where}.{key}", f"unknown match key field {key!r}")
                mtype = mk.get("type")
                if mtype not in MATCH_KEY_TYPES:
                    err("INVALID_VALUE", f"{where}.type", f"match key type must be one of {sorted(MATCH_KEY_TYPES)}")
                values = mk.get("values")
                if not isinstance(values, list) or not values:
                    err("INVALID_TYPE", f"{where}.values", "values must be a non-empty list of strings")
                    continue
                for j, v in enumerate(values):
                    vwhere = f"{where}.values[{j}]"
                    if not isinstance(v, str) or not v:
                        err("INVALID_TYPE", vwhere, "match key value must be a non-empty string")
                    elif mtype in MATCH_KEY_TYPES and mtype not in UNHASHED_TYPES and not HEX64.fullmatch(v):
                        # The message never echoes the value: it may be a raw identifier.
                        err("INVALID_FORMAT", vwhere, f"{mtype} values must be SHA-256 hashes (64 lowercase hex characters)")

    if "clientDedupeId" in ev:
        d = ev["clientDedupeId"]
        if not isinstance(d, str) or not d:
            err("INVALID_TYPE", "clientDedupeId", "clientDedupeId must be a non-empty string")
    if "value" in ev:
        v = ev["value"]
        if not is_number(v):
            err("INVALID_TYPE", "value", "value must be a number")
        elif decimals(v) > 2:
            err("INVALID_VALUE", "value", "value must have at most 2 decimal places")
    if "currencyCode" in ev and ev["currencyCode"] not in CURRENCIES:
        err("INVALID_VALUE", "currencyCode", f"currencyCode must be one of {' '.join(sorted(CURRENCIES))}")
    if "unitsSold" in ev and not is_int(ev["unitsSold"]):
        err("INVALID_TYPE", "unitsSold", "unitsSold must be an integer")
    if "dataProcessingOptions" in ev and ev["dataProcessingOptions"] != "LIMITED_DATA_USE":
        err("INVALID_VALUE", "dataProcessingOptions", "dataProcessingOptions must be LIMITED_DATA_USE")
    return errs


# ---------------------------------------------------------------------------------------------
# Shared state (one lock: requests are short, and correctness beats throughput in a fake)
# ---------------------------------------------------------------------------------------------

class State:
    def __init__(self, startup_config: dict):
        self.lock = threading.Lock()
        self.startup_config = copy.deepcopy(startup_config)
        self.in_flight = 0     # survives reset(): requests in progress still call leave()
        self.reset()

    def reset(self):
        with self.lock:
            self.config = copy.deepcopy(self.startup_config)
            self.tokens: dict[str, float] = {}       # access token -> expiry (epoch seconds)
            self.issued: list[str] = []              # every token ever issued, for leak tests
            self.accepted: list[dict] = []
            self.accepted_keys: set[tuple] = set()
            self.duplicates = 0
            self.requests: list[dict] = []
            self.token_requests = 0
            self.token_failures = 0
            self.faults: list[dict] = []            # FIFO of parsed one-shot faults
            self.random_cfg = None
            self.rng = random.Random()
            self.max_concurrent = self.in_flight

    def set_random(self, cfg):
        with self.lock:
            self.random_cfg = cfg
            self.rng = random.Random(cfg["seed"] if cfg else None)

    def take_fault(self, target: str, n_events: int) -> dict | None:
        """Pick the fault for one request: first matching queued fault, else a random draw.

        Returns a dict with any of status/retry_after/message/drop/latency_ms/event_errors/omit
        plus a "label" for the request log, or None.
        """
        with self.lock:
            for i, f in enumerate(self.faults):
                if f["target"] == target:
                    f["count"] -= 1
                    if f["count"] == 0:
                        del self.faults[i]
                    eff = {k: v for k, v in f.items() if k not in ("target", "count")}
                    eff["label"] = self._label(eff)
                    return eff
            r = self.random_cfg
            if not r or r["target"] != target:
                return None
            eff = {}
            draw = self.rng.random()
            for key, what in (("p429", 429), ("p500", 500), ("p503", 503), ("pdrop", "drop"), ("pslow", "slow")):
                if draw < r[key]:
                    if what == "drop":
                        eff["drop"] = True
                    elif what == "slow":
                        eff["latency_ms"] = r["slow_ms"]
                    else:
                        eff["status"] = what
                        if what == 429:
                            eff["retry_after"] = r["retry_after"]
                    eff["label"] = f"random:{what}"
                    break
                draw -= r[key]
            if target == "dsp" and r["p_event_transient"] > 0:
                hits = {i: self.rng.choice(("THROTTLED", "INTERNAL_ERROR"))
                        for i in range(1, n_events + 1) if self.rng.random() < r["p_event_transient"]}
                if hits and "status" not in eff and "drop" not in eff:
                    eff["event_errors"] = hits
                    eff["label"] = (eff.get("label", "") + ",random:event_transient").lstrip(",")
            return eff or None

    @staticmethod
    def _label(f: dict) -> str:
        parts = []
        if "latency_ms" in f:
            parts.append(f"latency:{int(f['latency_ms'])}")
        if "status" in f:
            parts.append(f"status:{f['status']}")
        for k in ("drop", "event_errors", "omit"):
            if k in f:
                parts.append(k)
        return ",".join(parts)

    def enter(self):
        with self.lock:
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)

    def leave(self):
        with self.lock:
            self.in_flight -= 1

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "accepted": copy.deepcopy(self.accepted),
                "accepted_count": len(self.accepted),
                "duplicates": self.duplicates,
                "requests": copy.deepcopy(self.requests),
                "token_requests": self.token_requests,
                "token_failures": self.token_failures,
                "max_concurrent": self.max_concurrent,
                "in_flight": self.in_flight,
                "faults_pending": sum(f["count"] for f in self.faults),
                "issued_tokens": list(self.issued),
            }


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive; every response below sets Content-Length
    server_version = "fake-dsp/1.0"
    # Headers and body go out in two writes: with Nagle's algorithm the body would wait for the
    # client's delayed ACK of the headers (~40 ms per response on Linux), which is not how a real
    # API behaves and made every request look 40 ms slower.
    disable_nagle_algorithm = True
    state: State  # set on the class in main()/make_server()

    def log_message(self, format, *args):
        # The default access log would go to stderr in an uncontrolled format; we log our own
        # line per request (see _log), which never includes headers.
        pass

    def _log(self, status, extra=""):
        log(f"{self.command} {self.path} {status}{(' ' + extra) if extra else ''}")

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        # Always consume the whole body, even for requests we reject, so a kept-alive
        # connection stays in sync for the client's next request.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, obj, content_type="application/json", headers=None):
        body = json.dumps(obj, default=json_default).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _dsp_error(self, status: int, message: str, headers=None):
        code = DSP_ERROR_CODES.get(status, "ERROR")
        self._send(status, {"code": code, "message": message, "details": message}, MEDIA_TYPE, headers)

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def do_PUT(self):
        self._route("PUT")

    def _route(self, method):
        body = self._read_body()
        path = urllib.parse.urlsplit(self.path).path
        m = EVENT_DATA_PATH.match(path)
        if m:
            if method != "POST":
                return self._not_allowed()
            return self._event_data(urllib.parse.unquote(m.group(1)), path, body)
        if path == "/auth/o2/token":
            if method != "POST":
                return self._not_allowed()
            return self._token(body)
        if path.startswith("/_control/"):
            return self._control(method, path, body)
        self._send(404, {"code": "NOT_FOUND", "message": f"no route for {path}", "details": f"no route for {path}"})
        self._log(404)

    def _not_allowed(self):
        self._send(405, {"code": "METHOD_NOT_ALLOWED", "message": "method not allowed", "details": "method not allowed"})
        self._log(405)

    # -- Login with Amazon ------------------------------------------------------------------

    def _token(self, body: bytes):
        st = self.state
        fault = st.take_fault("token", 0)
        status = self._token_inner(body, fault)
        with st.lock:
            st.token_requests += 1
            if status != 200:
                st.token_failures += 1
        self._log(status if status else "dropped", f"fault={fault['label']}" if fault else "")

    def _token_inner(self, body: bytes, fault) -> int:
        st = self.state
        if fault:
            if "latency_ms" in fault:
                time.sleep(fault["latency_ms"] / 1000)
            if fault.get("drop"):
                self.close_connection = True
                return 0
            if "status" in fault:
                s = fault["status"]
                error = ("too_many_requests" if s == 429 else "server_error" if s >= 500
                         else "invalid_client" if s == 401 else "invalid_request")
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None
                self._send(s, {"error": error, "error_description": fault.get("message", "injected fault")},
                           headers=headers)
                return s

        def fail(status, error, description):
            self._send(status, {"error": error, "error_description": description})
            return status

        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return fail(400, "invalid_request", "body must be application/x-www-form-urlencoded")
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return fail(400, "invalid_request", "body is not UTF-8")
        params = {k: v[0] for k, v in form.items()}
        missing = [k for k in ("grant_type", "refresh_token", "client_id", "client_secret") if not params.get(k)]
        if "grant_type" in missing:
            return fail(400, "invalid_request", "grant_type is missing")
        if params["grant_type"] != "refresh_token":
            return fail(400, "unsupported_grant_type", "only grant_type=refresh_token is supported")
        if missing:
            return fail(400, "invalid_request", f"missing parameter(s): {', '.join(missing)}")
        with st.lock:
            cfg = st.config
            if params["client_id"] != cfg["client_id"] or params["client_secret"] != cfg["client_secret"]:
                bad = (401, "invalid_client", "client authentication failed")
            elif params["refresh_token"] != cfg["refresh_token"]:
                bad = (400, "invalid_grant", "the refresh token is invalid or was revoked")
            else:
                bad = None
                token = "Atza|" + secrets.token_hex(16)
                ttl = cfg["token_ttl"]
                st.tokens[token] = time.time() + ttl
                st.issued.append(token)
        if bad:
            return fail(*bad)
        self._send(200, {"access_token": token, "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
                         "token_type": "bearer", "refresh_token": params["refresh_token"]})
        return 200

    # -- Conversions API --------------------------------------------------------------------

    def _event_data(self, advertiser_id: str, path: str, body: bytes):
        st = self.state
        # Parse leniently first, only to describe the request in the log/state; the strict
        # checks come after auth, in the order the real API applies them.
        try:
            doc = parse_json(body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        events = doc.get("eventData") if isinstance(doc, dict) else None
        n_events = len(events) if isinstance(events, list) else 0
        source = doc.get("source") if isinstance(doc, dict) and isinstance(doc.get("source"), str) else None
        dedupe_ids = [e.get("clientDedupeId") if isinstance(e, dict) else None for e in events] \
            if isinstance(events, list) else []
        record = {"path": path, "status": 0, "source": source, "events": n_events, "t": time.time(),
                  "fault": None, "advertiserId": advertiser_id, "succeeded": 0, "failed": 0,
                  "dedupe_ids": dedupe_ids}

        st.enter()
        try:
            fault = st.take_fault("dsp", n_events)
            record["fault"] = fault["label"] if fault else None
            with st.lock:
                delay_ms = st.config["latency_ms"]
            delay_ms += (fault or {}).get("latency_ms", 0)
            if delay_ms:
                time.sleep(delay_ms / 1000)
            self._event_data_inner(advertiser_id, doc, body, fault or {}, record)
        finally:
            st.leave()
            with st.lock:
                st.requests.append(record)
        extra = f"events={n_events}"
        if record["status"] == 207:
            extra += f" accepted={record['succeeded']} rejected={record['failed']}"
            if record.get("duplicates"):
                extra += f" duplicates={record['duplicates']}"
        if record["fault"]:
            extra += f" fault={record['fault']}"
        self._log(record["status"] or "dropped", extra)
        record.pop("duplicates", None)

    def _event_data_inner(self, advertiser_id, doc, body, fault, record):
        st = self.state

        def error(status, message, headers=None):
            record["status"] = status
            self._dsp_error(status, message, headers)

        if fault.get("drop"):
            # Leave without writing anything; the server then closes the socket.
            self.close_connection = True
            return
        if "status" in fault:
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None
            return error(fault["status"], fault.get("message", "injected fault"), headers)

        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != MEDIA_TYPE:
            return error(415, f"Content-Type must be {MEDIA_TYPE}")
        accepts = [a.split(";")[0].strip().lower() for a in self.headers.get("Accept", "").split(",")]
        if MEDIA_TYPE not in accepts:
            return error(406, f"Accept must be {MEDIA_TYPE}")

        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        now = time.time()
        with st.lock:
            cfg = copy.deepcopy(st.config)
            expiry = st.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if not auth:
            return error(401, "missing Authorization header")
        if expiry is None:
            return error(401, "access token is not valid (unknown, malformed or revoked)")
        if expiry <= now:
            return error(401, "access token has expired")
        if self.headers.get("Amazon-Advertising-API-ClientId") != cfg["client_id"]:
            return error(403, "Amazon-Advertising-API-ClientId does not match the token's client")
        if advertiser_id not in cfg["advertisers"]:
            return error(403, "advertiser is not accessible with these credentials")
        if self.headers.get("Amazon-Ads-AccountId") != advertiser_id:
            return error(403, "Amazon-Ads-AccountId must equal the advertiserId in the path")
        if cfg["profile_id"] is not None and self.headers.get("Amazon-Advertising-API-Scope") != cfg["profile_id"]:
            return error(403, "Amazon-Advertising-API-Scope does not match the profile")

        if doc is None:
            return error(400, "request body is not valid JSON")
        if not isinstance(doc, dict):
            return error(400, "request body must be a JSON object")
        unknown = sorted(set(doc) - {"source", "eventData"})
        if unknown:
            return error(400, f"unknown top-level field(s): {', '.join(unknown)}")
        if doc.get("source") not in SOURCES:
            return error(400, "source must be AMAZON_AD_TAG or SERVER_TO_SERVER")
        events = doc.get("eventData")
        if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
            return error(400, f"eventData must be a list of 1..{MAX_EVENTS} events")
        for i, ev in enumerate(events, start=1):
            if not isinstance(ev, dict):
                return error(400, f"eventData index {i} (1-based): event must be a JSON object")
            if ev.get("name") == "__bad_request__":
                return error(400, f"eventData index {i} (1-based): name '__bad_request__' makes the "
                                  "whole request invalid (fake DSP test hook)")

        source = doc["source"]
        now_dt = datetime.now(timezone.utc)
        success, failure = [], []
        injected = fault.get("event_errors", {})
        omitted = fault.get("omit", set())
        duplicates = 0
        for i, ev in enumerate(events, start=1):
            if i in omitted:
                continue
            if i in injected:
                failure.append({"index": i, "code": injected[i],
                                "message": "transient failure injected by the fake DSP", "errors": []})
                continue
            errs = validate_event(ev, cfg, now_dt)
            if errs:
                failure.append({"index": i, "code": "INVALID_ARGUMENT", "message": "Invalid conversion event",
                                "errors": errs})
                continue
            dedupe = ev.get("clientDedupeId")
            key = (advertiser_id, dedupe if dedupe is not None else f"__generated__{uuid.uuid4()}")
            with st.lock:
                duplicate = key in st.accepted_keys
                if duplicate:
                    st.duplicates += 1
                else:
                    st.accepted_keys.add(key)
                    st.accepted.append(dict(ev, advertiserId=advertiser_id, source=source))
            if duplicate:
                duplicates += 1
                success.append({"index": i, "message": "Success (duplicate clientDedupeId; first event kept)"})
            else:
                success.append({"index": i, "message": "Success"})
                if verbose:
                    log(f"  accepted advertiser={advertiser_id} source={source} name={ev['name']} "
                        f"definition={ev['conversionDefinitionId']} timestamp={ev['timestamp']} "
                        f"value={ev.get('value', '-')} {ev.get('currencyCode', '')} "
                        f"dedupe={ev.get('clientDedupeId', '-')}")
        record.update(status=207, succeeded=len(success), failed=len(failure), duplicates=duplicates)
        self._send(207, {"success": success, "error": failure}, MEDIA_TYPE)

    # -- control API ------------------------------------------------------------------------

    def _control(self, method, path, body):
        st = self.state
        try:
            payload = parse_json(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError) as e:
            return self._control_reply(400, {"error": f"body is not valid JSON: {e}"})
        try:
            if path == "/_control/health" and method == "GET":
                return self._control_reply(200, {"ok": True})
            if path == "/_control/state" and method == "GET":
                return self._control_reply(200, st.snapshot())
            if path == "/_control/config" and method == "POST":
                with st.lock:
                    st.config = validate_config(payload, st.config)
                return self._control_reply(200, {"ok": True})
            if path == "/_control/reset" and method == "POST":
                st.reset()
                return self._control_reply(200, {"ok": True})
            if path == "/_control/faults" and method == "POST":
                if isinstance(payload, dict) and "random" in payload:
                    if len(payload) != 1:
                        raise ValueError("{\"random\": ...} cannot be combined with other keys")
                    st.set_random(parse_random(payload["random"]))
                else:
                    items = payload if isinstance(payload, list) else [payload]
                    parsed = [parse_fault(f) for f in items]   # all-or-nothing
                    with st.lock:
                        st.faults.extend(parsed)
                with st.lock:
                    pending = sum(f["count"] for f in st.faults)
                return self._control_reply(200, {"ok": True, "queued": pending})
            if path == "/_control/faults" and method == "DELETE":
                with st.lock:
                    st.faults.clear()
                st.set_random(None)
                return self._control_reply(200, {"ok": True})
            if path == "/_control/expire_tokens" and method == "POST":
                with st.lock:
                    n = len(st.tokens)
                    st.tokens.clear()
                return self._control_reply(200, {"ok": True, "revoked": n})
            if path == "/_control/rotate" and method == "POST":
                patch = payload or {}
                if not isinstance(patch, dict) or set(patch) - {"client_secret", "refresh_token"}:
                    raise ValueError("rotate takes {\"client_secret\"?, \"refresh_token\"?}")
                with st.lock:
                    st.config = validate_config(patch, st.config)
                    n = len(st.tokens)
                    st.tokens.clear()
                return self._control_reply(200, {"ok": True, "revoked": n})
        except ValueError as e:
            return self._control_reply(400, {"error": str(e)})
        known = {"/_control/health", "/_control/state", "/_control/config", "/_control/reset",
                 "/_control/faults", "/_control/expire_tokens", "/_control/rotate"}
        if path in known:
            return self._control_reply(405, {"error": f"{method} not allowed on {path}"})
        return self._control_reply(404, {"error": f"no control endpoint {path}"})

    def _control_reply(self, status, obj):
        self._send(status, obj)
        if self.path not in ("/_control/state", "/_control/health") or status != 200:
            self._log(status)


class Server(ThreadingHTTPServer):
    daemon_threads = True          # never let a stuck keep-alive connection block exit
    allow_reuse_address = True
    request_queue_size = 128       # tests open many connections at once


def make_server(port: int, config: dict) -> Server:
    handler = type("BoundHandler", (Handler,), {"state": State(config)})
    return Server(("127.0.0.1", port), handler)


def main(argv=None):
    global quiet, verbose
    ap = argparse.ArgumentParser(description="Fake Amazon DSP Conversions API (test tooling).")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--config", help="JSON file merged over the default config")
    ap.add_argument("--verbose", action="store_true", help="log each accepted event (no identifiers)")
    ap.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = ap.parse_args(argv)
    quiet, verbose = args.quiet, args.verbose and not args.quiet

    config = copy.deepcopy(DEFAULT_CONFIG)
    if args.config:
        try:
            with open(args.config, "rb") as f:
                config = validate_config(parse_json(f.read()))
        except (OSError, ValueError) as e:
            print(f"fake_dsp: bad --config {args.config}: {e}", file=sys.stderr)
            return 2

    server = make_server(args.port, config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
