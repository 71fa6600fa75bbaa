"""The request every edge benchmark sends. Imports nothing heavy: the cold-start child uses it."""

from __future__ import annotations

import json
from typing import Any

from edgectl.lambda_shim import api_gateway_event

BENCH_KEY = "lk_bench_0123456789abcdef0123456789abcdef"
BENCH_PROJECT = "42"
# A typical PHP error report: ~1 KB once wrapped in the queue envelope.
EVENT_BODY = {
    "message": "Undefined index: user_id",
    "exception_class": "ErrorException",
    "level": "error",
    "stack_trace": "#0 /var/www/app/Http/Controllers/OrderController.php(42): handle()\n" * 8,
    "context": {"url": "/orders/17", "method": "POST", "php": "8.3.4", "release": "2026.11.3"},
}
HEADERS = {"Content-Type": "application/json", "X-Api-Key": BENCH_KEY}


def ingest_event() -> dict:
    return api_gateway_event("/api/ingest", json.dumps(EVENT_BODY).encode(), HEADERS)


def ndjson_event(lines: int) -> dict:
    """`lines` NDJSON events of the typical report in one request (the per-request cap is 1,000)."""
    body = b"\n".join(json.dumps({**EVENT_BODY, "n": n}).encode() for n in range(lines))
    headers = {**HEADERS, "Content-Type": "application/x-ndjson"}
    return api_gateway_event("/api/ingest/event", body, headers, resource="/api/ingest/{signal}")


def invoke_edge(app: Any, event: dict) -> None:
    """One request through the Chalice app; anything but 202 is a broken benchmark."""
    response = app(event, None)
    if response["statusCode"] != 202:
        raise RuntimeError(f"edge answered {response['statusCode']}: {response['body']}")


# The cold-start child reads its OTLP body from this file: building it would import protobuf,
# the very cost the first OTLP request is measured for.
BODY_FILE_ENV = "BENCH_OTLP_BODY_FILE"


def otlp_event(body: bytes) -> dict:
    """`POST /v1/traces` as the OpenTelemetry Collector sends it: protobuf, no Accept header."""
    headers = {"Content-Type": "application/x-protobuf", "X-Api-Key": BENCH_KEY}
    return api_gateway_event("/v1/traces", body, headers, base64_body=True)


def invoke_otlp(app: Any, event: dict) -> None:
    """One OTLP request through the Chalice app; anything but 200 is a broken benchmark."""
    response = app(event, None)
    if response["statusCode"] != 200:
        raise RuntimeError(f"edge answered {response['statusCode']}: {response['body']}")
