"""OTLP/HTTP routes (/v1/traces, /v1/logs, /v1/metrics) through the real handler, on moto (CONTRACT §10)."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from edgectl.lambda_shim import api_gateway_event, function_url_event, http_api_event
from tests.conftest import drain_queue, reset_container_state

KEY = "lk_live_otlp_key_1"
TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
PROTOBUF = "application/x-protobuf"


def spans_request(count: int = 2, name_size: int = 10) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "checkout"
    scope = resource_spans.scope_spans.add()
    for number in range(count):
        span = scope.spans.add()
        span.trace_id, span.span_id = TRACE_ID, (number + 1).to_bytes(8, "big")
        span.name = f"span-{number}-" + "x" * name_size
        span.start_time_unix_nano = 1_764_000_000_000_000_000
    return request


def logs_request() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value, record.trace_id = "payment failed", TRACE_ID
    return request


def metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "orders"
    metric.sum.data_points.add().as_int = 3
    return request


def collector_headers(**extra: str) -> dict[str, str]:
    """What the Go Collector's otlphttp exporter sends: protobuf, gzip, and no Accept."""
    return {"Content-Type": PROTOBUF, "Content-Encoding": "gzip", "X-Api-Key": KEY, **extra}


def call(event: dict) -> tuple[int, dict, bytes]:
    """The Lambda entry point every front door uses; (status, headers, body bytes)."""
    from app import app

    response = app(event, None)
    body = response["body"]
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    return response["statusCode"], response["headers"], raw


def post(path: str, body: bytes, headers: dict[str, str], event=api_gateway_event) -> tuple[int, dict, bytes]:
    binary = headers.get("Content-Type", "").startswith("application/x-protobuf") or "Content-Encoding" in headers
    return call(event(path, body, headers, base64_body=binary))


def status_of(raw: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(raw)


# --- accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize("door", [api_gateway_event, http_api_event, function_url_event])
def test_collector_shaped_request_gets_a_protobuf_200_on_every_door(door, put_key, aws):
    put_key(KEY, project_id="42", organization_id="7")
    body = gzip.compress(spans_request().SerializeToString())
    status, headers, raw = post("/v1/traces", body, collector_headers(), event=door)
    assert status == 200, raw
    assert headers["Content-Type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(raw).HasField("partial_success")
    (message,) = drain_queue(aws.queue_url)
    assert message["_attributes"] == {"signal": "otlp", "project_id": "42"}
    assert (message["signal"], message["path"], message["project_id"]) == ("otlp", "/v1/traces", "42")
    spans = message["payload"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert [span["traceId"] for span in spans] == [TRACE_ID.hex()] * 2
    assert [span["spanId"] for span in spans] == ["0000000000000001", "0000000000000002"]
    assert KEY not in json.dumps(message)


def test_protobuf_answer_even_when_the_client_accepts_only_json(put_key, aws):
    put_key(KEY)
    headers = {"Content-Type": PROTOBUF, "X-Api-Key": KEY, "Accept": "application/json"}
    status, out, raw = post("/v1/traces", spans_request().SerializeToString(), headers)
    assert (status, out["Content-Type"]) == (200, PROTOBUF)
    ExportTraceServiceResponse.FromString(raw)


def test_json_request_gets_a_json_answer_and_the_bearer_key_works(put_key, aws):
    put_key(KEY)
    document = {
        "resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "hi"}, "traceId": TRACE_ID.hex()}]}]}]
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    status, out, raw = post("/v1/logs", json.dumps(document).encode(), headers)
    assert (status, out["Content-Type"], json.loads(raw)) == (200, "application/json", {})
    (message,) = drain_queue(aws.queue_url)
    assert (message["signal"], message["payload"]) == ("otlp_logs", document)


@pytest.mark.parametrize(
    ("path", "request_message", "signal", "field"),
    [
        ("/v1/logs", logs_request(), "otlp_logs", "resourceLogs"),
        ("/v1/metrics", metrics_request(), "otlp_metrics", "resourceMetrics"),
    ],
)
def test_logs_and_metrics_are_queued_under_their_signals(path, request_message, signal, field, put_key, aws):
    put_key(KEY)
    status, _, _ = post(path, gzip.compress(request_message.SerializeToString()), collector_headers())
    assert status == 200
    (message,) = drain_queue(aws.queue_url)
    assert (message["signal"], message["path"], list(message["payload"])) == (signal, path, [field])


def test_partial_rejection_is_a_200_with_partial_success_and_the_rest_queued(put_key, aws):
    put_key(KEY)
    request = spans_request(3)
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"short"
    status, _, raw = post("/v1/traces", request.SerializeToString(), {"Content-Type": PROTOBUF, "X-Api-Key": KEY})
    assert status == 200
    partial = ExportTraceServiceResponse.FromString(raw).partial_success
    assert partial.rejected_spans == 1 and "trace id" in partial.error_message
    (message,) = drain_queue(aws.queue_url)
    spans = message["payload"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert [span["name"][:6] for span in spans] == ["span-0", "span-2"]


def test_a_request_over_the_event_limit_is_queued_as_several_events_under_one_200(put_key, aws):
    put_key(KEY)
    request = spans_request(30, name_size=60_000)  # ~1.8 MiB of JSON: two or more events
    body = gzip.compress(request.SerializeToString())
    status, _, raw = post("/v1/traces", body, collector_headers())
    assert status == 200 and not ExportTraceServiceResponse.FromString(raw).HasField("partial_success")
    messages = drain_queue(aws.queue_url)
    assert len(messages) >= 2
    assert len({message["event_id"] for message in messages}) == len(messages)
    names = []
    for message in messages:
        payload = message["payload"]
        if message["payload_encoding"] == "gzip+base64":
            payload = json.loads(gzip.decompress(base64.b64decode(payload)))
        names += [int(span["name"].split("-")[1]) for span in payload["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    assert sorted(names) == list(range(30))


def test_an_empty_request_is_200_and_queues_nothing(put_key, aws):
    put_key(KEY)
    status, _, raw = post("/v1/traces", b"", {"Content-Type": PROTOBUF, "X-Api-Key": KEY})
    assert (status, raw) == (200, b"")
    assert drain_queue(aws.queue_url) == []


def test_preflight_for_browser_exporters(aws):
    event = api_gateway_event(
        "/v1/traces",
        None,
        {"Origin": "https://shop.example", "Access-Control-Request-Headers": "content-type"},
        method="OPTIONS",
    )
    status, headers, _ = call(event)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "https://shop.example"


# --- refused --------------------------------------------------------------------------------------


def test_traces_disabled_is_403_but_logs_still_flow(put_key, aws):
    put_key(KEY, trace_enabled=False)
    status, headers, raw = post("/v1/traces", gzip.compress(spans_request().SerializeToString()), collector_headers())
    assert (status, headers["Content-Type"]) == (403, PROTOBUF)
    assert status_of(raw).code == 7 and status_of(raw).message.startswith("signal_disabled")
    assert post("/v1/logs", logs_request().SerializeToString(), {"Content-Type": PROTOBUF, "X-Api-Key": KEY})[0] == 200
    assert [message["signal"] for message in drain_queue(aws.queue_url)] == ["otlp_logs"]


def test_traces_disabled_is_403_even_for_an_empty_request(put_key, aws):
    put_key(KEY, trace_enabled=False)
    assert post("/v1/traces", b"", {"Content-Type": PROTOBUF, "X-Api-Key": KEY})[0] == 403


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "lk_unknown"}])
def test_missing_or_unknown_key_is_401_unauthenticated(headers, put_key, aws):
    put_key(KEY)
    status, _, raw = post("/v1/traces", spans_request().SerializeToString(), {"Content-Type": PROTOBUF, **headers})
    assert (status, status_of(raw).code) == (401, 16)
    assert post("/v1/traces", b"", {"Content-Type": PROTOBUF, **headers})[0] == 401
    assert drain_queue(aws.queue_url) == []


def test_billing_not_ok_is_402(put_key, aws):
    put_key(KEY, billing_ok=False)
    status, _, raw = post(
        "/v1/metrics", metrics_request().SerializeToString(), {"Content-Type": PROTOBUF, "X-Api-Key": KEY}
    )
    assert (status, status_of(raw).message.split(":")[0]) == (402, "billing_required")


def test_truncated_protobuf_is_400_with_a_status(put_key, aws):
    put_key(KEY)
    raw_request = spans_request().SerializeToString()
    status, _, raw = post("/v1/traces", raw_request[:-5], {"Content-Type": PROTOBUF, "X-Api-Key": KEY})
    assert (status, status_of(raw).code) == (400, 3)
    assert "ExportTraceServiceRequest" in status_of(raw).message


def test_json_items_that_are_not_otlp_json_are_counted_in_a_json_partial_success(put_key, aws):
    """Issue #25: each was stored, silently dropped or refused the whole request before."""
    put_key(KEY)

    def span(name: str, **fields) -> dict:
        return {"traceId": TRACE_ID.hex(), "spanId": "0000000000000001", "name": name, **fields}

    b64 = base64.b64encode(TRACE_ID).decode()
    spans = [
        span("base64 id", traceId=b64),
        {"trace_id": b64, "span_id": "AAAAAAAAAAE=", "name": "protobuf names"},
        span("null id", traceId=None),
        span("bad bytes", attributes=[{"key": "b", "value": {"bytesValue": "!!notb64"}}]),
        span("bogus kind", kind="BOGUS"),
        span("kept", kind=2),
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    status, headers, raw = post("/v1/traces", body, {"Content-Type": "application/json", "X-Api-Key": KEY})
    assert (status, headers["Content-Type"]) == (200, "application/json")
    partial = json.loads(raw)["partialSuccess"]
    assert partial["rejectedSpans"] == "5"
    for said in ("traceId: not a hex string", "trace_id: a protobuf field name", "bytesValue: not base64", "kind:"):
        assert said in partial["errorMessage"]
    (message,) = drain_queue(aws.queue_url)
    assert [s["name"] for s in message["payload"]["resourceSpans"][0]["scopeSpans"][0]["spans"]] == ["kept"]


def test_json_with_protobuf_field_names_for_its_list_is_400_with_a_json_status(put_key, aws):
    put_key(KEY)
    span = {"traceId": base64.b64encode(TRACE_ID).decode(), "spanId": "0000000000000001", "name": "n"}
    body = json.dumps({"resource_spans": [{"scope_spans": [{"spans": [span]}]}]}).encode()
    status, headers, raw = post("/v1/traces", body, {"Content-Type": "application/json", "X-Api-Key": KEY})
    assert (status, headers["Content-Type"]) == (400, "application/json")
    answer = json.loads(raw)
    assert answer["code"] == 3 and "resource_spans: a protobuf field name" in answer["message"]
    assert drain_queue(aws.queue_url) == []


def test_over_size_is_413(put_key, aws):
    put_key(KEY)
    bomb = gzip.compress(b"\x0a" * (6 * 1024 * 1024))
    status, _, raw = post("/v1/traces", bomb, collector_headers())
    assert (status, status_of(raw).message.split(":")[0]) == (413, "payload_too_large")


def test_unsupported_content_type_is_415_in_json(put_key, aws):
    put_key(KEY)
    status, headers, raw = call(api_gateway_event("/v1/traces", b"x", {"Content-Type": "text/csv", "X-Api-Key": KEY}))
    assert (status, headers["Content-Type"], json.loads(raw)["code"]) == (415, "application/json", 3)


def test_rate_limited_is_429_with_retry_after(put_key, aws):
    put_key(KEY, rate_limit_per_minute=1)
    body = spans_request().SerializeToString()
    assert post("/v1/traces", body, {"Content-Type": PROTOBUF, "X-Api-Key": KEY})[0] == 200
    status, headers, raw = post("/v1/traces", body, {"Content-Type": PROTOBUF, "X-Api-Key": KEY})
    assert (status, status_of(raw).code) == (429, 8)
    assert 1 <= int(headers["Retry-After"]) <= 60


def test_queue_unavailable_is_503_with_retry_after(put_key, aws, monkeypatch):
    put_key(KEY)
    monkeypatch.setenv("LOOKOUT_EDGE_QUEUE_URL", "")
    reset_container_state()
    status, headers, raw = post(
        "/v1/traces", spans_request().SerializeToString(), {"Content-Type": PROTOBUF, "X-Api-Key": KEY}
    )
    assert (status, status_of(raw).code) == (503, 14)
    assert int(headers["Retry-After"]) > 0
