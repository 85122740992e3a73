"""Scrapes the proxy's /metrics the way Prometheus does and parses it with prometheus_client's own
parsers (the Prometheus text format and OpenMetrics), checking that every documented series is present.

Environment: PROXY_URL (the proxy's base URL), PROXY_KEY (optional bearer key), EXPECT (comma-separated
family names, without the _total suffix of counters). Prints one JSON object: family -> sample count,
plus a few sample values the Rust test checks.
"""

import json
import os
import sys
import urllib.request

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def scrape(accept):
    request = urllib.request.Request(os.environ["PROXY_URL"] + "/metrics")
    request.add_header("Accept", accept)
    key = os.environ.get("PROXY_KEY")
    if key:
        request.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("Content-Type"), response.read().decode("utf-8")


def families(parser, text):
    found = {}
    samples = {}
    for family in parser(text):
        found[family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return found, samples


def main():
    expected = [name for name in os.environ["EXPECT"].split(",") if name]
    result = {}
    for label, accept, parser in [
        ("openmetrics", PROMETHEUS_ACCEPT, parse_openmetrics),
        ("text", "text/plain;version=0.0.4", parse_text),
    ]:
        content_type, text = scrape(accept)
        found, samples = families(parser, text)
        missing = [name for name in expected if name not in found]
        if missing:
            print(f"{label}: missing families {missing}; found {sorted(found)}", file=sys.stderr)
            print(text, file=sys.stderr)
            return 1
        result[label] = {"content_type": content_type, "types": found, "samples": samples}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
