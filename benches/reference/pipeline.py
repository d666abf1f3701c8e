#!/usr/bin/env python3
"""REFERENCE ONLY, NOT PRODUCT CODE. A straightforward Python implementation of the pipeline's
CPU work, to compare the Rust function with (BENCHMARKS.md): read simple-shape events
(docs/inputs.md) as NDJSON, streamed line by line → validate and map them to the DSP shape →
normalize and SHA-256 the user identifier → batch 100 per request and source → serialize each
request body as one line of JSON.

    python3 benches/reference/pipeline.py EVENTS.ndjson > BODIES.ndjson

It does what the Rust pipeline does for this input (json + hashlib + datetime + decimal, the
standard library only) and no more: no gzip, no CSV, no DSP-shape events, no rejects report;
invalid events are only counted. Prints `events valid rejected requests seconds` to stderr.
"""

import datetime
import decimal
import hashlib
import json
import re
import sys
import time

DEFINITIONS = {"purchase": "def-purchase", "add_to_cart": "def-cart", "sign_up": "def-signup"}
CURRENCIES = set("AED AUD BRL CAD CNY DKK EUR GBP INR JPY MXN NOK NZD SAR SEK SGD TRY USD".split())
COUNTRIES = set("""AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN
BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO
DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB
LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA
SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT
TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split())
FIELDS = {"eventTime", "conversionType", "conversionValue", "currencyCode", "countryCode",
          "userIdentifier", "userIdentifierType", "clientDedupeId", "conversionDefinitionId",
          "unitsSold", "source"}
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
HASHED = re.compile(r"^[0-9a-f]{64}$")
CENT = decimal.Decimal("0.01")
MAX_PER_REQUEST = 100


class Invalid(Exception):
    pass


def match_key(identifier):
    v = identifier.strip()
    if "@" in v:
        kind, norm = "EMAIL", v.lower()
    elif UUID.match(v):
        return {"type": "MAID", "values": [v]}
    else:
        digits = "".join(c for c in v if c.isdigit())
        if not 7 <= len(digits) <= 15:
            raise Invalid("AMBIGUOUS_IDENTIFIER")
        kind, norm = "PHONE", digits
    value = norm if HASHED.match(norm) else hashlib.sha256(norm.encode()).hexdigest()
    return {"type": kind, "values": [value]}


def convert(raw, oldest, latest, source_key, record):
    if not isinstance(raw, dict) or set(raw) - FIELDS:
        raise Invalid("UNKNOWN_FIELD")
    text = raw.get("eventTime")
    if not isinstance(text, str):
        raise Invalid("MISSING_FIELD")
    try:
        t = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("INVALID_TIMESTAMP")
    if t.tzinfo is None:
        raise Invalid("INVALID_TIMESTAMP")
    if t < oldest or t > latest:
        raise Invalid("TIMESTAMP_OUT_OF_WINDOW")
    name = (raw.get("conversionType") or "").strip()
    if not name:
        raise Invalid("MISSING_FIELD")
    definition = raw.get("conversionDefinitionId") or DEFINITIONS.get(name)
    if definition is None:
        raise Invalid("NO_CONVERSION_DEFINITION")
    country = (raw.get("countryCode") or "").strip().upper()
    if country not in COUNTRIES:
        raise Invalid("INVALID_COUNTRY_CODE")
    event = {
        "conversionDefinitionId": definition,
        "name": name,
        "timestamp": text.strip(),
        "countryCode": country,
        "matchKeys": [match_key(raw.get("userIdentifier") or "")],
    }
    dedupe = raw.get("clientDedupeId")
    if dedupe is None:
        h = hashlib.sha256(f"{source_key}#{record}".encode()).hexdigest()
        dedupe = h[:32]
    event["clientDedupeId"] = dedupe
    value = raw.get("conversionValue")
    if value is not None:
        d = decimal.Decimal(str(value)).quantize(CENT, rounding=decimal.ROUND_HALF_UP)
        if d < 0:
            raise Invalid("INVALID_VALUE")
        event["value"] = float(d)
    currency = raw.get("currencyCode")
    if currency is not None:
        currency = currency.strip().upper()
        if currency not in CURRENCIES:
            raise Invalid("INVALID_CURRENCY_CODE")
        event["currencyCode"] = currency
    return raw.get("source") or "SERVER_TO_SERVER", event


def main():
    path = sys.argv[1]
    started = time.perf_counter()
    now = datetime.datetime.now(datetime.timezone.utc)
    oldest, latest = now - datetime.timedelta(days=7), now + datetime.timedelta(minutes=5)
    out = sys.stdout
    open_batches = {}
    counts = {"events": 0, "valid": 0, "rejected": 0, "requests": 0}

    def send(source, events):
        out.write(json.dumps({"source": source, "eventData": events}, separators=(",", ":")))
        out.write("\n")
        counts["requests"] += 1

    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            counts["events"] += 1
            try:
                source, event = convert(json.loads(line), oldest, latest, path, counts["events"])
            except (Invalid, ValueError, AttributeError):
                counts["rejected"] += 1
                continue
            counts["valid"] += 1
            batch = open_batches.setdefault(source, [])
            batch.append(event)
            if len(batch) == MAX_PER_REQUEST:
                send(source, batch)
                open_batches[source] = []
    for source, batch in open_batches.items():
        if batch:
            send(source, batch)
    out.flush()
    elapsed = time.perf_counter() - started
    print(f"{counts['events']} {counts['valid']} {counts['rejected']} {counts['requests']} "
          f"{elapsed:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
