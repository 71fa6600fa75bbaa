"""OTLP/HTTP bodies → OTLP JSON events (chalicelib/edge/decoders/otlp.py), against known bytes."""

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict, ParseDict
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from chalicelib.contract.errors import EdgeError
from chalicelib.edge.bodies import MAX_DECODED_BYTES, MAX_RAW_BYTES
from chalicelib.edge.doors import IngestRequest, otlp

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")
PROTOBUF = "application/x-protobuf"
# Field names of trace export requests, so that generated JSON reaches deep into the schema.
JSON_KEYS = [
    "resourceSpans",
    "resource",
    "attributes",
    "key",
    "value",
    "stringValue",
    "intValue",
    "arrayValue",
    "values",
    "scopeSpans",
    "scope",
    "name",
    "spans",
    "traceId",
    "spanId",
    "parentSpanId",
    "kind",
    "startTimeUnixNano",
    "links",
    "status",
    "code",
    "droppedAttributesCount",
    "unknownField",
]


def traces_request(spans: int = 1, **overrides) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "checkout"
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "checkout.tracer"
    for number in range(spans):
        span = scope.spans.add()
        span.trace_id = overrides.get("trace_id", TRACE_ID)
        span.span_id = overrides.get("span_id", (number + 1).to_bytes(8, "big"))
        span.parent_span_id = PARENT_ID
        span.name = f"GET /items/{number}"
        span.kind = Span.SPAN_KIND_SERVER
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + number
        span.end_time_unix_nano = span.start_time_unix_nano + 1500
        span.status.code = 2
        tag = span.attributes.add()
        tag.key, tag.value.int_value = "http.status_code", 500
        blob = span.attributes.add()
        blob.key, blob.value.bytes_value = "payload", b"\x00\xffraw"
        link = span.links.add()
        link.trace_id, link.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    return request


def logs_request() -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    record = scope.log_records.add()
    record.time_unix_nano = 1_700_000_000_000_000_000
    record.severity_number = 17
    record.severity_text = "ERROR"
    record.body.string_value = "payment failed"
    record.trace_id, record.span_id = TRACE_ID, SPAN_ID
    scope.log_records.add().body.string_value = "no trace context at all"
    return request


def metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    counter = scope.metrics.add()
    counter.name = "orders"
    counter.sum.aggregation_temporality = 2
    counter.sum.is_monotonic = True
    point = counter.sum.data_points.add()
    point.as_int = 9_007_199_254_740_993  # beyond a double: must stay exact, as a string
    exemplar = point.exemplars.add()
    exemplar.trace_id, exemplar.span_id, exemplar.as_double = TRACE_ID, SPAN_ID, 1.5
    histogram = scope.metrics.add()
    histogram.name = "latency"
    bucket = histogram.histogram.data_points.add()
    bucket.count, bucket.sum, bucket.min = 2, 0.0, float("nan")
    bucket.bucket_counts.extend([1, 1])
    bucket.explicit_bounds.extend([0.5])
    gauge = scope.metrics.add()
    gauge.name = "temperature"
    gauge.gauge.data_points.add().as_double = float("inf")
    return request


def oracle(message) -> dict:
    """protobuf's own JSON mapping with the OTLP deviation applied by hand: hex ids."""
    document = MessageToDict(message, use_integers_for_enums=True)

    def walk(value):
        if isinstance(value, dict):
            for key, inner in value.items():
                if key in ("traceId", "spanId", "parentSpanId"):
                    value[key] = base64.b64decode(inner).hex()
                else:
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(document)
    return document


def refused(kind, raw: bytes, content_type: str = PROTOBUF, encoding: str | None = None) -> EdgeError:
    with pytest.raises(EdgeError) as info:
        otlp.decode(kind, raw, content_type, encoding)
    return info.value


def payloads(decoded: otlp.Decoded) -> list[dict]:
    return [event.payload for event in decoded.events]


def kept(decoded: otlp.Decoded) -> int:
    """Items in the events, counted as `partial_success` counts them (metrics by data points)."""
    total = 0
    shapes = (("resourceSpans", "scopeSpans", "spans"), ("resourceLogs", "scopeLogs", "logRecords"))
    for event in payloads(decoded):
        for resources, scopes, items in (*shapes, ("resourceMetrics", "scopeMetrics", "metrics")):
            for item in (i for r in event.get(resources, []) for s in r.get(scopes, []) for i in s.get(items, [])):
                if items != "metrics":
                    total += 1
                    continue
                total += sum(len(data.get("dataPoints", [])) for data in item.values() if isinstance(data, dict))
    return total


def spans_of(event: dict) -> list[dict]:
    return [span for rs in event["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


# --- protobuf in, OTLP JSON out ------------------------------------------------------------------


def test_protobuf_spans_become_otlp_json_with_hex_ids_string_int64_and_integer_enums():
    decoded = otlp.decode(otlp.TRACES, traces_request().SerializeToString(), PROTOBUF, None)
    assert (kept(decoded), decoded.rejected, decoded.reason) == (1, 0, None)
    [event] = payloads(decoded)
    span = spans_of(event)[0]
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "0000000000000001"
    assert span["parentSpanId"] == "eee19b7ec3c1b173"
    assert span["links"][0] == {"traceId": bytes(range(1, 17)).hex(), "spanId": bytes(range(1, 9)).hex()}
    assert span["kind"] == 2 and span["status"] == {"code": 2}
    assert span["startTimeUnixNano"] == "1700000000000000000"
    assert span["attributes"][0] == {"key": "http.status_code", "value": {"intValue": "500"}}
    # Only the ids are hex: other bytes keep the standard base64 of the JSON mapping.
    assert span["attributes"][1]["value"] == {"bytesValue": base64.b64encode(b"\x00\xffraw").decode()}
    assert event["resourceSpans"][0]["resource"]["attributes"][0]["value"] == {"stringValue": "checkout"}
    assert decoded.events[0].size == len(json.dumps(event, separators=(",", ":")))


@pytest.mark.parametrize(
    ("kind", "message"),
    [(otlp.TRACES, traces_request(3)), (otlp.LOGS, logs_request()), (otlp.METRICS, metrics_request())],
)
def test_each_signal_matches_protobufs_json_mapping_with_hex_ids(kind, message):
    decoded = otlp.decode(kind, message.SerializeToString(), PROTOBUF, None)
    assert payloads(decoded) == [oracle(message)]


def test_metrics_keep_exact_64_bit_values_and_non_finite_doubles_as_strings():
    [event] = payloads(otlp.decode(otlp.METRICS, metrics_request().SerializeToString(), PROTOBUF, None))
    metrics = event["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    point = metrics[0]["sum"]["dataPoints"][0]
    assert point["asInt"] == "9007199254740993"
    assert point["exemplars"][0]["traceId"] == TRACE_ID.hex()
    assert metrics[1]["histogram"]["dataPoints"][0]["sum"] == 0.0  # optional field set to zero stays
    assert metrics[1]["histogram"]["dataPoints"][0]["min"] == "NaN"
    assert metrics[2]["gauge"]["dataPoints"][0]["asDouble"] == "Infinity"
    json.dumps(event, allow_nan=False)  # the queue's encoder refuses bare NaN


def test_gzip_protobuf_is_decoded():
    raw = gzip.compress(traces_request().SerializeToString())
    decoded = otlp.decode(otlp.TRACES, raw, "application/x-protobuf", "gzip")
    assert spans_of(payloads(decoded)[0])[0]["traceId"] == TRACE_ID.hex()


def test_an_empty_request_is_a_success_with_no_event():
    decoded = otlp.decode(otlp.TRACES, b"", PROTOBUF, None)
    assert (decoded.events, kept(decoded), decoded.rejected) == ([], 0, 0)
    assert otlp.decode(otlp.LOGS, b"{}", "application/json", None).events == []


def test_unknown_protobuf_fields_are_ignored():
    unknown = b"\xa8\x1f\x01"  # field 500, varint 1: from a newer OTLP
    decoded = otlp.decode(otlp.TRACES, traces_request().SerializeToString() + unknown, PROTOBUF, None)
    assert payloads(decoded) == [oracle(traces_request())]


# --- JSON in -----------------------------------------------------------------------------------


def test_json_request_with_hex_ids_gives_the_same_event_as_protobuf():
    as_json = json.dumps(oracle(traces_request(2))).encode()
    decoded = otlp.decode(otlp.TRACES, as_json, "application/json; charset=utf-8", None)
    assert payloads(decoded) == [oracle(traces_request(2))]


def test_json_ids_are_case_insensitive_hex_and_enum_names_and_unknown_fields_are_tolerated():
    body = {
        "resourceSpans": [
            {
                "futureField": {"x": 1},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE_ID.hex().upper(),
                                "spanId": SPAN_ID.hex().upper(),
                                "name": "n",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": 5,
                                "newThing": [1, 2],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [event] = payloads(otlp.decode(otlp.TRACES, json.dumps(body).encode(), "application/json", None))
    assert spans_of(event) == [
        {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "n", "kind": 3, "startTimeUnixNano": "5"}
    ]
    assert "futureField" not in event["resourceSpans"][0]


def json_spans(*spans: dict, resources: str = "resourceSpans", scopes: str = "scopeSpans") -> bytes:
    return json.dumps({resources: [{scopes: [{"spans": list(spans)}]}]}).encode()


def good_span(**fields) -> dict:
    return {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "kept", **fields}


def decode_json(kind, body: bytes) -> otlp.Decoded:
    return otlp.decode(kind, body, "application/json", None)


def test_a_base64_id_rejects_its_span_naming_the_field_and_the_rest_is_kept():
    """Each id is an item's: a base64 one is one rejected span (was a 400 for the whole request)."""
    bad = good_span(name="bad", traceId=base64.b64encode(TRACE_ID).decode())
    decoded = decode_json(otlp.TRACES, json_spans(bad, good_span()))
    assert (kept(decoded), decoded.rejected) == (1, 1)
    assert "resourceSpans[0].scopeSpans[0].spans[0].traceId: not a hex string" in decoded.reason
    assert [span["name"] for span in spans_of(payloads(decoded)[0])] == ["kept"]


def test_ids_under_protobuf_field_names_are_not_read_as_ids():
    """Was: `trace_id`/`span_id` in base64 were parsed by protobuf's parser and stored as ids."""
    ids = {"trace_id": base64.b64encode(TRACE_ID).decode(), "span_id": base64.b64encode(SPAN_ID).decode()}
    decoded = decode_json(otlp.TRACES, json_spans({**ids, "name": "snake"}, good_span()))
    assert (kept(decoded), decoded.rejected) == (1, 1)
    assert "spans[0].trace_id: a protobuf field name; OTLP/JSON keys are lowerCamelCase (traceId)" in decoded.reason
    assert [span["name"] for span in spans_of(payloads(decoded)[0])] == ["kept"]


def test_protobuf_field_names_for_the_lists_do_not_skip_the_id_checks():
    """Was: under `resource_spans`/`scope_spans` ids went to protobuf's parser unchecked (base64 taken)."""
    base64_ids = good_span(traceId=base64.b64encode(TRACE_ID).decode(), spanId=base64.b64encode(SPAN_ID).decode())
    error = refused(otlp.TRACES, json_spans(base64_ids, resources="resource_spans"), "application/json")
    assert (error.status, error.code) == (400, "invalid_body")
    assert "resource_spans: a protobuf field name; OTLP/JSON keys are lowerCamelCase (resourceSpans)" in error.message
    decoded = decode_json(otlp.TRACES, json_spans(base64_ids, good_span(), scopes="scope_spans"))
    assert (decoded.events, decoded.rejected) == ([], 2)
    assert decoded.reason.startswith("resourceSpans[0].scope_spans: a protobuf field name")


def test_a_protobuf_field_name_anywhere_in_an_item_rejects_the_item_it_is_in():
    snake = good_span(name="snake", attributes=[{"key": "k", "value": {"string_value": "v"}}])
    decoded = decode_json(otlp.TRACES, json_spans(snake, good_span()))
    assert (kept(decoded), decoded.rejected) == (1, 1)
    assert "spans[0].attributes[0].value.string_value: a protobuf field name" in decoded.reason
    resource = {"resource": {"dropped_attributes_count": 1}, "scopeSpans": [{"spans": [good_span(), good_span()]}]}
    decoded = decode_json(otlp.TRACES, json.dumps({"resourceSpans": [resource]}).encode())
    assert (decoded.events, decoded.rejected) == ([], 2)  # its resource cannot be stored: nor can its spans


@pytest.mark.parametrize("bad", ["!!notb64", "AP9yYXc=x", "A", 5, ["AA=="], True])
def test_a_bytes_value_that_is_not_base64_is_an_invalid_item_not_stored_altered(bad):
    """Was: `bytesValue: "!!notb64"` was stored altered (protobuf's parser skips what is not base64)."""
    attribute = {"key": "payload", "value": {"bytesValue": bad}}
    decoded = decode_json(otlp.TRACES, json_spans(good_span(name="bad", attributes=[attribute]), good_span()))
    assert (kept(decoded), decoded.rejected) == (1, 1)
    assert "spans[0].attributes[0].value.bytesValue" in decoded.reason
    assert [span["name"] for span in spans_of(payloads(decoded)[0])] == ["kept"]


@pytest.mark.parametrize(
    ("written", "raw"),
    [("AP9yYXc=", b"\x00\xffraw"), ("AP9yYXc", b"\x00\xffraw"), ("AP-y", b"\x00\xff\xb2"), ("AP_y", b"\x00\xff\xf2")],
)
def test_bytes_values_in_any_base64_the_json_mapping_accepts_are_stored_as_standard_base64(written, raw):
    """proto3's JSON mapping accepts standard or URL-safe base64, with or without padding."""
    attribute = {"key": "payload", "value": {"bytesValue": written}}
    decoded = decode_json(otlp.TRACES, json_spans(good_span(attributes=[attribute])))
    assert decoded.rejected == 0
    stored = spans_of(payloads(decoded)[0])[0]["attributes"][0]["value"]["bytesValue"]
    assert stored == base64.b64encode(raw).decode()


@pytest.mark.parametrize("kind", ["BOGUS", "span_kind_server", 2**40, True, 1.5, "2"])
def test_a_span_kind_that_is_no_span_kind_is_counted_in_partial_success(kind):
    """Was: an unknown enum name was dropped silently (the span kept, its kind lost)."""
    decoded = decode_json(otlp.TRACES, json_spans(good_span(name="bad", kind=kind), good_span(kind=2)))
    assert (kept(decoded), decoded.rejected) == (1, 1)
    assert decoded.reason == (
        "resourceSpans[0].scopeSpans[0].spans[0].kind: not one of the SpanKind values (OTLP/JSON enums are integers)"
    )
    assert spans_of(payloads(decoded)[0]) == [{**good_span(), "kind": 2}]


def test_an_unknown_severity_number_rejects_its_log_record_and_an_unknown_temporality_its_data_points():
    records = [{"severityNumber": "BOGUS", "body": {"stringValue": "bad"}}, {"severityNumber": 17}]
    logs = decode_json(otlp.LOGS, json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode())
    assert (kept(logs), logs.rejected) == (1, 1)
    assert "logRecords[0].severityNumber: not one of the SeverityNumber values" in logs.reason
    bogus = {"name": "orders", "sum": {"aggregationTemporality": "BOGUS", "dataPoints": [{"asInt": 1}, {"asInt": 2}]}}
    good = {"name": "ok", "gauge": {"dataPoints": [{"asInt": 3}]}}
    document = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [bogus, good]}]}]}
    metrics = decode_json(otlp.METRICS, json.dumps(document).encode())
    assert (kept(metrics), metrics.rejected) == (1, 2)
    assert "sum.aggregationTemporality: not one of the AggregationTemporality values" in metrics.reason


def test_a_null_trace_id_is_one_rejected_span_not_a_refused_request():
    """Was: `traceId: null` refused the whole request (400)."""
    decoded = decode_json(otlp.TRACES, json_spans(good_span(name="null", traceId=None), good_span()))
    assert (kept(decoded), decoded.rejected, decoded.reason) == (1, 1, "a span needs a 16-byte, non-zero trace id")
    record = {"traceId": None, "body": {"stringValue": "no trace"}}  # a log record needs no trace id
    logs = decode_json(otlp.LOGS, json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode())
    assert (kept(logs), logs.rejected) == (1, 0)


@pytest.mark.parametrize(
    "span",
    [{"name": 5}, {"traceId": 5}, {"startTimeUnixNano": "soon"}, {"attributes": "x"}, {"status": {"code": "x"}}, 7],
)
def test_a_span_of_the_wrong_types_is_one_rejected_span(span):
    bad = {**good_span(), **span} if isinstance(span, dict) else span
    decoded = decode_json(otlp.TRACES, json_spans(bad, good_span()))
    assert (kept(decoded), decoded.rejected) == (1, 1)
    assert decoded.reason.startswith("resourceSpans[0].scopeSpans[0].spans[0]")


def test_json_log_and_exemplar_ids_are_hex_too():
    logs = oracle(logs_request())
    assert payloads(otlp.decode(otlp.LOGS, json.dumps(logs).encode(), "application/json", None)) == [logs]
    metrics = oracle(metrics_request())
    exemplar = metrics["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0]["exemplars"][0]
    exemplar["spanId"] = base64.b64encode(SPAN_ID).decode()
    decoded = otlp.decode(otlp.METRICS, json.dumps(metrics).encode(), "application/json", None)
    assert (kept(decoded), decoded.rejected) == (2, 1)  # the metric of the exemplar, with its one data point
    assert "exemplars[0].spanId: not a hex string" in decoded.reason


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceSpans": "nope"}',
        b'{"resourceSpans": [5]}',
        b'{"resourceSpans": [{"scopeSpans": {"spans": []}}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": {"name": "n"}}]}]}',
        b"[1, 2]",
        b"{not json",
        b"",
    ],
)
def test_json_whose_lists_are_not_lists_is_400(body):
    error = refused(otlp.TRACES, body, "application/json")
    assert error.status == 400 and error.code == "invalid_body"


def test_many_rejected_items_give_a_short_reason():
    spans = [good_span(traceId=f"x{n}") for n in range(1000)] + [good_span(kind=f"K{n}") for n in range(1000)]
    decoded = decode_json(otlp.TRACES, json_spans(*spans))
    assert decoded.rejected == 2000
    assert decoded.reason.count("; ") == 1 and len(decoded.reason) < 400


JS_RECORDED = json.loads((Path(__file__).parents[1] / "otlp_js" / "requests.json").read_text())


@pytest.mark.parametrize(
    ("path", "body"), [(path, body) for path, bodies in JS_RECORDED["requests"].items() for body in bodies]
)
def test_what_the_opentelemetry_js_exporters_send_is_taken_whole(path, body):
    """Bodies recorded from `@opentelemetry/exporter-*-otlp-http` (tests/otlp_js/record.js): hex ids,
    numbers for 64-bit integers, integer enums, empty lists and zeros; none of it may be rejected."""
    export = otlp.BY_PATH[path]
    decoded = decode_json(export, json.dumps(body).encode())
    assert (decoded.rejected, decoded.reason) == (0, None)
    ids_in = _ids(body)
    assert ids_in or export is otlp.METRICS, "the recorded spans and log records carry ids"
    with_base64_ids = json.loads(json.dumps(body))
    _rewrite_ids_as_base64(with_base64_ids)
    message = ParseDict(with_base64_ids, getattr(export.proto(), export.request)())
    assert payloads(decoded) == [oracle(message)]
    assert _ids(payloads(decoded)[0]) == {value.lower() for value in ids_in}


def _ids(value) -> set[str]:
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k in ("traceId", "spanId", "parentSpanId") and v}
        return found.union(*(_ids(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_ids(v) for v in value))
    return set()


def _rewrite_ids_as_base64(value) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("traceId", "spanId", "parentSpanId"):
                value[key] = base64.b64encode(bytes.fromhex(inner)).decode()
            else:
                _rewrite_ids_as_base64(inner)
    elif isinstance(value, list):
        for inner in value:
            _rewrite_ids_as_base64(inner)


# --- refusals ----------------------------------------------------------------------------------


def test_truncated_protobuf_is_400():
    raw = traces_request().SerializeToString()
    error = refused(otlp.TRACES, raw[: len(raw) - 7])
    assert (error.status, error.code) == (400, "invalid_body")
    assert "ExportTraceServiceRequest" in error.message


def test_corrupt_gzip_is_400():
    assert refused(otlp.TRACES, b"\x1f\x8b\x08\x00garbage", encoding="gzip").status == 400


def test_over_size_as_received_is_413():
    assert refused(otlp.TRACES, b"\x00" * (MAX_RAW_BYTES + 1)).status == 413


def test_over_size_after_decompression_is_413():
    bomb = gzip.compress(b"\x00" * (MAX_DECODED_BYTES + 1024))
    assert len(bomb) < MAX_RAW_BYTES
    assert refused(otlp.TRACES, bomb, encoding="gzip").status == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-ndjson", "application/grpc"])
def test_other_content_types_are_415(content_type):
    assert refused(otlp.TRACES, b"{}", content_type).status == 415


# --- partial rejection -------------------------------------------------------------------------


def test_spans_without_valid_ids_are_rejected_and_the_rest_kept():
    request = traces_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x00" * 16
    spans[2].span_id = b"\x01\x02"
    decoded = otlp.decode(otlp.TRACES, request.SerializeToString(), PROTOBUF, None)
    assert (kept(decoded), decoded.rejected) == (1, 2)
    assert "trace id" in decoded.reason and "span id" in decoded.reason
    assert [span["spanId"] for span in spans_of(payloads(decoded)[0])] == ["0000000000000002"]


def test_every_span_rejected_leaves_no_event():
    request = traces_request(2, trace_id=b"")
    decoded = otlp.decode(otlp.TRACES, request.SerializeToString(), PROTOBUF, None)
    assert (decoded.events, kept(decoded), decoded.rejected) == ([], 0, 2)


def test_log_records_with_malformed_ids_are_rejected_but_absent_ids_are_fine():
    request = logs_request()
    request.resource_logs[0].scope_logs[0].log_records[0].trace_id = b"\x01" * 5
    decoded = otlp.decode(otlp.LOGS, request.SerializeToString(), PROTOBUF, None)
    assert (kept(decoded), decoded.rejected) == (1, 1)
    records = payloads(decoded)[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert records == [{"body": {"stringValue": "no trace context at all"}}]


def test_a_metric_without_a_name_rejects_its_data_points():
    request = metrics_request()
    nameless = request.resource_metrics[0].scope_metrics[0].metrics.add()
    nameless.gauge.data_points.add().as_int = 1
    nameless.gauge.data_points.add().as_int = 2
    decoded = otlp.decode(otlp.METRICS, request.SerializeToString(), PROTOBUF, None)
    assert (kept(decoded), decoded.rejected) == (3, 2)
    assert decoded.reason == "a metric needs a name"


# --- one event per request, cut when over the event limit ------------------------------------


def test_a_request_over_the_event_limit_is_cut_into_valid_requests_under_it():
    request = traces_request(40)
    second = request.resource_spans.add()
    second.resource.attributes.add().key = "second.resource"
    second.scope_spans.add().spans.extend(request.resource_spans[0].scope_spans[0].spans[:10])
    whole = oracle(request)
    limit = 4000
    decoded = otlp.decode(otlp.TRACES, request.SerializeToString(), PROTOBUF, None, max_event_bytes=limit)
    assert len(decoded.events) > 2
    for number, event in enumerate(decoded.events, start=1):
        assert event.size == len(json.dumps(event.payload, separators=(",", ":"))) <= limit
        assert event.where == f"part {number}"
        # each piece is itself an export request
        again = otlp.decode(otlp.TRACES, json.dumps(event.payload).encode(), "application/json", None)
        assert payloads(again) == [event.payload]
    assert [span for event in payloads(decoded) for span in spans_of(event)] == spans_of(whole)
    # every piece keeps the resource its spans came from
    for event in payloads(decoded):
        for resource_spans in event["resourceSpans"]:
            assert resource_spans["resource"] in [rs["resource"] for rs in whole["resourceSpans"]]
    assert (kept(decoded), decoded.rejected) == (50, 0)


def test_an_item_alone_over_the_event_limit_is_rejected():
    request = traces_request(2)
    request.resource_spans[0].scope_spans[0].spans[1].name = "x" * 5000
    decoded = otlp.decode(otlp.TRACES, request.SerializeToString(), PROTOBUF, None, max_event_bytes=3000)
    assert (kept(decoded), decoded.rejected) == (1, 1)
    assert "limit" in decoded.reason
    assert [span["name"] for event in payloads(decoded) for span in spans_of(event)] == ["GET /items/0"]


# --- answers -----------------------------------------------------------------------------------


def test_success_answers_in_protobuf_and_json():
    assert otlp.PROTOBUF_ENCODING.success(otlp.TRACES) == b""
    assert ExportTraceServiceResponse.FromString(b"").HasField("partial_success") is False
    assert otlp.JSON_ENCODING.success(otlp.TRACES) == b"{}"


def test_partial_success_answers_carry_the_rejected_count_and_reason():
    raw = otlp.PROTOBUF_ENCODING.success(otlp.METRICS, rejected=4, reason="a metric needs a name")
    partial = ExportMetricsServiceResponse.FromString(raw).partial_success
    assert (partial.rejected_data_points, partial.error_message) == (4, "a metric needs a name")
    as_json = json.loads(otlp.JSON_ENCODING.success(otlp.LOGS, rejected=2, reason="bad ids"))
    assert as_json == {"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "bad ids"}}


def test_a_reason_with_nothing_counted_is_still_said_as_the_spec_allows_for_warnings():
    """A metric without a name and without data points is 0 rejected data points, not silence."""
    nameless = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"description": "no name, no points"}]}]}]}
    decoded = otlp.decode(otlp.METRICS, json.dumps(nameless).encode(), "application/json", None)
    assert (decoded.rejected, decoded.reason) == (0, "a metric needs a name")
    answer = json.loads(otlp.JSON_ENCODING.success(otlp.METRICS, decoded.rejected, decoded.reason))
    assert answer == {"partialSuccess": {"rejectedDataPoints": "0", "errorMessage": "a metric needs a name"}}
    raw = otlp.PROTOBUF_ENCODING.success(otlp.METRICS, decoded.rejected, decoded.reason)
    assert ExportMetricsServiceResponse.FromString(raw).partial_success.error_message == "a metric needs a name"


@pytest.mark.parametrize(("status", "code"), [(400, 3), (401, 16), (403, 7), (413, 3), (429, 8), (503, 14), (500, 13)])
def test_errors_are_google_rpc_status_in_the_requests_encoding(status, code):
    error = EdgeError(status, "some_code", "what went wrong: ü")
    parsed = status_pb2.Status.FromString(otlp.PROTOBUF_ENCODING.status(error))
    assert (parsed.code, parsed.message) == (code, "some_code: what went wrong: ü")
    assert json.loads(otlp.JSON_ENCODING.status(error)) == {"code": code, "message": "some_code: what went wrong: ü"}


def test_long_status_messages_encode_their_length_as_a_varint():
    error = EdgeError(400, "invalid_body", "x" * 300)
    assert status_pb2.Status.FromString(otlp.PROTOBUF_ENCODING.status(error)).message.endswith("x" * 300)


def test_the_answer_encoding_follows_the_request():
    def answer_type(content_type: str | None) -> str:
        headers = {"content-type": content_type} if content_type else {}
        return otlp.OtlpDoor(IngestRequest("/v1/traces", headers, b"", None)).encoding.content_type

    assert answer_type("application/x-protobuf") == otlp.PROTOBUF
    assert answer_type("application/protobuf") == otlp.PROTOBUF
    assert answer_type("application/json; charset=utf-8") == otlp.JSON
    assert answer_type(None) == otlp.JSON
    assert answer_type("text/plain") == otlp.JSON  # refused with 415, in JSON


def test_importing_the_decoder_does_not_import_protobuf():
    code = "import sys, chalicelib.edge.doors.otlp; print('google.protobuf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- never anything but the contract's refusals ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400), kind=st.sampled_from([otlp.TRACES, otlp.LOGS, otlp.METRICS]))
def test_arbitrary_protobuf_bytes_decode_or_are_refused_with_400(raw, kind):
    try:
        decoded = otlp.decode(kind, raw, PROTOBUF, None)
    except EdgeError as error:
        assert error.status == 400
        return
    for event in decoded.events:
        json.dumps(event.payload, allow_nan=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(JSON_KEYS), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(document=json_values)
def test_arbitrary_json_in_otlp_shape_decodes_or_is_refused_with_400(document):
    try:
        otlp.decode(otlp.TRACES, json.dumps(document).encode(), "application/json", None)
    except EdgeError as error:
        assert error.status == 400


# --- amplification: a split request's resource is not copied without bound (issue #25) ------


def _big_resource_request(resource_bytes: int, spans: int, span_bytes: int) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "blob", "r" * resource_bytes
    scope = resource_spans.scope_spans.add()
    for i in range(spans):
        span = scope.spans.add()
        span.trace_id, span.span_id, span.name = b"\x01" * 16, (i + 1).to_bytes(8, "big"), "s" * span_bytes
    return request.SerializeToString()


@pytest.mark.parametrize("resource_bytes", [1, 60_000, 130_000])
def test_what_a_split_request_queues_stays_within_the_stated_multiple_of_what_it_decoded(resource_bytes):
    raw = _big_resource_request(resource_bytes, 1000, 3000)
    decoded = otlp.decode(otlp.TRACES, raw, PROTOBUF, None)
    assert len(decoded.events) > 1 and decoded.rejected == 0
    whole = sum(len(json.dumps(e.payload, separators=(",", ":"))) for e in decoded.events)
    alone = len(raw) + 1000 * 30  # the decoded JSON: hex ids and field names add about 30 bytes a span
    assert whole <= otlp.QUEUED_PER_DECODED * alone, (whole, alone)


@pytest.mark.parametrize("resource_bytes", [140_000, 1_100_000])
def test_a_resource_too_big_to_repeat_in_every_part_is_a_413_naming_it(resource_bytes):
    """Was 178 events and 178 MiB of JSON from a 2.1 MiB body (or every span refused as oversized)."""
    raw = _big_resource_request(resource_bytes, 300, 3000)
    with pytest.raises(EdgeError) as refused:
        otlp.decode(otlp.TRACES, raw, PROTOBUF, None)
    assert refused.value.status == 413
    assert "resourceSpans[0]" in refused.value.message and "resource" in refused.value.message


def test_a_big_resource_in_a_request_that_needs_no_split_is_accepted():
    decoded = otlp.decode(otlp.TRACES, _big_resource_request(500_000, 3, 10), PROTOBUF, None)
    assert len(decoded.events) == 1 and decoded.rejected == 0
