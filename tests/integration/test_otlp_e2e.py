"""The real OpenTelemetry Python SDK exporters, configured as docs/otlp.md says, through the local stack.

Spans, log records and metrics go out through `opentelemetry-exporter-otlp-proto-http`
(protobuf, and gzip as a Collector sends it), over real HTTP to the local edge, through
SQS and the forwarder, and must arrive at the reference receiver as `otlp`, `otlp_logs`
and `otlp_metrics` events carrying the SDK's own trace ids in hex.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

PROJECT_ID = "101"


@pytest.fixture
def otel_env(e2e: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporters configured only through the standard variables docs/otlp.md gives."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", e2e.edge_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={e2e.keys['main']}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")


def stored_events(e2e: Any, signal: str, marker: str, timeout: float = 30.0) -> list[dict]:
    """The receiver's events of `signal` whose payload mentions `marker`, once there are some."""
    deadline = time.monotonic() + timeout
    while True:
        found = [event for event in e2e.store.events(PROJECT_ID, signal, 200) if marker in json.dumps(event["payload"])]
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {signal} event with {marker!r} within {timeout}s\n{e2e.log.getvalue()[-3000:]}")
        time.sleep(0.2)


def telemetry(marker: str) -> tuple[list, list, Any, str]:
    """One request's worth of each signal made by the SDK: (spans, log records, metrics, trace id hex)."""
    resource = Resource.create({"service.name": f"shop-{marker}"})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    app_log = logging.getLogger(f"shop.{marker}")
    app_log.propagate = False
    app_log.addHandler(LoggingHandler(logger_provider=logger_provider))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    orders = meter_provider.get_meter("shop").create_counter("orders")
    with tracer_provider.get_tracer("shop").start_as_current_span("GET /orders") as parent:
        with tracer_provider.get_tracer("shop").start_as_current_span("SELECT orders"):
            app_log.error("payment failed for %s", marker)
            orders.add(3, {"route": "/orders"})
        trace_id = format(parent.get_span_context().trace_id, "032x")
    return list(spans.get_finished_spans()), list(logs.get_finished_logs()), reader.get_metrics_data(), trace_id


def test_sdk_spans_logs_and_metrics_arrive_with_the_sdks_hex_trace_ids(e2e, otel_env):
    marker = uuid.uuid4().hex[:12]
    spans, logs, metrics, trace_id = telemetry(marker)

    assert OTLPSpanExporter().export(spans) == SpanExportResult.SUCCESS
    assert OTLPLogExporter().export(logs) == LogRecordExportResult.SUCCESS
    assert OTLPMetricExporter().export(metrics) == MetricExportResult.SUCCESS

    (trace_event,) = stored_events(e2e, "otlp", marker)
    assert trace_event["path"] == "/v1/traces"
    stored_spans = [
        span
        for resource in trace_event["payload"]["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert {span["traceId"] for span in stored_spans} == {trace_id}
    by_name = {span["name"]: span for span in stored_spans}
    assert by_name["SELECT orders"]["parentSpanId"] == by_name["GET /orders"]["spanId"]
    assert {span["spanId"] for span in stored_spans} == {format(s.context.span_id, "016x") for s in spans}

    (log_event,) = stored_events(e2e, "otlp_logs", marker)
    record = log_event["payload"]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert record["body"] == {"stringValue": f"payment failed for {marker}"}
    assert record["traceId"] == trace_id
    assert record["spanId"] == by_name["SELECT orders"]["spanId"]
    assert record["severityNumber"] == 17

    (metric_event,) = stored_events(e2e, "otlp_metrics", marker)
    (metric,) = metric_event["payload"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    assert metric["name"] == "orders"
    assert metric["sum"]["dataPoints"][0]["asInt"] == "3"

    for event in (trace_event, log_event, metric_event):
        assert e2e.keys["main"] not in str(event)


def test_an_unknown_key_is_a_failure_the_exporter_reports(e2e, otel_env, monkeypatch):
    spans, _, _, _ = telemetry(uuid.uuid4().hex[:12])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=lk_not_a_real_key")
    assert OTLPSpanExporter().export(spans) == SpanExportResult.FAILURE


def test_a_collector_shaped_request_over_http_gets_a_protobuf_200(e2e):
    """As the Go Collector's otlphttp exporter posts: gzip protobuf, key header, no Accept at all."""
    marker = uuid.uuid4().hex[:12]
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = uuid.uuid4().bytes, b"\x01" * 8, f"collector {marker}"
    edge = urlsplit(e2e.edge_url)
    connection = http.client.HTTPConnection(edge.hostname, edge.port, timeout=10)
    connection.putrequest("POST", "/v1/traces", skip_accept_encoding=True)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", "X-Api-Key": e2e.keys["main"]}
    body = gzip.compress(request.SerializeToString())
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    answer = connection.getresponse()
    raw = answer.read()
    connection.close()
    assert (answer.status, answer.getheader("Content-Type")) == (200, "application/x-protobuf"), raw
    assert not ExportTraceServiceResponse.FromString(raw).HasField("partial_success")
    (event,) = stored_events(e2e, "otlp", marker)
    stored = event["payload"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert stored["traceId"] == span.trace_id.hex()
