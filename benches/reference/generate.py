#!/usr/bin/env python3
"""Writes benchmark input: N simple-shape conversion events (docs/inputs.md), deterministic apart
from the timestamps, which are recent so that the 7-day window accepts them.

    python3 benches/reference/generate.py N FORMAT [--no-dedupe] > FILE

FORMAT is ndjson, csv or json (an array). Every line of NDJSON is about 230 bytes. The same
rows are generated for every format, so the Rust pipeline and the Python reference read the
same events. Not product code.
"""

import datetime
import json
import sys

TYPES = ["purchase", "purchase", "purchase", "add_to_cart", "sign_up"]
CURRENCIES = ["USD", "EUR", "GBP"]
COUNTRIES = ["US", "GB", "DE", "FR"]
COLUMNS = ["eventTime", "conversionType", "conversionValue", "currencyCode", "countryCode",
           "userIdentifier", "clientDedupeId"]


def rows(n, dedupe):
    base = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    base -= datetime.timedelta(hours=1)
    for i in range(n):
        t = base - datetime.timedelta(seconds=i % 86400)
        row = {
            "eventTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conversionType": TYPES[i % len(TYPES)],
            "conversionValue": round((i % 10000) / 100 + 0.005 * (i % 3), 3),
            "currencyCode": CURRENCIES[i % len(CURRENCIES)],
            "countryCode": COUNTRIES[i % len(COUNTRIES)],
            "userIdentifier": f"Customer.{i:08d}@Example.com",
        }
        if dedupe:
            row["clientDedupeId"] = f"order-{i:010d}"
        yield row


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("ndjson", "csv", "json"):
        sys.exit(__doc__)
    n, fmt = int(sys.argv[1]), sys.argv[2]
    dedupe = "--no-dedupe" not in sys.argv[3:]
    out = sys.stdout
    if fmt == "ndjson":
        for row in rows(n, dedupe):
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    elif fmt == "json":
        out.write("[")
        for i, row in enumerate(rows(n, dedupe)):
            out.write(("," if i else "") + json.dumps(row, separators=(",", ":")) + "\n")
        out.write("]\n")
    else:
        cols = COLUMNS if dedupe else COLUMNS[:-1]
        out.write(",".join(cols) + "\n")
        for row in rows(n, dedupe):
            out.write(",".join(str(row[c]) for c in cols) + "\n")


if __name__ == "__main__":
    main()
