"""6. OTLP/HTTP: the cold start of a container whose first request is OTLP, and warm CPU per span.

Cold: a fresh process importing `app` up to the 200 of one protobuf `/v1/traces` request,
beside the same for one SDK request (`bench.cold_child edge`): the difference is what the
lazy protobuf import costs the first OTLP request. Warm: process CPU time of one request
of 1, 100 and 1,000 spans through the real handler (decode, key, enqueue), and of the
decoder alone, per span.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from bench.cold import child_seconds
from bench.events import BODY_FILE_ENV, invoke_otlp, otlp_event
from bench.stack import Stack, env_int, median, quiet_stdout, reset_chalicelib, say

SPAN_COUNTS = (1, 100, 1000)


def traces_body(spans: int) -> bytes:
    """An `ExportTraceServiceRequest` shaped like an instrumented web service's: one resource,
    one scope, server spans with a dozen attributes each."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (("service.name", "checkout"), ("service.version", "2026.11.3"), ("host.name", "web-7")):
        attribute = resource_spans.resource.attributes.add()
        attribute.key, attribute.value.string_value = key, value
    scope = resource_spans.scope_spans.add()
    scope.scope.name, scope.scope.version = "opentelemetry.instrumentation.flask", "0.50b0"
    for number in range(spans):
        span = scope.spans.add()
        span.trace_id = (0x5B8EFFF798038103D269B633813FC60C + number // 10).to_bytes(16, "big")
        span.span_id = (number + 1).to_bytes(8, "big")
        span.parent_span_id = (number or 1).to_bytes(8, "big")
        span.name = f"GET /orders/{number}"
        span.kind = 2
        span.start_time_unix_nano = 1_764_000_000_000_000_000 + number * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + 12_345_678
        for key, value in (
            ("http.request.method", "GET"),
            ("url.path", f"/orders/{number}"),
            ("url.scheme", "https"),
            ("server.address", "shop.example.com"),
            ("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
            ("network.protocol.version", "1.1"),
            ("http.route", "/orders/<id>"),
            ("client.address", "203.0.113.9"),
        ):
            attribute = span.attributes.add()
            attribute.key, attribute.value.string_value = key, value
        for key, number_value in (("http.response.status_code", 200), ("server.port", 443)):
            attribute = span.attributes.add()
            attribute.key, attribute.value.int_value = key, number_value
    return request.SerializeToString()


def cold(stack: Stack) -> dict[str, Any]:
    repeats = env_int("BENCH_COLD_N", 9)
    with tempfile.NamedTemporaryFile(suffix=".pb", delete=False) as body_file:
        body_file.write(traces_body(1))
    env = {**stack.env, "PYTHONDONTWRITEBYTECODE": "0", BODY_FILE_ENV: body_file.name}
    say(f"otlp cold start: {repeats} fresh processes each (first request OTLP / first request SDK JSON)")
    try:
        child_seconds("otlp", env)  # compile .pyc files once, as a deployment package ships them
        otlp_s, sdk_s = [], []
        for _ in range(repeats):
            otlp_s.append(child_seconds("otlp", env))
            sdk_s.append(child_seconds("edge", env))
    finally:
        os.unlink(body_file.name)
    otlp_ms, sdk_ms = median(otlp_s) * 1000, median(sdk_s) * 1000
    return {"repeats": repeats, "otlp_ms_median": round(otlp_ms, 1), "sdk_ms_median": round(sdk_ms, 1)}


def warm() -> dict[str, Any]:
    from chalicelib.edge.doors import otlp

    reset_chalicelib()
    from app import app

    rows = {}
    for spans in SPAN_COUNTS:
        repeats = max(5, env_int("BENCH_OTLP_SPANS_N", 20_000) // spans)
        body = traces_body(spans)
        event = otlp_event(body)
        with quiet_stdout():
            invoke_otlp(app, event)  # warm: key cache, clients, protobuf
        request_cpu, decode_cpu = [], []
        with quiet_stdout():
            for _ in range(repeats):
                started = time.process_time()
                invoke_otlp(app, event)
                request_cpu.append(time.process_time() - started)
                started = time.process_time()
                otlp.decode(otlp.TRACES, body, otlp.PROTOBUF, None)
                decode_cpu.append(time.process_time() - started)
        rows[str(spans)] = {
            "repeats": repeats,
            "body_bytes": len(body),
            "request_cpu_us_per_span": round(median(request_cpu) / spans * 1e6, 1),
            "decode_cpu_us_per_span": round(median(decode_cpu) / spans * 1e6, 1),
        }
        say(f"otlp warm: {spans} spans/request, {repeats} requests")
    return rows


def run(stack: Stack) -> dict[str, Any]:
    return {"cold": cold(stack), "warm": warm()}
