#!/usr/bin/env python3
"""Fake Amazon DSP Conversions API + Login with Amazon token endpoint, with fault injection
and a server-wide rate limit.

TEST / DEMO TOOLING ONLY -- not product code. Python 3.11, standard library only.
It mimics Amazon's Conversions API (event import, conversion definitions, user data deletion)
closely enough for the Lambda's integration tests, benchmarks and the local demo, and lets
tests inject failures.

Usage
-----
    python3 tools/fake_dsp.py [--port 0] [--config JSON_FILE] [--verbose] [--quiet]

  --port N       port to bind on 127.0.0.1 (0, the default, picks a free port)
  --config FILE  JSON object merged over the default configuration (below)
  --verbose      also log one stderr line per accepted event (no identifiers)
  --quiet        no per-request stderr lines at all

After binding, exactly one line ``LISTENING <port>`` is printed to stdout (flushed); nothing
else is ever written to stdout. Log lines go to stderr, one per request (method, path, status,
counts). Authorization headers, client secrets, refresh tokens and access tokens are never
logged. If a test pipes stderr it must drain it (or pass --quiet, or inherit/discard stderr):
a full pipe would stall the server.
SIGTERM / SIGINT exit cleanly.

Point the Lambda at it with DSP_API_URL=http://127.0.0.1:<port> and
DSP_TOKEN_URL=http://127.0.0.1:<port>/auth/o2/token.

Configuration (defaults; overridable by --config and by POST /_control/config)
----------------------------------------------------------------------------
    {"client_id": "demo-client-id", "client_secret": "demo-client-secret",
     "refresh_token": "demo-refresh-token",
     "advertisers": ["demo-advertiser"],   # advertiser ids known to these credentials
     "profile_id": null,                    # if set, Amazon-Advertising-API-Scope must equal it
     "conversion_definitions": [],          # the advertisers' conversion definitions (below)
     "definitions_list_status": null,       # e.g. 403 or 404: the list endpoint answers that
     "definitions_page_size": 50,           # most definitions per list page (maxResults cap)
     "invalid_event_status": 207,           # 400: an invalid event fails its whole request
     "max_body_bytes": 1048576,             # larger request bodies get 413 (null: no limit)
     "rate_limit_rps": null,                # server-wide limit, requests/s (null: none)
     "rate_limit_burst": null,              # token bucket size (null: max(1, rate_limit_rps))
     "retry_after_format": "seconds",       # or "http-date": how Retry-After is written
     "token_ttl": 3600,                     # access token lifetime, seconds
     "latency_ms": 0}                       # added delay on every DSP response (not token/control)
Unknown keys are rejected (400 from the control API, exit 2 from --config).

conversion_definitions is a list whose items are either
  - a definition object {"conversionDefinitionId", "name"?, "conversionType"?, "source"?,
    "sourceType"?, "countingMethod"?}: name defaults to the id, conversionType to OTHER,
    source (AMAZON_AD_TAG, SERVER_TO_SERVER or MMP) to null = unknown, which accepts events of
    any source; sourceType and countingMethod are only echoed by the list endpoint (defaults:
    TAG / API / MMP / UNKNOWN after the source, and EACH); or
  - an id string, short for {"conversionDefinitionId": id} (a definition of unknown source and
    type OTHER, which accepts any source and negative values).
An empty list means "any conversionDefinitionId is accepted" (and the list endpoint lists none).

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
    counts in token_failures. Tokens expire after token_ttl seconds. Not rate limited.

The three Conversions API endpoints below ("DSP endpoints") share these rules.
  Whole-request errors carry Amazon's DspErrorV1 body, with the endpoint's media type:
      {"code": "<CODE>", "message": "...", "requestId": "<fresh uuid>",
       "errors": [{"errorType", "fieldName", "message"}]}
  ("code" is kept beside DspErrorV1's keys for clients that read it; errors is [] when no
  field is to blame.) Codes: 400 BAD_REQUEST, 401 UNAUTHORIZED, 403 FORBIDDEN, 404 NOT_FOUND,
  406 NOT_ACCEPTABLE, 413 PAYLOAD_TOO_LARGE, 415 UNSUPPORTED_MEDIA_TYPE, 422
  UNPROCESSABLE_ENTITY, 429 THROTTLED, 500 INTERNAL_ERROR, 502 BAD_GATEWAY, 503
  SERVICE_UNAVAILABLE, 504 GATEWAY_TIMEOUT (others: ERROR). Every DSP response, 2xx included,
  carries the header x-amzn-RequestId (equal to requestId in an error body).
  Checks, in this order, after the rate limit and fault injection (see below):
      415  Content-Type media type is not the endpoint's (parameters such as ";charset=utf-8"
           are ignored)
      406  Accept does not list exactly that media type (*/* is not enough)
      413  body longer than max_body_bytes
      401  no "Authorization: Bearer <token>", or the token was not issued here, expired, or
           was revoked
      403  Amazon-Advertising-API-ClientId != client_id
      403  advertiserId not in advertisers, or Amazon-Ads-AccountId != it
      403  profile_id set and Amazon-Advertising-API-Scope != it
      400  the body, as described for each endpoint (errors[] names the field)

POST /accounts/{advertiserId}/dsp/conversionDefinitions/eventData
    Media type application/vnd.dspconversioneventimport.v1+json.
    400 when the body is not a JSON object {"source", "eventData"}; a top-level key is
    unknown; source is not AMAZON_AD_TAG|SERVER_TO_SERVER; eventData is not a list of 1..100
    JSON objects; or any event's name is exactly "__bad_request__" (message: "eventData index
    <i> (1-based): ...", errors[0].fieldName "eventData[<i-1>].name").
    Otherwise 207 Multi-Status:
      {"success": [{"index": i, "message": "..."}],
       "error":   [{"index": i, "code": "INVALID_ARGUMENT", "message": "Invalid conversion event",
                    "errors": [{"errorType": "...", "fieldName": "...", "message": "..."}]}]}
    index counts from 1 in request order; every index appears exactly once unless an "omit"
    fault removes it. Both lists are always present (possibly empty).
    With invalid_event_status 400, a request holding any invalid event (per the rules below;
    the "__reject__" hook included) is answered 400 BAD_REQUEST instead, nothing of it stored:
    message "Invalid conversion event(s) at eventData index <i>, ... (1-based)", and errors[]
    lists every problem with fieldName "eventData[<i-1>].<field>" (0-based, like the paths
    inside an event).
    Per-event validation (each problem is one errors[] entry; errorType is one of
    MISSING_FIELD, UNKNOWN_FIELD, INVALID_TYPE, INVALID_FORMAT, INVALID_VALUE):
      required conversionDefinitionId (non-empty string; one of conversion_definitions when
        that list is non-empty), name (non-empty string), timestamp, countryCode, matchKeys;
      the event's definition rules, as the real API applies them (all INVALID_VALUE, with
        fieldName "conversionDefinitionId" except the last):
        - a definition whose source is MMP takes no event through this API;
        - a definition with a known source takes only requests of that source (the message
          names both sources);
        - value must be >= 0 for an OFF_AMAZON_PURCHASES definition (fieldName "value");
          negative values (refunds) are accepted for every other type;
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

POST /accounts/{advertiserId}/dsp/conversionDefinitions/list
    Media type application/vnd.dspconversiondefinition.v1+json.
    Body {"maxResults"?: n, "nextToken"?: "..."} (a JSON object; an empty body counts as {}).
    400 when maxResults is not an integer >= 1, nextToken is not one this server issued for
    this advertiser, or another key is present. definitions_list_status (e.g. 403, 404)
    answers that status instead, after the header checks.
    200 {"conversionDefinitions": [{"conversionDefinitionId", "name", "conversionType",
         "source", "sourceType", "countingMethod"}], "nextToken"?: "<opaque>"}
    in configuration order, at most min(maxResults, definitions_page_size) per page (maxResults
    defaults to the page size); nextToken is present exactly when more definitions follow.
    A definition of unknown source is listed with "source": null.

POST /accounts/{advertiserId}/dsp/conversionDefinitions/delete
    Media type application/vnd.dspuserdeletionrequest.v1+json.
    Body {"deletionRequests": [1..100 {"matchKeys": [{"type", "values"}]}]}; 400 as for
    eventData (not an object, unknown top-level key, not a list of 1..100 objects, or a MAID or
    RAMP_ID value exactly "__bad_request__").
    207 {"success": [{"index": i, "message": "Success"}],
         "error": [{"index": i, "code": "INVALID_ARGUMENT", "message": "Invalid deletion request",
                    "errors": [...]}]}
    with 1-based indices. Per entry: only the key matchKeys, a non-empty list validated exactly
    like an event's (hashed types need 64 lowercase hex values); a MAID or RAMP_ID value
    exactly "__reject__" rejects the entry (test hook). invalid_event_status 400 applies here
    too (fieldName "deletionRequests[<i-1>]...."). Accepted entries are recorded in
    "deletions", and every stored event of that advertiser sharing a (type, value) match key
    with the entry is removed from "accepted" (counted in "events_deleted").

Rate limit
----------
rate_limit_rps sets ONE token bucket for the whole server, shared by every caller, advertiser
and DSP endpoint (not the token or control endpoints): it holds rate_limit_burst tokens
(default max(1, rate_limit_rps)), refills at rate_limit_rps per second, and each request takes
one token when it arrives. A request that finds none is answered 429 THROTTLED (DspErrorV1)
with Retry-After = the time until the next token, rounded up to whole seconds (at least 1);
it consumes no queued fault and is recorded with fault "rate_limit". Setting either key
through the control API refills the bucket. The counters (GET /_control/rate) let a
benchmark compute the share of the limit it used and its share of 429s.

Retry-After, on every 429 (and on any fault that carries retry_after), is written as whole
seconds ("2") with retry_after_format "seconds", or as an HTTP-date ("Wed, 21 Oct 2015 07:28:00
GMT", that many seconds from now) with "http-date".

Fault injection
---------------
Faults target an endpoint: "dsp" (eventData, the default; "eventData" is an alias), "list",
"delete" or "token". Control endpoints are never faulted.
1. One-shot FIFO queue. Each request to an endpoint consumes the first queued fault with its
   target, before any validation (so a fault is consumed even by a request that would fail
   with 401/415/...), but after the rate limit. Fault objects (each may also carry "count": n,
   default 1 = used n times):
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
   event_errors and omit apply to the dsp and delete targets only (indices of events or of
   deletion requests). For the token target a status fault answers {"error": ...,
   "error_description": ...} (429 too_many_requests, 5xx server_error, 401 invalid_client,
   other 4xx invalid_request).
2. Random faults, used only when no queued fault matched:
     {"random": {"seed": 1, "p429": 0.1, "p500": 0.05, "p503": 0.05, "pdrop": 0.02,
                 "pslow": 0.05, "slow_ms": 3000, "p_event_transient": 0.01, "retry_after": 1,
                 "target": "dsp"}}
   All keys optional (probabilities default 0, slow_ms 3000, retry_after 1, target dsp).
   Per request one draw picks at most one of 429/500/503/drop/slow (slow = delay slow_ms then
   answer normally); then each event (or deletion request) of a 207 independently becomes a
   transient error with probability p_event_transient (code THROTTLED or INTERNAL_ERROR, not
   stored). Random 429s carry Retry-After: retry_after.

Control API (JSON in, JSON out; not faulted, not delayed, not rate limited, not recorded)
-----------------------------------------------------------------------------------------
  POST   /_control/config         merge keys into the config -> 200 {"ok": true}
  GET    /_control/config         200 the current config (definitions in object form)
  POST   /_control/reset          back to the startup config; clears stored events, deletions,
                                  logs, counters, faults, random mode, tokens and the rate
                                  bucket -> 200 {"ok": true}
  POST   /_control/faults         a fault object or a list of them (appended to the queue), or
                                  {"random": {...}} (random mode on) / {"random": null} (off)
                                  -> 200 {"ok": true, "queued": <faults pending>}
  DELETE /_control/faults         clear the queue and random mode -> 200 {"ok": true}
  POST   /_control/expire_tokens  revoke every issued token -> 200 {"ok": true, "revoked": n}
  POST   /_control/rotate         {"client_secret"?, "refresh_token"?}: replace credentials (old
                                  ones are rejected from now on) and revoke tokens -> 200
  GET    /_control/rate           200 the rate counters (below)
  DELETE /_control/rate           zero the rate counters (the limit and bucket stay) -> 200
  GET    /_control/state          200 {
      "accepted": [<stored event as received, plus "advertiserId" and "source">],
      "accepted_count": n, "duplicates": n,
      "requests": [{"path", "status", "source", "events", "t", "fault", "advertiserId",
                    "succeeded", "failed", "dedupe_ids"}],
      "definition_requests": [{"path", "status", "t", "fault", "advertiserId", "maxResults",
                               "nextToken" (bool: one was sent), "returned"}],
      "deletion_requests": [{"path", "status", "entries", "t", "fault", "advertiserId",
                             "succeeded", "failed"}],
      "deletions": [{"advertiserId", "matchKeys"}], "deletions_count": n, "events_deleted": n,
      "token_requests": n, "token_failures": n, "max_concurrent": n, "in_flight": n,
      "faults_pending": n, "issued_tokens": [every access token issued, for leak tests],
      "rate": <as GET /_control/rate>}
      "requests" lists eventData calls only, "definition_requests" list calls and
      "deletion_requests" delete calls (token calls are only counted), each in completion
      order; status is 0 for a dropped connection; source/events/entries come from the body as
      far as it parsed (null / 0 otherwise); fault is null or a label such as "status:429",
      "drop", "latency:2000", "event_errors", "omit", "random:500", "random:slow",
      "random:event_transient", "rate_limit"; succeeded/failed count the 207 lists;
      dedupe_ids lists the clientDedupeId of each event (null when absent).
      "value" numbers come back as JSON numbers (e.g. 12.5).
      max_concurrent: most DSP endpoint requests handled at the same moment (delays count).
  GET    /_control/health         200 {"ok": true}

  The rate counters cover every request to a DSP endpoint, limited or not:
      {"rate_limit_rps": x|null, "rate_limit_burst": x|null,
       "admitted": n,          requests let through (whatever their answer)
       "throttled": n,         requests refused by the rate limit (429)
       "responses_429": n,     every 429 answered by a DSP endpoint (injected faults too)
       "first_t", "last_t":    epoch seconds of the first and last counted request (or null)
       "per_second": [{"t": <epoch second>, "admitted": n, "throttled": n}, ...]
                               every second from first_t to last_t, quiet ones included,
       "limit_used":           admitted / (burst + rps * (last_t - first_t)), the share of what
                               the bucket could have let through in that span (null: no limit),
       "throttled_share":      throttled / (admitted + throttled) (null: no request)}

Bad control input -> 400 {"error": "..."}. Unknown paths -> 404, wrong method -> 405 (both
DspErrorV1 outside /_control/). All responses carry Content-Length; connections are kept alive
(HTTP/1.1) unless the client asks otherwise or a "drop" fault fires.
"""

from __future__ import annotations

import argparse
import copy
import email.utils
import json
import math
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MEDIA_TYPE = "application/vnd.dspconversioneventimport.v1+json"
DEFINITION_MEDIA_TYPE = "application/vnd.dspconversiondefinition.v1+json"
DELETION_MEDIA_TYPE = "application/vnd.dspuserdeletionrequest.v1+json"
API_PATH = re.compile(r"^/accounts/([^/]+)/dsp/conversionDefinitions/(eventData|list|delete)$")

# kind (the path's last segment) -> fault target, media type, state log
ENDPOINTS = {
    "eventData": ("dsp", MEDIA_TYPE, "requests"),
    "list": ("list", DEFINITION_MEDIA_TYPE, "definition_requests"),
    "delete": ("delete", DELETION_MEDIA_TYPE, "deletion_requests"),
}
TARGETS = {"dsp", "list", "delete", "token"}
TARGET_ALIASES = {"eventData": "dsp"}
ITEM_TARGETS = {"dsp", "delete"}     # targets whose requests hold indexed items

DEFAULT_CONFIG = {
    "client_id": "demo-client-id",
    "client_secret": "demo-client-secret",
    "refresh_token": "demo-refresh-token",
    "advertisers": ["demo-advertiser"],
    "profile_id": None,
    "conversion_definitions": [],
    "definitions_list_status": None,
    "definitions_page_size": 50,
    "invalid_event_status": 207,
    "max_body_bytes": 1048576,
    "rate_limit_rps": None,
    "rate_limit_burst": None,
    "retry_after_format": "seconds",
    "token_ttl": 3600,
    "latency_ms": 0,
}
RATE_KEYS = ("rate_limit_rps", "rate_limit_burst")

SOURCES = {"AMAZON_AD_TAG", "SERVER_TO_SERVER"}
DEFINITION_SOURCES = SOURCES | {"MMP"}
SOURCE_TYPES = {"AMAZON_AD_TAG": "TAG", "SERVER_TO_SERVER": "API", "MMP": "MMP", None: "UNKNOWN"}
DEFINITION_KEYS = ("conversionDefinitionId", "name", "conversionType", "source", "sourceType",
                   "countingMethod")
MATCH_KEY_TYPES = {"ADDRESS", "CITY", "EMAIL", "FIRST_NAME", "LAST_NAME", "MAID", "PHONE",
                   "POSTAL", "RAMP_ID", "STATE"}
UNHASHED_TYPES = {"MAID", "RAMP_ID"}
CURRENCIES = set("AED AUD BRL CAD CNY DKK EUR GBP INR JPY MXN NOK NZD SAR SEK SGD TRY USD".split())
REQUIRED_FIELDS = ("conversionDefinitionId", "name", "timestamp", "countryCode", "matchKeys")
OPTIONAL_FIELDS = ("clientDedupeId", "value", "currencyCode", "unitsSold", "dataProcessingOptions")
MAX_ITEMS = 100
MAX_AGE = timedelta(days=7)
MAX_FUTURE = timedelta(minutes=5)
HEX64 = re.compile(r"[0-9a-f]{64}")
COUNTRY = re.compile(r"[A-Z]{2}")
CONVERSION_TYPE = re.compile(r"[A-Z][A-Z0-9_]*")

DSP_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                   405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 413: "PAYLOAD_TOO_LARGE",
                   415: "UNSUPPORTED_MEDIA_TYPE", 422: "UNPROCESSABLE_ENTITY", 429: "THROTTLED",
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


def retry_after_value(seconds: int, fmt: str) -> str:
    """A Retry-After header value: delta-seconds, or the HTTP-date that many seconds from now."""
    if fmt == "http-date":
        return email.utils.formatdate(time.time() + seconds, usegmt=True)
    return str(seconds)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def normalize_definition(item, where: str) -> dict:
    """A configured definition (an id string or an object) in its complete object form."""
    if isinstance(item, str):
        item = {"conversionDefinitionId": item}
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an id string or a definition object")
    unknown = sorted(set(item) - set(DEFINITION_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown definition key(s) {unknown}")
    cdid = item.get("conversionDefinitionId")
    if not isinstance(cdid, str) or not cdid:
        raise ValueError(f"{where}: conversionDefinitionId must be a non-empty string")
    source = item.get("source")
    if source is not None and source not in DEFINITION_SOURCES:
        raise ValueError(f"{where}: source must be one of {sorted(DEFINITION_SOURCES)} or null")
    ctype = item.get("conversionType", "OTHER")
    if not (isinstance(ctype, str) and CONVERSION_TYPE.fullmatch(ctype)):
        raise ValueError(f"{where}: conversionType must be an upper-case name such as OFF_AMAZON_PURCHASES")
    out = {"conversionDefinitionId": cdid, "name": item.get("name", cdid), "conversionType": ctype,
           "source": source, "sourceType": item.get("sourceType", SOURCE_TYPES[source]),
           "countingMethod": item.get("countingMethod", "EACH")}
    for key in ("name", "sourceType", "countingMethod"):
        if not isinstance(out[key], str) or not out[key]:
            raise ValueError(f"{where}: {key} must be a non-empty string")
    return out


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
        if key == "advertisers" and not (isinstance(val, list) and all(isinstance(x, str) for x in val)):
            raise ValueError(f"{key} must be a list of strings")
        if key == "conversion_definitions":
            if not isinstance(val, list):
                raise ValueError("conversion_definitions must be a list of id strings or definition objects")
            val = [normalize_definition(x, f"conversion_definitions[{i}]") for i, x in enumerate(val)]
            ids = [d["conversionDefinitionId"] for d in val]
            if len(set(ids)) != len(ids):
                raise ValueError("conversion_definitions holds the same conversionDefinitionId twice")
        if key == "definitions_list_status" and val is not None and not (is_int(val) and 400 <= val <= 599):
            raise ValueError("definitions_list_status must be null or an integer in 400..599")
        if key == "definitions_page_size" and not (is_int(val) and val >= 1):
            raise ValueError("definitions_page_size must be an integer >= 1")
        if key == "invalid_event_status" and val not in (207, 400):
            raise ValueError("invalid_event_status must be 207 or 400")
        if key == "max_body_bytes" and val is not None and not (is_int(val) and val >= 1):
            raise ValueError("max_body_bytes must be null or an integer >= 1")
        if key in RATE_KEYS and val is not None and not (is_number(val) and val > 0):
            raise ValueError(f"{key} must be null or a positive number")
        if key == "retry_after_format" and val not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if key in ("token_ttl", "latency_ms") and not (is_number(val) and val >= 0):
            raise ValueError(f"{key} must be a non-negative number")
        cfg[key] = float(val) if isinstance(val, Decimal) else val
    if cfg["profile_id"] is not None:
        cfg["profile_id"] = str(cfg["profile_id"])
    return cfg


def parse_target(value) -> str:
    target = TARGET_ALIASES.get(value, value)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS | set(TARGET_ALIASES))}")
    return target


def parse_fault(obj) -> dict:
    """Validate one queued fault; strict so that a typo in a test fails loudly."""
    if not isinstance(obj, dict):
        raise ValueError("a fault must be a JSON object")
    unknown = set(obj) - FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}")
    fault = dict(obj)
    fault["target"] = parse_target(fault.get("target", "dsp"))
    fault.setdefault("count", 1)
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
    if fault["target"] not in ITEM_TARGETS and ("event_errors" in fault or "omit" in fault):
        raise ValueError("event_errors/omit only apply to the dsp and delete targets")
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
    cfg["target"] = parse_target(cfg["target"])
    if cfg["seed"] is not None and not (is_int(cfg["seed"]) or isinstance(cfg["seed"], str)):
        raise ValueError("seed must be an integer, a string or null")
    if not (is_number(cfg["slow_ms"]) and cfg["slow_ms"] >= 0):
        raise ValueError("slow_ms must be a non-negative number")
    if not (is_int(cfg["retry_after"]) and cfg["retry_after"] >= 0):
        raise ValueError("retry_after must be a non-negative integer")
    cfg["slow_ms"] = float(cfg["slow_ms"])
    return cfg


def validate_match_keys(mks, err, where="matchKeys") -> None:
    """Report problems of a matchKeys list through err(errorType, fieldName, message)."""
    if not isinstance(mks, list) or not mks:
        err("INVALID_TYPE", where, "matchKeys must be a non-empty list")
        return
    for i, mk in enumerate(mks):
        at = f"{where}[{i}]"
        if not isinstance(mk, dict):
            err("INVALID_TYPE", at, "match key must be an object {type, values}")
            continue
        for key in mk:
            if key not in ("type", "values"):
                err("UNKNOWN_FIELD", f"{at}.{key}", f"unknown match key field {key!r}")
        mtype = mk.get("type")
        if mtype not in MATCH_KEY_TYPES:
            err("INVALID_VALUE", f"{at}.type", f"match key type must be one of {sorted(MATCH_KEY_TYPES)}")
        values = mk.get("values")
        if not isinstance(values, list) or not values:
            err("INVALID_TYPE", f"{at}.values", "values must be a non-empty list of strings")
            continue
        for j, v in enumerate(values):
            vat = f"{at}.values[{j}]"
            if not isinstance(v, str) or not v:
                err("INVALID_TYPE", vat, "match key value must be a non-empty string")
            elif mtype in MATCH_KEY_TYPES and mtype not in UNHASHED_TYPES and not HEX64.fullmatch(v):
                # The message never echoes the value: it may be a raw identifier.
                err("INVALID_FORMAT", vat, f"{mtype} values must be SHA-256 hashes (64 lowercase hex characters)")


def match_key_pairs(mks) -> set[tuple[str, str]]:
    """The (type, value) pairs of a matchKeys list, as far as it is well-formed."""
    pairs = set()
    for mk in mks if isinstance(mks, list) else []:
        if isinstance(mk, dict) and isinstance(mk.get("values"), list):
            pairs.update((mk.get("type"), v) for v in mk["values"] if isinstance(v, str))
    return pairs


def validate_event(ev: dict, cfg: dict, now: datetime, source: str | None = None) -> list[dict]:
    """Return the errors[] entries for one event (empty when it is valid).

    source is the request's source, which the event's definition must accept.
    """
    errs = []

    def err(error_type, field, message):
        errs.append({"errorType": error_type, "fieldName": field, "message": message})

    for key in ev:
        if key not in REQUIRED_FIELDS and key not in OPTIONAL_FIELDS:
            err("UNKNOWN_FIELD", key, f"unknown field {key!r}")
    for key in REQUIRED_FIELDS:
        if key not in ev or ev[key] is None:
            err("MISSING_FIELD", key, f"{key} is required")

    definitions = {d["conversionDefinitionId"]: d for d in cfg["conversion_definitions"]}
    definition = None
    cdid = ev.get("conversionDefinitionId")
    if cdid is not None:
        if not isinstance(cdid, str) or not cdid:
            err("INVALID_TYPE", "conversionDefinitionId", "conversionDefinitionId must be a non-empty string")
        elif definitions and cdid not in definitions:
            err("INVALID_VALUE", "conversionDefinitionId",
                "conversionDefinitionId is not a conversion definition of this advertiser")
        else:
            definition = definitions.get(cdid)
    if definition is not None and definition["source"] == "MMP":
        err("INVALID_VALUE", "conversionDefinitionId",
            f"conversion definition {cdid} has source MMP: its events come from a mobile "
            "measurement partner and cannot be imported through this API")
    elif definition is not None and definition["source"] is not None and source is not None \
            and definition["source"] != source:
        err("INVALID_VALUE", "conversionDefinitionId",
            f"conversion definition {cdid} takes events of source {definition['source']}; "
            f"this request's source is {source}")

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

    if ev.get("matchKeys") is not None:
        validate_match_keys(ev["matchKeys"], err)

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
        elif v < 0 and definition is not None and definition["conversionType"] == "OFF_AMAZON_PURCHASES":
            err("INVALID_VALUE", "value", "value must be >= 0 for an OFF_AMAZON_PURCHASES conversion definition")
    if "currencyCode" in ev and ev["currencyCode"] not in CURRENCIES:
        err("INVALID_VALUE", "currencyCode", f"currencyCode must be one of {' '.join(sorted(CURRENCIES))}")
    if "unitsSold" in ev and not is_int(ev["unitsSold"]):
        err("INVALID_TYPE", "unitsSold", "unitsSold must be an integer")
    if "dataProcessingOptions" in ev and ev["dataProcessingOptions"] != "LIMITED_DATA_USE":
        err("INVALID_VALUE", "dataProcessingOptions", "dataProcessingOptions must be LIMITED_DATA_USE")
    return errs


def validate_deletion(entry: dict) -> list[dict]:
    """Return the errors[] entries for one deletion request (empty when it is valid)."""
    errs = []

    def err(error_type, field, message):
        errs.append({"errorType": error_type, "fieldName": field, "message": message})

    for key in entry:
        if key != "matchKeys":
            err("UNKNOWN_FIELD", key, f"unknown field {key!r}")
    if entry.get("matchKeys") is None:
        err("MISSING_FIELD", "matchKeys", "matchKeys is required")
        return errs
    validate_match_keys(entry["matchKeys"], err)
    for i, mk in enumerate(entry["matchKeys"] if isinstance(entry["matchKeys"], list) else []):
        if isinstance(mk, dict) and mk.get("type") in UNHASHED_TYPES and isinstance(mk.get("values"), list) \
                and "__reject__" in mk["values"]:
            err("INVALID_VALUE", f"matchKeys[{i}].values",
                "value '__reject__' is rejected by the fake DSP (test hook)")
    return errs


def is_bad_request_deletion(entry: dict) -> bool:
    """The deletion test hook that makes a whole request invalid."""
    mks = entry.get("matchKeys")
    for mk in mks if isinstance(mks, list) else []:
        if isinstance(mk, dict) and mk.get("type") in UNHASHED_TYPES and isinstance(mk.get("values"), list) \
                and "__bad_request__" in mk["values"]:
            return True
    return False


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
            self.definition_requests: list[dict] = []
            self.deletion_requests: list[dict] = []
            self.deletions: list[dict] = []
            self.events_deleted = 0
            self.list_tokens: dict[str, tuple[str, int]] = {}   # nextToken -> (advertiser, offset)
            self.token_requests = 0
            self.token_failures = 0
            self.faults: list[dict] = []            # FIFO of parsed one-shot faults
            self.random_cfg = None
            self.rng = random.Random()
            self.max_concurrent = self.in_flight
            self._refill_bucket()
            self._zero_rate()

    # -- rate limit -------------------------------------------------------------------------

    def _burst(self) -> float | None:
        rps = self.config["rate_limit_rps"]
        if rps is None:
            return None
        return self.config["rate_limit_burst"] or max(1.0, rps)

    def _refill_bucket(self):
        self.bucket = self._burst() or 0.0
        self.bucket_t = time.monotonic()

    def refill_bucket(self):
        with self.lock:
            self._refill_bucket()

    def _zero_rate(self):
        self.per_second: dict[int, list[int]] = {}   # epoch second -> [admitted, throttled]
        self.admitted = self.throttled = self.responses_429 = 0
        self.first_t = self.last_t = None

    def zero_rate(self):
        with self.lock:
            self._zero_rate()

    def admit(self) -> int | None:
        """Take a token for one arriving request: None when admitted, else the Retry-After
        seconds."""
        with self.lock:
            now, wall = time.monotonic(), time.time()
            rps, burst = self.config["rate_limit_rps"], self._burst()
            wait = None
            if rps is not None:
                self.bucket = min(burst, self.bucket + (now - self.bucket_t) * rps)
                self.bucket_t = now
                if self.bucket >= 1:
                    self.bucket -= 1
                else:
                    wait = max(1, math.ceil((1 - self.bucket) / rps))
            counts = self.per_second.setdefault(int(wall), [0, 0])
            if wait is None:
                self.admitted += 1
                counts[0] += 1
            else:
                self.throttled += 1
                counts[1] += 1
            if self.first_t is None:
                self.first_t = wall
            self.last_t = wall
            return wait

    def _rate_snapshot(self) -> dict:
        rps, burst = self.config["rate_limit_rps"], self._burst()
        per_second = []
        if self.first_t is not None:
            for sec in range(int(self.first_t), int(self.last_t) + 1):
                a, t = self.per_second.get(sec, (0, 0))
                per_second.append({"t": sec, "admitted": a, "throttled": t})
        total = self.admitted + self.throttled
        used = None
        if rps is not None and self.first_t is not None:
            used = self.admitted / (burst + rps * (self.last_t - self.first_t))
        return {"rate_limit_rps": rps, "rate_limit_burst": burst, "admitted": self.admitted,
                "throttled": self.throttled, "responses_429": self.responses_429,
                "first_t": self.first_t, "last_t": self.last_t, "per_second": per_second,
                "limit_used": used, "throttled_share": self.throttled / total if total else None}

    def rate_snapshot(self) -> dict:
        with self.lock:
            return self._rate_snapshot()

    # -- faults -----------------------------------------------------------------------------

    def set_random(self, cfg):
        with self.lock:
            self.random_cfg = cfg
            self.rng = random.Random(cfg["seed"] if cfg else None)

    def take_fault(self, target: str, n_items: int) -> dict | None:
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
            if target in ITEM_TARGETS and r["p_event_transient"] > 0:
                hits = {i: self.rng.choice(("THROTTLED", "INTERNAL_ERROR"))
                        for i in range(1, n_items + 1) if self.rng.random() < r["p_event_transient"]}
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

    # -- bookkeeping ------------------------------------------------------------------------

    def enter(self):
        with self.lock:
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)

    def leave(self, log_name: str, record: dict):
        with self.lock:
            self.in_flight -= 1
            getattr(self, log_name).append(record)
            if record["status"] == 429:
                self.responses_429 += 1

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "accepted": copy.deepcopy(self.accepted),
                "accepted_count": len(self.accepted),
                "duplicates": self.duplicates,
                "requests": copy.deepcopy(self.requests),
                "definition_requests": copy.deepcopy(self.definition_requests),
                "deletion_requests": copy.deepcopy(self.deletion_requests),
                "deletions": copy.deepcopy(self.deletions),
                "deletions_count": len(self.deletions),
                "events_deleted": self.events_deleted,
                "token_requests": self.token_requests,
                "token_failures": self.token_failures,
                "max_concurrent": self.max_concurrent,
                "in_flight": self.in_flight,
                "faults_pending": sum(f["count"] for f in self.faults),
                "issued_tokens": list(self.issued),
                "rate": self._rate_snapshot(),
            }


class RequestError(Exception):
    """A whole-request error answer: status, message and DspErrorV1 errors[]."""

    def __init__(self, status: int, message: str, errors=None, headers=None):
        super().__init__(message)
        self.status, self.message = status, message
        self.errors, self.headers = errors or [], headers


def field_error(field: str, message: str, error_type="INVALID_VALUE") -> list[dict]:
    return [{"errorType": error_type, "fieldName": field, "message": message}]


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

    def _dsp_error(self, status: int, message: str, errors=None, headers=None,
                   media_type=MEDIA_TYPE, request_id=None):
        """A whole-request error in Amazon's DspErrorV1 shape (plus "code")."""
        request_id = request_id or str(uuid.uuid4())
        body = {"code": DSP_ERROR_CODES.get(status, "ERROR"), "message": message,
                "requestId": request_id, "errors": errors or []}
        self._send(status, body, media_type, {"x-amzn-RequestId": request_id, **(headers or {})})

    def _retry_after(self, seconds: int) -> dict:
        with self.state.lock:
            fmt = self.state.config["retry_after_format"]
        return {"Retry-After": retry_after_value(seconds, fmt)}

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
        m = API_PATH.match(path)
        if m:
            if method != "POST":
                return self._not_allowed()
            return self._api(m.group(2), urllib.parse.unquote(m.group(1)), path, body)
        if path == "/auth/o2/token":
            if method != "POST":
                return self._not_allowed()
            return self._token(body)
        if path.startswith("/_control/"):
            return self._control(method, path, body)
        self._dsp_error(404, f"no route for {path}", media_type="application/json")
        self._log(404)

    def _not_allowed(self):
        self._dsp_error(405, "method not allowed", media_type="application/json")
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
                headers = self._retry_after(fault["retry_after"]) if "retry_after" in fault else None
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

    def _api(self, kind: str, advertiser_id: str, path: str, body: bytes):
        """One request to a DSP endpoint: rate limit, fault, delay, checks, then the answer."""
        st = self.state
        target, media_type, log_name = ENDPOINTS[kind]
        # Parse leniently first, only to describe the request in the log/state; the strict
        # checks come after auth, in the order the real API applies them.
        try:
            doc = parse_json(body) if body.strip() or kind != "list" else {}
        except (ValueError, UnicodeDecodeError):
            doc = None
        record = {"path": path, "status": 0, "t": time.time(), "fault": None, "advertiserId": advertiser_id}
        if kind == "eventData":
            events = doc.get("eventData") if isinstance(doc, dict) else None
            source = doc.get("source") if isinstance(doc, dict) and isinstance(doc.get("source"), str) else None
            record.update(source=source, events=len(events) if isinstance(events, list) else 0,
                          succeeded=0, failed=0,
                          dedupe_ids=[e.get("clientDedupeId") if isinstance(e, dict) else None
                                      for e in events] if isinstance(events, list) else [])
            n_items = record["events"]
        elif kind == "delete":
            entries = doc.get("deletionRequests") if isinstance(doc, dict) else None
            record.update(entries=len(entries) if isinstance(entries, list) else 0, succeeded=0, failed=0)
            n_items = record["entries"]
        else:
            record.update(maxResults=doc.get("maxResults") if isinstance(doc, dict) else None,
                          nextToken=isinstance(doc, dict) and doc.get("nextToken") is not None,
                          returned=0)
            n_items = 0
        request_id = str(uuid.uuid4())

        st.enter()
        try:
            wait = st.admit()
            fault = st.take_fault(target, n_items) if wait is None else None
            record["fault"] = "rate_limit" if wait is not None else fault["label"] if fault else None
            with st.lock:
                delay_ms = st.config["latency_ms"]
            delay_ms += (fault or {}).get("latency_ms", 0)
            if delay_ms:
                time.sleep(delay_ms / 1000)
            try:
                if wait is not None:
                    raise RequestError(429, "request rate exceeds the limit; retry later",
                                       headers=self._retry_after(wait))
                self._api_inner(kind, advertiser_id, doc, body, fault or {}, record, media_type, request_id)
            except RequestError as e:
                record["status"] = e.status
                self._dsp_error(e.status, e.message, e.errors, e.headers, media_type, request_id)
        finally:
            st.leave(log_name, record)
        extra = ""
        if kind == "eventData":
            extra = f"events={record['events']}"
        elif kind == "delete":
            extra = f"entries={record['entries']}"
        if record["status"] == 207:
            extra += f" accepted={record['succeeded']} rejected={record['failed']}"
            if record.get("duplicates"):
                extra += f" duplicates={record['duplicates']}"
        elif kind == "list" and record["status"] == 200:
            extra = f"returned={record['returned']}"
        if record["fault"]:
            extra += f" fault={record['fault']}"
        self._log(record["status"] or "dropped", extra.strip())
        record.pop("duplicates", None)

    def _api_inner(self, kind, advertiser_id, doc, body, fault, record, media_type, request_id):
        st = self.state
        if fault.get("drop"):
            # Leave without writing anything; the server then closes the socket.
            self.close_connection = True
            return
        if "status" in fault:
            headers = self._retry_after(fault["retry_after"]) if "retry_after" in fault else None
            raise RequestError(fault["status"], fault.get("message", "injected fault"), headers=headers)

        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != media_type:
            raise RequestError(415, f"Content-Type must be {media_type}",
                               field_error("Content-Type", f"expected {media_type}", "INVALID_HEADER"))
        accepts = [a.split(";")[0].strip().lower() for a in self.headers.get("Accept", "").split(",")]
        if media_type not in accepts:
            raise RequestError(406, f"Accept must be {media_type}",
                               field_error("Accept", f"expected {media_type}", "INVALID_HEADER"))
        with st.lock:
            cfg = copy.deepcopy(st.config)
        if cfg["max_body_bytes"] is not None and len(body) > cfg["max_body_bytes"]:
            raise RequestError(413, f"request body is {len(body)} bytes; at most {cfg['max_body_bytes']} are accepted")

        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        with st.lock:
            expiry = st.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if not auth:
            raise RequestError(401, "missing Authorization header")
        if expiry is None:
            raise RequestError(401, "access token is not valid (unknown, malformed or revoked)")
        if expiry <= time.time():
            raise RequestError(401, "access token has expired")
        if self.headers.get("Amazon-Advertising-API-ClientId") != cfg["client_id"]:
            raise RequestError(403, "Amazon-Advertising-API-ClientId does not match the token's client")
        if advertiser_id not in cfg["advertisers"]:
            raise RequestError(403, "advertiser is not accessible with these credentials")
        if self.headers.get("Amazon-Ads-AccountId") != advertiser_id:
            raise RequestError(403, "Amazon-Ads-AccountId must equal the advertiserId in the path")
        if cfg["profile_id"] is not None and self.headers.get("Amazon-Advertising-API-Scope") != cfg["profile_id"]:
            raise RequestError(403, "Amazon-Advertising-API-Scope does not match the profile")

        if doc is None:
            raise RequestError(400, "request body is not valid JSON")
        if not isinstance(doc, dict):
            raise RequestError(400, "request body must be a JSON object")
        if kind == "eventData":
            self._event_data(advertiser_id, doc, cfg, fault, record, request_id)
        elif kind == "list":
            self._list(advertiser_id, doc, cfg, record, request_id)
        else:
            self._delete(advertiser_id, doc, cfg, fault, record, request_id)

    @staticmethod
    def _items(doc: dict, key: str, allowed: set[str]) -> list:
        unknown = sorted(set(doc) - allowed)
        if unknown:
            raise RequestError(400, f"unknown top-level field(s): {', '.join(unknown)}",
                               [{"errorType": "UNKNOWN_FIELD", "fieldName": k, "message": f"unknown field {k!r}"}
                                for k in unknown])
        items = doc.get(key)
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise RequestError(400, f"{key} must be a list of 1..{MAX_ITEMS} objects",
                               field_error(key, f"{key} must be a list of 1..{MAX_ITEMS} objects", "INVALID_TYPE"))
        for i, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                raise RequestError(400, f"{key} index {i} (1-based): must be a JSON object",
                                   field_error(f"{key}[{i - 1}]", "must be a JSON object", "INVALID_TYPE"))
        return items

    @staticmethod
    def _multi_status(kind: str, key: str, items: list, validate, fault: dict, cfg: dict):
        """Validate every item; returns (failures, valid indices) or raises the 400 of
        invalid_event_status 400."""
        injected = fault.get("event_errors", {})
        omitted = fault.get("omit", set())
        failure, valid = [], []
        invalid = {}
        for i, item in enumerate(items, start=1):
            if i in omitted:
                continue
            if i in injected:
                failure.append({"index": i, "code": injected[i],
                                "message": "transient failure injected by the fake DSP", "errors": []})
                continue
            errs = validate(item)
            if errs:
                invalid[i] = errs
                failure.append({"index": i, "code": "INVALID_ARGUMENT", "message": f"Invalid {kind}",
                                "errors": errs})
            else:
                valid.append(i)
        if invalid and cfg["invalid_event_status"] == 400:
            where = ", ".join(str(i) for i in invalid)
            raise RequestError(400, f"Invalid {kind}(s) at {key} index {where} (1-based)",
                               [dict(e, fieldName=f"{key}[{i - 1}].{e['fieldName']}")
                                for i, errs in invalid.items() for e in errs])
        return failure, valid

    def _event_data(self, advertiser_id, doc, cfg, fault, record, request_id):
        st = self.state
        events = self._items(doc, "eventData", {"source", "eventData"})
        if doc.get("source") not in SOURCES:
            raise RequestError(400, "source must be AMAZON_AD_TAG or SERVER_TO_SERVER",
                               field_error("source", "source must be AMAZON_AD_TAG or SERVER_TO_SERVER"))
        for i, ev in enumerate(events, start=1):
            if ev.get("name") == "__bad_request__":
                message = "name '__bad_request__' makes the whole request invalid (fake DSP test hook)"
                raise RequestError(400, f"eventData index {i} (1-based): {message}",
                                   field_error(f"eventData[{i - 1}].name", message))

        source = doc["source"]
        now_dt = datetime.now(timezone.utc)
        failure, valid = self._multi_status("conversion event", "eventData", events,
                                            lambda ev: validate_event(ev, cfg, now_dt, source), fault, cfg)
        success, duplicates = [], 0
        for i in valid:
            ev = events[i - 1]
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
        failure.sort(key=lambda f: f["index"])
        record.update(status=207, succeeded=len(success), failed=len(failure), duplicates=duplicates)
        self._send(207, {"success": success, "error": failure}, MEDIA_TYPE, {"x-amzn-RequestId": request_id})

    def _list(self, advertiser_id, doc, cfg, record, request_id):
        st = self.state
        if cfg["definitions_list_status"] is not None:
            status = cfg["definitions_list_status"]
            raise RequestError(status, {403: "these credentials may not list conversion definitions",
                                        404: "no conversion definitions resource for this advertiser"}
                               .get(status, "conversion definitions cannot be listed (fake DSP setting)"))
        unknown = sorted(set(doc) - {"maxResults", "nextToken"})
        if unknown:
            raise RequestError(400, f"unknown field(s): {', '.join(unknown)}",
                               [{"errorType": "UNKNOWN_FIELD", "fieldName": k, "message": f"unknown field {k!r}"}
                                for k in unknown])
        page = cfg["definitions_page_size"]
        max_results = doc.get("maxResults", page)
        if not (is_int(max_results) and max_results >= 1):
            raise RequestError(400, "maxResults must be an integer >= 1",
                               field_error("maxResults", "maxResults must be an integer >= 1"))
        offset = 0
        token = doc.get("nextToken")
        if token is not None:
            with st.lock:
                found = st.list_tokens.get(token) if isinstance(token, str) else None
            if found is None or found[0] != advertiser_id:
                raise RequestError(400, "nextToken is invalid or expired",
                                   field_error("nextToken", "nextToken is invalid or expired"))
            offset = found[1]
        definitions = cfg["conversion_definitions"]
        chunk = definitions[offset:offset + min(max_results, page)]
        out = {"conversionDefinitions": [{k: d[k] for k in DEFINITION_KEYS} for d in chunk]}
        if offset + len(chunk) < len(definitions):
            token = secrets.token_urlsafe(24)
            with st.lock:
                st.list_tokens[token] = (advertiser_id, offset + len(chunk))
            out["nextToken"] = token
        record.update(status=200, returned=len(chunk))
        self._send(200, out, DEFINITION_MEDIA_TYPE, {"x-amzn-RequestId": request_id})

    def _delete(self, advertiser_id, doc, cfg, fault, record, request_id):
        st = self.state
        entries = self._items(doc, "deletionRequests", {"deletionRequests"})
        for i, entry in enumerate(entries, start=1):
            if is_bad_request_deletion(entry):
                message = "value '__bad_request__' makes the whole request invalid (fake DSP test hook)"
                raise RequestError(400, f"deletionRequests index {i} (1-based): {message}",
                                   field_error(f"deletionRequests[{i - 1}].matchKeys", message))
        failure, valid = self._multi_status("deletion request", "deletionRequests", entries,
                                            validate_deletion, fault, cfg)
        success = []
        for i in valid:
            pairs = match_key_pairs(entries[i - 1]["matchKeys"])
            with st.lock:
                st.deletions.append({"advertiserId": advertiser_id,
                                     "matchKeys": copy.deepcopy(entries[i - 1]["matchKeys"])})
                kept = [ev for ev in st.accepted
                        if ev["advertiserId"] != advertiser_id or not (match_key_pairs(ev.get("matchKeys")) & pairs)]
                st.events_deleted += len(st.accepted) - len(kept)
                st.accepted = kept
            success.append({"index": i, "message": "Success"})
        failure.sort(key=lambda f: f["index"])
        record.update(status=207, succeeded=len(success), failed=len(failure))
        self._send(207, {"success": success, "error": failure}, DELETION_MEDIA_TYPE,
                   {"x-amzn-RequestId": request_id})

    # -- control API ------------------------------------------------------------------------

    CONTROL_PATHS = {"/_control/health", "/_control/state", "/_control/config", "/_control/reset",
                     "/_control/faults", "/_control/expire_tokens", "/_control/rotate", "/_control/rate"}

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
            if path == "/_control/config" and method == "GET":
                with st.lock:
                    return self._control_reply(200, copy.deepcopy(st.config))
            if path == "/_control/config" and method == "POST":
                with st.lock:
                    st.config = validate_config(payload, st.config)
                    if any(k in payload for k in RATE_KEYS):
                        st._refill_bucket()
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
            if path == "/_control/rate" and method == "GET":
                return self._control_reply(200, st.rate_snapshot())
            if path == "/_control/rate" and method == "DELETE":
                st.zero_rate()
                return self._control_reply(200, {"ok": True})
        except ValueError as e:
            return self._control_reply(400, {"error": str(e)})
        if path in self.CONTROL_PATHS:
            return self._control_reply(405, {"error": f"{method} not allowed on {path}"})
        return self._control_reply(404, {"error": f"no control endpoint {path}"})

    def _control_reply(self, status, obj):
        self._send(status, obj)
        if self.command != "GET" or status != 200:
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

    config = validate_config({})
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
