"""Hostile input against the real `app`, through every gateway's event shape: never a 5xx, never a traceback.

Three doors are fuzzed, each through the three event shapes Lambda hands over (API Gateway
REST 1.0, HTTP API 2.0, function URL 2.0): the SDK routes, OTLP/HTTP and Firehose. Every
answer is the door's own: a 2xx with exactly the events it queued, or its JSON (or, for an
OTLP protobuf request, protobuf) error. Each door gets FUZZ_EVENTS_PER_DOOR events, half
hostile requests and half malformed Lambda events (300 in `make test`; `make soak` sets
10,000). Examples are derandomized, so a failure reproduces on the next run.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import zlib
from typing import Any

import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.contract.otlp import BY_PATH as OTLP_EXPORTS
from chalicelib.edge.doors.firehose import FIREHOSE_SIGNALS
from edgectl.lambda_shim import api_gateway_event, function_url_event, http_api_event
from tests.conftest import drain_queue

KEY = "lk_fuzz_secret_key_0123456789"
EVENTS_PER_DOOR = int(os.environ.get("FUZZ_EVENTS_PER_DOOR", "300"))
MIB = 1024 * 1024
DOORS = ("sdk", "otlp", "firehose")
GATEWAYS = ("rest-1.0", "http-api-2.0", "function-url-2.0")

FUZZ_SETTINGS = settings(
    max_examples=max(1, EVENTS_PER_DOOR // 2),  # each door's share of each of the two fuzz tests
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

SDK_PATHS = [
    "/api/ingest",
    "/api/v1/ingest",
    "/api/v1/errors",
    "/api/ingest/trace/otlp",
    "/api/ingest/log",
    "/api/ingest/rum",
    "/api/ingest/job",
    "/api/ingest/cron",
    "/api/ingest/metric",
    "/api/ingest/event",
    "/api/ingest/nope",
    "/api/ingest/log/extra",
]
OTLP_PATHS = sorted(OTLP_EXPORTS)
FIREHOSE_PATHS = [f"/api/firehose/{signal}" for signal in sorted(FIREHOSE_SIGNALS)] + ["/api/firehose/nope"]

# Header text as API Gateway could deliver it (no lone surrogates: they are not HTTP).
header_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
# OTLP/JSON keys (and protobuf's names for some), so that generated documents reach deep into the schema.
OTLP_KEYS = [
    *("resourceSpans", "resourceLogs", "resourceMetrics", "resource_spans", "resource", "attributes", "key"),
    *("value", "stringValue", "intValue", "bytesValue", "arrayValue", "kvlistValue", "values", "scopeSpans"),
    *("scopeLogs", "scopeMetrics", "scope_spans", "scope", "name", "spans", "logRecords", "metrics", "traceId"),
    *("spanId", "parentSpanId", "trace_id", "kind", "severityNumber", "body", "startTimeUnixNano", "links"),
    *("status", "code", "sum", "gauge", "histogram", "dataPoints", "asInt", "asDouble", "exemplars", "flags"),
    *("aggregationTemporality", "droppedAttributesCount", "unknownField"),
]
otlp_scalars = json_scalars | st.sampled_from(
    ["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "W47/95gDgQPSabYzgT/GDA==", "!!notb64", "BOGUS", 2]
)
otlp_json_values = st.recursive(
    otlp_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(OTLP_KEYS), children, max_size=5),
    max_leaves=40,
)


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


def _nest(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


SPECIAL_BODIES = [
    b"",
    b"   \n\t  ",
    b"\n\n\n",
    b"\x00",
    b'{"message": "nul \x00 inside"}',
    b'{"message": "nul \\u0000 escaped"}',
    b'{"message": "\xff\xfe invalid utf-8"}',
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b"[" * 10_000 + b"]" * 10_000,
    _nest(10_000),
    b'{"n": 1' + b"0" * 5_000 + b"}",  # more digits than int() takes
    b'{"n": 1e999}',
    b'{"n": -1e999}',
    b'{"n": NaN}',
    b'{"n": Infinity}',
    b'{"n": 123456789012345678901234567890.5e300}',
    b"[]",
    b'"a string"',
    b"42",
    b"null",
    b"true",
    b'{"entries": "not a list"}',
    b'{"entries": [' + b"{}," * 200 + b"{}]}",
    b'{"lines": [' + b'"x",' * 250 + b'"x"]}',
    b'{"resourceSpans": {}}',
    b'{"api_key": 12345}',
    b'{"api_key": ["' + KEY.encode() + b'"]}',
    b'{"api_key": "' + KEY.encode() + b'", "run_id": {"nested": true}}',
    b'{"check_in_id": ""}',
    b'{"message": "' + b"x" * (MIB + 10) + b'"}',  # one event just over 1 MiB
    b'{"a":1}\n{"b":\n{"c":3}',
    b'{"a":1}\n[1,2]\n',
    b'{"a":1}\n' + b"x" * (MIB + 1) + b"\n",
    b'{"a":1}' + b"\n" * 1000,
]
OTLP_SPECIAL_BODIES = [
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": null, "spanId": "eee19b7ec3c1b174"}]}]}]}',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "BOGUS"}]}]}]}',
    b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": "BOGUS"}]}]}]}',
    b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"bytesValue": "!!notb64"}}]}]}]}',
    b'{"resource_spans": [{"scope_spans": [{"spans": [{"trace_id": "W47/95gDgQPSabYzgT/GDA=="}]}]}]}',
    b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "sum": {"dataPoints": [{}]}}]}]}]}',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": ['
    + b'{"value": {"arrayValue": {"values": [' * 200
    + b"]}}}" * 200
    + b"]}]}]}]}",
    b"\x0a\x02\x0a\x00",  # a protobuf resource with an empty scope
    b"\x0a\x80\x80\x80\x80\x10",  # a length far past the end
]


def _protobuf_bodies() -> st.SearchStrategy[bytes]:
    """Real export requests' bytes, cut or with bytes flipped, and random bytes."""
    from tests.unit.test_otlp_decoder import logs_request, metrics_request, traces_request

    whole = [traces_request(3).SerializeToString(), logs_request().SerializeToString()]
    whole.append(metrics_request().SerializeToString())

    @st.composite
    def damaged(draw: st.DrawFn) -> bytes:
        raw = bytearray(draw(st.sampled_from(whole)))
        for _ in range(draw(st.integers(0, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw[: draw(st.integers(0, len(raw)))])

    return st.sampled_from(whole) | damaged() | st.binary(max_size=600)


def _firehose_record_data() -> st.SearchStrategy[Any]:
    cloudwatch = {
        "messageType": "DATA_MESSAGE",
        "logGroup": "/aws/lambda/fuzz",
        "logStream": "s",
        "logEvents": [{"id": "1", "timestamp": 1, "message": "m"}],
    }
    payloads = st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(json_values, max_size=4).map(lambda vs: b"\n".join(json.dumps(v).encode() for v in vs)),
        st.just(gzip.compress(json.dumps(cloudwatch).encode())),
        st.dictionaries(st.sampled_from(sorted(cloudwatch)), json_values).map(
            lambda d: gzip.compress(json.dumps(d).encode())
        ),
        st.binary(max_size=300),
        st.sampled_from(SPECIAL_BODIES),
    )
    return st.one_of(payloads.map(lambda raw: base64.b64encode(raw).decode()), json_values, st.just("!!not base64!!"))


@st.composite
def firehose_bodies(draw: st.DrawFn) -> bytes:
    """A delivery as Firehose sends one, with any part of it wrong."""
    records = draw(st.lists(st.one_of(st.fixed_dictionaries({"data": _firehose_record_data()}), json_values)))
    delivery: dict[str, Any] = {
        "requestId": draw(st.sampled_from(["r-1", "r-2", ""]) | json_values),
        "timestamp": draw(st.integers(0, 2**41) | json_values),
        "records": records if draw(st.integers(0, 9)) else draw(json_values),
    }
    for name in draw(st.lists(st.sampled_from(sorted(delivery)), max_size=1)):
        del delivery[name]
    return json.dumps(delivery).encode()


def raw_bodies(door: str) -> st.SearchStrategy[bytes]:
    common = st.one_of(
        st.sampled_from(SPECIAL_BODIES),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=2_000),
    )
    if door == "otlp":
        documents = otlp_json_values.map(lambda v: json.dumps(v).encode())
        return st.one_of(documents, _protobuf_bodies(), st.sampled_from(OTLP_SPECIAL_BODIES), common)
    if door == "firehose":
        return st.one_of(firehose_bodies(), firehose_bodies(), common)
    sdk_documents = st.dictionaries(
        st.sampled_from(["api_key", "message", "entries", "resourceSpans", "run_id"]), json_values
    ).map(lambda d: json.dumps({**d, "api_key": KEY} if "api_key" in d else d).encode())
    ndjson = st.lists(json_values, max_size=6).map(lambda vs: b"\n".join(json.dumps(v).encode() for v in vs))
    return st.one_of(common, sdk_documents, ndjson)


@st.composite
def bodies(draw: st.DrawFn, door: str) -> tuple[bytes, str | None]:
    """A body and the Content-Encoding header to send with it (which may lie)."""
    raw = draw(raw_bodies(door))
    encoding = draw(st.sampled_from(["none", "gzip", "gzip-truncated", "deflate", "raw-deflate", "corrupt", "lie"]))
    if encoding == "gzip":
        return gzip.compress(raw), draw(st.sampled_from(["gzip", "x-gzip", "GZIP", " gzip "]))
    if encoding == "gzip-truncated":
        packed = gzip.compress(raw)
        return packed[: draw(st.integers(0, max(0, len(packed) - 1)))], "gzip"
    if encoding == "deflate":
        return zlib.compress(raw), "deflate"
    if encoding == "raw-deflate":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(raw) + packer.flush(), "deflate"
    if encoding == "corrupt":
        return b"\x1f\x8b\x08\x00garbage" + raw[:50], draw(st.sampled_from(["gzip", "deflate"]))
    if encoding == "lie":
        return raw, draw(st.sampled_from(["gzip", "deflate", "br", "compress", "identity", "", "gzip, deflate"]))
    return raw, None


CONTENT_TYPES = {
    "sdk": [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-ndjson",
        "APPLICATION/JSON",
        "application/xml",
        "multipart/form-data; boundary=x",
        ";;;",
        "",
    ],
    "otlp": [
        "application/x-protobuf",
        "application/x-protobuf",
        "application/protobuf",
        "application/json",
        "application/json",
        "Application/X-Protobuf; charset=binary",
        "application/grpc",
        "text/plain",
        "",
    ],
    "firehose": ["application/json", "application/json", "application/json; charset=utf-8", "text/plain", ""],
}


@st.composite
def key_headers(draw: st.DrawFn, door: str) -> dict[str, str]:
    """The key as the door's clients send it, or garbage in its place, or none."""
    if door == "firehose":
        headers = {}
        key = draw(st.sampled_from(["good", "good", "good", "garbage", "none"]))
        if key != "none":
            headers["X-Amz-Firehose-Access-Key"] = KEY if key == "good" else draw(header_text)
        if draw(st.integers(0, 4)):
            headers["X-Amz-Firehose-Request-Id"] = draw(st.sampled_from(["r-1", "r-2"]) | header_text)
        return headers
    headers = {}
    garbage = ["none", "x-api-key-garbage", "bearer-garbage", "basic-garbage", "text"]
    key = draw(st.sampled_from(["good"] * 3 + garbage))
    if key == "good":
        names = ["X-Api-Key", "X-Api-Token"] if door == "sdk" else ["X-Api-Key", "Authorization"]
        name = draw(st.sampled_from(names))
        headers[name] = f"Bearer {KEY}" if name == "Authorization" else KEY
    elif key == "x-api-key-garbage":
        headers["X-Api-Key"] = draw(header_text)
    elif key == "bearer-garbage":
        headers["Authorization"] = "Bearer " + draw(header_text)
    elif key == "basic-garbage":
        headers["Authorization"] = draw(
            st.sampled_from(
                ["Basic !!!", "Basic ", "Basic " + "A" * 5000, _basic(""), _basic(KEY + "\x00"), "Basic Og=="]
            )
        )
    elif key == "text":
        headers["Authorization"] = draw(header_text)
    return headers


@st.composite
def requests(draw: st.DrawFn, door: str) -> tuple[str, str, dict[str, str], bytes, str]:
    """(gateway, path, headers, body, source IP) of one hostile request to `door`."""
    body, encoding = draw(bodies(door))
    headers = draw(key_headers(door))
    content_type = draw(st.one_of(st.sampled_from(CONTENT_TYPES[door]), header_text, st.none()))
    if content_type is not None:
        headers["Content-Type"] = content_type
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(st.one_of(header_text, st.text(min_size=2_000, max_size=5_000)))
    for name in draw(st.lists(st.sampled_from(["X-Lookout-Env-Forced", "X-Lookout-Client-Sampled", "Origin"]))):
        headers[name] = draw(header_text)
    source_ip = draw(st.sampled_from(["203.0.113.9", "::1", "not-an-ip", ""]))
    path = draw(st.sampled_from({"sdk": SDK_PATHS, "otlp": OTLP_PATHS, "firehose": FIREHOSE_PATHS}[door]))
    return draw(st.sampled_from(GATEWAYS)), path, headers, body, source_ip


def rest_route(path: str) -> tuple[str, dict[str, str] | None]:
    """The resource template API Gateway matches for `path`, and its path parameters."""
    parts = path.split("/")
    if path.startswith("/api/firehose/"):
        return "/api/firehose/{signal}", {"signal": parts[3]}
    if path.startswith("/api/ingest/") and path != "/api/ingest/trace/otlp":
        nested = len(parts) > 4
        resource = "/api/ingest/{signal}/{rest}" if nested else "/api/ingest/{signal}"
        return resource, {"signal": parts[3], **({"rest": parts[4]} if nested else {})}
    return path, None


def gateway_event(gateway: str, path: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict[str, Any]:
    """`body` to `path` as the gateway hands it to Lambda (always base64: the bytes stay as sent)."""
    if gateway == "rest-1.0":
        resource, parameters = rest_route(path)
        event = api_gateway_event(path, body, headers, source_ip=source_ip, base64_body=True, resource=resource)
        event["pathParameters"] = parameters
        return event
    build = http_api_event if gateway == "http-api-2.0" else function_url_event
    return build(path, body, headers, source_ip=source_ip, base64_body=True)


def call(
    path: str, headers: dict[str, str], body: bytes, source_ip: str = "203.0.113.9", gateway: str = "rest-1.0"
) -> tuple[int, str, dict]:
    """Invoke the real app with a gateway's event; (status, body text, headers)."""
    from app import app

    response = app(gateway_event(gateway, path, headers, body, source_ip), None)
    raw = response["body"] or ""
    text = base64.b64decode(raw).decode("latin-1") if response.get("isBase64Encoded") else raw
    return response["statusCode"], text, response["headers"]


def check_answer(status: int, text: str) -> dict[str, Any]:
    """The contract's shapes: 202 with ids, or exactly {"error", "message"}; never a 5xx or a traceback."""
    assert status < 500, (status, text[:500])
    assert "Traceback" not in text
    answer = json.loads(text)
    if status == 202:
        assert answer["status"] == "accepted"
        assert isinstance(answer.get("event_id") or answer.get("event_ids"), (str, list))
    else:
        assert 400 <= status < 500, status
        assert set(answer) == {"error", "message"}, answer
        assert all(isinstance(answer[k], str) and answer[k] for k in answer)
    return answer


def check_otlp_answer(path: str, status: int, text: str, headers: dict[str, Any]) -> None:
    """An Export*ServiceResponse with 200, else a google.rpc.Status; protobuf or JSON as the answer says."""
    assert status < 500, (status, text[:500])
    assert status == 200 or 400 <= status < 500, status
    export = OTLP_EXPORTS[path]
    if headers.get("Content-Type") == "application/x-protobuf":
        raw = text.encode("latin-1")
        if status == 200:
            getattr(export.proto(), export.response).FromString(raw)
        else:
            assert status_pb2.Status.FromString(raw).message
        return
    assert "Traceback" not in text
    answer = json.loads(text)
    if status == 200:
        assert set(answer) <= {"partialSuccess"}, answer
    else:
        assert set(answer) in ({"code", "message"}, {"error", "message"}), answer


def check_firehose_answer(status: int, text: str) -> None:
    """Firehose's own shapes: 200 {requestId, timestamp}, else the same with errorMessage."""
    assert status < 500, (status, text[:500])
    assert "Traceback" not in text
    answer = json.loads(text)
    if status == 200:
        assert set(answer) == {"requestId", "timestamp"}, answer
    else:
        assert 400 <= status < 500, status
        assert set(answer) in ({"requestId", "timestamp", "errorMessage"}, {"error", "message"}), answer


@pytest.mark.parametrize("door", DOORS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_any_request_gets_the_doors_answer_and_queues_exactly_what_it_accepted(
    aws, put_key, door: str, data: st.DataObject, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    put_key(KEY)
    capsys.readouterr()  # what an earlier (failing) example left behind is not this one's
    caplog.clear()
    gateway, path, headers, body, source_ip = data.draw(requests(door))
    status, text, answer_headers = call(path, headers, body, source_ip, gateway)
    queued = drain_queue(aws.queue_url)
    if door == "sdk":
        answer = check_answer(status, text)
        if status == 202:
            ids = answer.get("event_ids") or [answer["event_id"]]
            if not (headers.get("Idempotency-Key", "").strip() and not queued):  # else a replay: nothing new
                assert sorted(m["event_id"] for m in queued) == sorted(ids)
    elif door == "otlp":
        check_otlp_answer(path, status, text, answer_headers)
        assert {m["signal"] for m in queued} <= {OTLP_EXPORTS[path].signal}
    else:
        check_firehose_answer(status, text)
    if status >= 300:
        assert queued == []
    assert all(KEY not in json.dumps(m) for m in queued)
    logged = capsys.readouterr()
    text_logs = logged.out + logged.err + caplog.text
    caplog.clear()
    assert "Traceback" not in text_logs
    assert KEY not in text_logs


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b" " * (50 * MIB), None),
        (b'{"message": "' + b"x" * (50 * MIB) + b'"}', None),
        (gzip.compress(b"[" + b"0," * (25 * MIB) + b"0]", 6), "gzip"),
        (zlib.compress(b" " * (50 * MIB), 9), "deflate"),
    ],
    ids=["50MB-spaces", "50MB-field", "gzip-of-50MB", "deflate-of-50MB"],
)
def test_fifty_megabyte_bodies_are_413(aws, put_key, body: bytes, encoding: str | None) -> None:
    put_key(KEY)
    headers = {"Content-Type": "application/json", "X-Api-Key": KEY}
    if encoding:
        headers["Content-Encoding"] = encoding
    status, text, _ = call("/api/ingest", headers, body)
    assert (status, json.loads(text)["error"]) == (413, "payload_too_large")
    assert drain_queue(aws.queue_url) == []


@pytest.mark.parametrize("length", [1, 512, 513, 2_100, 8_000])
def test_long_idempotency_keys_are_accepted_once_not_503(aws, put_key, length: int) -> None:
    """Found by the fuzzer: a key over DynamoDB's 2 KiB partition-key limit made every try a 503."""
    put_key(KEY)
    headers = {"Content-Type": "application/json", "X-Api-Key": KEY, "Idempotency-Key": "k" * length}
    first = call("/api/ingest", headers, b'{"message": "m"}')
    again = call("/api/ingest", headers, b'{"message": "m"}')
    assert first[0] == again[0] == 202, first
    assert json.loads(first[1]) == json.loads(again[1])
    assert len(drain_queue(aws.queue_url)) == 1


@pytest.mark.parametrize("origin", ["\n", "https://a.example\r\nSet-Cookie: x=1", "https://a.example\x00"])
@pytest.mark.parametrize("method", ["POST", "OPTIONS"])
def test_origin_with_control_characters_is_not_echoed_and_not_a_500(aws, put_key, origin: str, method: str) -> None:
    """Found by the fuzzer: an Origin with a line break was echoed into a header, and Chalice answered 500."""
    put_key(KEY)
    event = api_gateway_event("/api/ingest", b'{"message": "m"}', {"X-Api-Key": KEY, "Origin": origin})
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    from app import app

    response = app(event, None)
    assert response["statusCode"] == (202 if method == "POST" else 204), response
    assert "Access-Control-Allow-Origin" not in response["headers"]
    drain_queue(aws.queue_url)


# --- Malformed Lambda events: the three payload formats, every door ---------------------------

EVENT_PATHS = {
    "/api/ingest": ("/api/ingest", "application/json", b'{"message": "fuzz"}'),
    "/api/ingest/{signal}": ("/api/ingest/event", "application/x-ndjson", b'{"name": "a"}\n{"name": "b"}'),
    "/v1/traces": ("/v1/traces", "application/json", b'{"resourceSpans": []}'),
    "/api/firehose/{signal}": (
        "/api/firehose/log",
        "application/json",
        b'{"requestId": "r-1", "timestamp": 1, "records": [{"data": "eyJtZXNzYWdlIjogIngifQ=="}]}',
    ),
}
DOOR_TEMPLATES = {
    "sdk": ["/api/ingest", "/api/ingest/{signal}"],
    "otlp": ["/v1/traces"],
    "firehose": ["/api/firehose/{signal}"],
}
# Keys an event of each format may carry, at each level the edge reads.
EVENT_FIELDS = {
    "rest-1.0": [
        ("resource",),
        ("path",),
        ("httpMethod",),
        ("headers",),
        ("multiValueHeaders",),
        ("queryStringParameters",),
        ("multiValueQueryStringParameters",),
        ("pathParameters",),
        ("stageVariables",),
        ("body",),
        ("isBase64Encoded",),
        ("requestContext",),
        ("requestContext", "resourcePath"),
        ("requestContext", "httpMethod"),
        ("requestContext", "identity"),
        ("requestContext", "identity", "sourceIp"),
        ("headers", "x-api-key"),
        ("headers", "content-type"),
    ],
    "2.0": [
        ("version",),
        ("rawPath",),
        ("rawQueryString",),
        ("cookies",),
        ("headers",),
        ("queryStringParameters",),
        ("stageVariables",),
        ("body",),
        ("isBase64Encoded",),
        ("requestContext",),
        ("requestContext", "stage"),
        ("requestContext", "http"),
        ("requestContext", "http", "method"),
        ("requestContext", "http", "path"),
        ("requestContext", "http", "sourceIp"),
        ("requestContext", "http", "userAgent"),
        ("headers", "x-api-key"),
        ("headers", "content-type"),
    ],
}
DELETED = object()
field_values = st.one_of(
    json_values,
    st.sampled_from(["", "!!not base64!!", "POST", "/api/ingest", "$default", "\ud800", "eyJhIjoxfQ=="]),
    st.just(DELETED),
)


def _valid_event(shape: str, template: str) -> dict[str, Any]:
    from edgectl.lambda_shim import function_url_event, http_api_event

    path, content_type, body = EVENT_PATHS[template]
    headers = {"Content-Type": content_type, "X-Api-Key": KEY}
    if template.startswith("/api/firehose"):
        headers = {"Content-Type": content_type, "X-Amz-Firehose-Access-Key": KEY, "X-Amz-Firehose-Request-Id": "r-1"}
    if shape == "rest-1.0":
        return api_gateway_event(path, body, headers, base64_body=True, resource=template)
    build = http_api_event if shape == "http-api-2.0" else function_url_event
    return build(path, body, headers)


def _set(event: dict[str, Any], where: tuple[str, ...], value: Any) -> None:
    for name in where[:-1]:
        child = event.get(name)
        if not isinstance(child, dict):
            return
        event = child
    if value is DELETED:
        event.pop(where[-1], None)
    else:
        event[where[-1]] = value


@st.composite
def malformed_events(draw: st.DrawFn, door: str) -> tuple[str, str, dict[str, Any]]:
    shape = draw(st.sampled_from(GATEWAYS))
    template = draw(st.sampled_from(DOOR_TEMPLATES[door]))
    event = _valid_event(shape, template)
    fields = EVENT_FIELDS["rest-1.0" if shape == "rest-1.0" else "2.0"]
    for where in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4)):
        _set(event, where, draw(field_values))
    return shape, template, event


def check_event_answer(template: str, response: dict[str, Any]) -> None:
    """A 2xx, or a 4xx whose body is the door's JSON error: never a 5xx."""
    status = response["statusCode"]
    assert isinstance(status, int) and status < 500, response
    text = response.get("body") or ""
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    assert "Traceback" not in text
    if status < 300:
        return
    answer = json.loads(text)
    if template.startswith("/api/firehose") and set(answer) != {"error", "message"}:
        assert set(answer) == {"requestId", "timestamp", "errorMessage"}, answer
    elif template.startswith("/v1/") and "code" in answer:
        assert set(answer) == {"code", "message"}, answer
    else:
        assert set(answer) == {"error", "message"}, answer


@pytest.mark.parametrize("door", DOORS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_any_malformed_lambda_event_gets_a_4xx_json_answer_never_a_5xx(
    aws, put_key, door: str, data: st.DataObject, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from app import app

    put_key(KEY)
    capsys.readouterr()
    caplog.clear()
    _, template, event = data.draw(malformed_events(door))
    check_event_answer(template, app(event, None))  # an exception out of the handler fails the test
    drain_queue(aws.queue_url)
    logged = capsys.readouterr()
    assert "Traceback" not in logged.out + logged.err + caplog.text
    caplog.clear()


@pytest.mark.parametrize("template", sorted(EVENT_PATHS))
def test_rest_event_with_undecodable_base64_body_is_the_doors_400(aws, put_key, template: str) -> None:
    """Was a 500 on every route (Chalice's generic one on the Firehose route, with a traceback)."""
    from app import app

    put_key(KEY)
    event = _valid_event("rest-1.0", template)
    event["body"] = "!!not base64!!"
    response = app(event, None)
    assert response["statusCode"] == 400, response
    check_event_answer(template, response)
    if template.startswith("/api/firehose"):
        assert json.loads(response["body"])["requestId"] == "r-1"
    assert drain_queue(aws.queue_url) == []


@pytest.mark.parametrize("shape", GATEWAYS)
def test_undecodable_base64_body_is_the_same_400_behind_every_gateway(aws, put_key, shape: str) -> None:
    from app import app

    put_key(KEY)
    event = _valid_event(shape, "/api/firehose/{signal}")
    event["body"], event["isBase64Encoded"] = "!!not base64!!", True
    response = app(event, None)
    assert response["statusCode"] == 400, response
    assert set(json.loads(response["body"])) == {"requestId", "timestamp", "errorMessage"}


def test_rest_event_without_path_parameters_on_a_templated_route_is_routed_by_its_path(aws, put_key) -> None:
    """Was a 500 (Chalice reads the captures from pathParameters)."""
    from app import app

    put_key(KEY)
    event = _valid_event("rest-1.0", "/api/ingest/{signal}")
    event["pathParameters"] = None
    response = app(event, None)
    assert response["statusCode"] == 202, response
    assert len(drain_queue(aws.queue_url)) == 2


@pytest.mark.parametrize("query", [5, ["a=1"], {"a": "1"}, True])
def test_v2_event_with_a_non_string_raw_query_string_is_a_400(aws, put_key, query: Any) -> None:
    """Was an exception out of the handler (the invocation failed)."""
    from app import app

    put_key(KEY)
    event = _valid_event("http-api-2.0", "/api/ingest")
    event["rawQueryString"] = query
    response = app(event, None)
    assert response["statusCode"] == 400, response
    assert set(json.loads(response["body"])) == {"error", "message"}


@pytest.mark.parametrize("shape", GATEWAYS)
def test_a_header_with_a_lone_surrogate_is_a_400_not_a_500(aws, put_key, shape: str) -> None:
    """Found by the event fuzz: `X-Api-Key: "\\ud800"` in the event JSON failed hashing the key."""
    from app import app

    put_key(KEY)
    event = _valid_event(shape, "/api/ingest")
    event["headers"] = {**event["headers"], "x-api-key": "\ud800"}
    response = app(event, None)
    assert response["statusCode"] == 400, response
