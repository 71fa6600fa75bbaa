"""CONTRACT §8: the same edge behind each front door — REST (payload 1.0), HTTP API and function URL (2.0).

Every test in the parametrized suite runs once per door: the request is turned into the event that
door hands the Lambda (edgectl.lambda_shim, shaped as AWS documents them) and given to `app.app`,
the API function's handler on every deploy path; the door's answer is read back the way that door reads it.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.edge.gateways import RouteTable, rest_event_from_v2, to_v2_response
from edgectl.cmd_render_policies import ROOT
from edgectl.lambda_shim import LambdaContext, api_gateway_event, function_url_event, http_api_event
from edgectl.local_http import is_gateway_path
from tests.conftest import drain_queue

KEY = "lk_live_front_door_key"
JSON = {"content-type": "application/json"}
DOORS = ["rest", "http", "url"]
V2_RESPONSE_KEYS = {"statusCode", "headers", "cookies", "body", "isBase64Encoded"}


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]  # names lowercased
    body: bytes
    raw: dict[str, Any]

    @property
    def json_body(self) -> Any:
        return json.loads(self.body)


class DoorClient:
    """Requests through one front door, into the real Lambda entry point."""

    def __init__(self, door: str):
        import app as app_module

        self.door = door
        self.app_module = app_module

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        source_ip: str = "203.0.113.9",
        stage: str = "$default",
    ) -> Answer:
        headers = dict(headers or {})
        if self.door == "rest":
            event = self._rest_event(method, path, body, headers, source_ip)
            if event is None:
                return self._rest_gateway_not_found(path)
        elif self.door == "http":
            event = http_api_event(path, body, headers, source_ip=source_ip, method=method, stage=stage)
        else:
            event = function_url_event(path, body, headers, source_ip=source_ip, method=method)
        raw = self.app_module.app(event, LambdaContext("api_handler", 10, 512))
        return self._read(raw)

    def post(self, path: str, body: Any, **headers: str) -> Answer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", path, raw, {**JSON, **{k.replace("_", "-"): v for k, v in headers.items()}})

    def _rest_event(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], source_ip: str
    ) -> dict[str, Any] | None:
        """What the REST API hands over: the matched template as resourcePath, and a body in base64
        when its Content-Type is one of the API's binary media types (that is how API Gateway decides)."""
        from chalice.app import _matches_content_type
        from chalice.local import RouteMatcher

        app = self.app_module.app
        if not is_gateway_path(path):
            return None
        try:
            resource = RouteMatcher(list(app.routes)).match_route(path).route
        except ValueError:
            return None
        if method not in app.routes[resource]:
            return None
        binary = body is not None and _matches_content_type(headers.get("content-type", ""), app.api.binary_types)
        return api_gateway_event(path, body, headers, source_ip, binary, resource, method)

    def _rest_gateway_not_found(self, path: str) -> Answer:
        """A path the REST API has no resource for never reaches the Lambda: the stack's gateway response answers."""
        overrides = json.loads((ROOT / "infra" / "chalice-overrides.json").read_text())
        gateway = overrides["Resources"]["UnknownPathIsNotFound"]["Properties"]
        body = gateway["ResponseTemplates"]["application/json"].replace("$context.path", path)
        return Answer(int(gateway["StatusCode"]), {"content-type": "application/json"}, body.encode(), {})

    def _read(self, raw: dict[str, Any]) -> Answer:
        if self.door == "rest":
            headers = {k.lower(): v for k, v in raw["headers"].items()}
            headers |= {k.lower(): ",".join(v) for k, v in (raw.get("multiValueHeaders") or {}).items()}
        else:
            assert set(raw) <= V2_RESPONSE_KEYS, raw  # a 2.0 response, nothing of 1.0
            headers = {k.lower(): v for k, v in raw["headers"].items()}
        body = base64.b64decode(raw["body"]) if raw.get("isBase64Encoded") else raw["body"].encode()
        return Answer(raw["statusCode"], headers, body, raw)


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest, aws: Any) -> DoorClient:
    return DoorClient(request.param)


def error_of(answer: Answer) -> tuple[int, str]:
    assert answer.headers["content-type"] == "application/json"
    body = answer.json_body
    assert set(body) == {"error", "message"}, body
    return answer.status_code, body["error"]


# --- the same edge on every door -----------------------------------------------------------


def test_accepted_event_is_queued_with_the_doors_client_ip(door, put_key, aws):
    put_key(KEY)
    answer = door.request(
        "POST",
        "/api/ingest",
        b'{"message": "boom", "api_key": "x"}',
        {**JSON, "x-api-key": KEY, "x-lookout-client-sampled": "1", "x-forwarded-for": "10.9.9.9"},
        source_ip="198.51.100.23",
    )
    assert answer.status_code == 202, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert set(answer.json_body) == {"event_id", "status"}
    (message,) = drain_queue(aws.queue_url)
    assert message["event_id"] == answer.json_body["event_id"]
    assert (message["path"], message["signal"], message["client_ip"]) == ("/api/ingest", "error", "198.51.100.23")
    assert message["headers"] == {"x-lookout-client-sampled": "1"}
    assert message["payload"] == {"message": "boom"}


@pytest.mark.parametrize(
    ("path", "signal"),
    [
        ("/api/v1/ingest", "error"),
        ("/api/v1/errors", "error"),
        ("/api/ingest/trace/otlp", "otlp"),
        ("/api/ingest/log", "log"),
        ("/api/ingest/rum", "rum"),
        ("/api/ingest/cron", "cron"),
    ],
)
def test_every_route_family_routes_to_its_signal(door, put_key, aws, path, signal):
    put_key(KEY)
    body = {"entries": [{"message": "a"}]} if signal == "log" else {"resourceSpans": []}
    answer = door.post(path, body, x_api_key=KEY)
    assert answer.status_code == 202, answer.body
    (message,) = drain_queue(aws.queue_url)
    assert (message["signal"], message["path"]) == (signal, path)
    if signal == "cron":
        assert answer.json_body["check_in_id"]


def test_ndjson_lines_are_each_an_event(door, put_key, aws):
    put_key(KEY)
    lines = b"\n".join(json.dumps({"n": i}).encode() for i in range(3))
    answer = door.request(
        "POST", "/api/ingest/event", lines, {"content-type": "application/x-ndjson", "x-api-key": KEY}
    )
    assert answer.status_code == 202, answer.body
    assert len(answer.json_body["event_ids"]) == 3
    assert sorted(m["payload"]["n"] for m in drain_queue(aws.queue_url)) == [0, 1, 2]


def test_text_plain_json_body_is_accepted(door, put_key, aws):
    put_key(KEY)
    answer = door.request("POST", "/api/ingest", b'{"message": "t"}', {"content-type": "text/plain", "x-api-key": KEY})
    assert answer.status_code == 202, answer.body
    assert drain_queue(aws.queue_url)[0]["payload"] == {"message": "t"}


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_api_key"),
        ({"x-api-key": "nope"}, 401, "invalid_api_key"),
    ],
)
def test_key_refusals(door, put_key, aws, headers, status, code):
    put_key(KEY)
    answer = door.request("POST", "/api/ingest", b'{"message": "m"}', {**JSON, **headers})
    assert error_of(answer)[0] == status
    assert drain_queue(aws.queue_url) == []


def test_allowlist_reads_the_doors_source_ip_never_x_forwarded_for(door, put_key, aws):
    put_key(KEY, ip_allowlist=["203.0.113.0/24"])
    headers = {**JSON, "x-api-key": KEY, "x-forwarded-for": "203.0.113.9"}
    assert error_of(door.request("POST", "/api/ingest", b"{}", headers, source_ip="198.51.100.1")) == (
        403,
        "ip_not_allowed",
    )
    assert door.request("POST", "/api/ingest", b"{}", headers, source_ip="203.0.113.77").status_code == 202


@pytest.mark.parametrize(
    "path",
    ["/api/ingest/nope", "/api/ingest/a/b", "/api/ingest/a/b/c", "/nothing/here", "/api/ingest/", "//api/ingest"],
)
def test_unknown_paths_are_the_contracts_json_404(door, aws, path):
    answer = door.request("POST", path, b"{}", {**JSON, "x-api-key": KEY})
    assert error_of(answer) == (404, "not_found")


def test_a_method_a_route_does_not_take_is_404_json(door, aws):
    assert error_of(door.request("GET", "/api/ingest", None, {})) == (404, "not_found")


def test_bad_json_is_400_and_rate_limit_429_has_retry_after(door, put_key, aws):
    put_key(KEY, rate_limit_per_minute=1)
    assert error_of(door.post("/api/ingest", b"{nope", x_api_key=KEY)) == (400, "invalid_body")
    assert door.post("/api/ingest", {"n": 1}, x_api_key=KEY).status_code == 202
    limited = door.post("/api/ingest", {"n": 2}, x_api_key=KEY)
    assert error_of(limited) == (429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_idempotency_key_replays_the_same_202(door, put_key, aws):
    put_key(KEY)
    first = door.post("/api/ingest/job", {"job": "j"}, x_api_key=KEY, idempotency_key="once")
    again = door.post("/api/ingest/job", {"job": "j"}, x_api_key=KEY, idempotency_key="once")
    assert first.status_code == again.status_code == 202
    assert first.json_body == again.json_body
    assert len(drain_queue(aws.queue_url)) == 1


def test_preflight_and_cors_on_answers(door, put_key, aws):
    put_key(KEY)
    origin = "https://shop.example"
    preflight = door.request(
        "OPTIONS",
        "/api/ingest/rum",
        None,
        {"origin": origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert preflight.headers["access-control-max-age"] == "600"
    accepted = door.post("/api/ingest/rum", {"api_key": KEY}, origin=origin)
    assert accepted.status_code == 202
    assert accepted.headers["access-control-allow-origin"] == origin


def test_a_beacon_with_cookies_is_accepted_and_cookies_are_not_queued(door, put_key, aws):
    """sendBeacon sends credentials: the page's cookies come along (in `cookies` on 2.0 events)."""
    put_key(KEY)
    answer = door.post("/api/ingest/rum", {"api_key": KEY, "page": "/"}, cookie="session=s3cr3t; theme=dark")
    assert answer.status_code == 202, answer.body
    (message,) = drain_queue(aws.queue_url)
    assert "s3cr3t" not in json.dumps(message)


COMPRESS = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.mark.parametrize("encoding", sorted(COMPRESS))
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-ndjson", None])
def test_compressed_bodies_arrive_whole_whatever_their_content_type(door, put_key, aws, encoding, content_type):
    """On REST only because every media type is binary to the API (app.api.binary_types is what
    `chalice deploy`/`package` give it): otherwise API Gateway reads gzip as UTF-8 text and mangles it."""
    put_key(KEY)
    raw = COMPRESS[encoding](json.dumps({"message": "squeezed", "pad": "x" * 300}).encode())
    headers = {"content-encoding": encoding, "x-api-key": KEY} | (
        {"content-type": content_type} if content_type else {}
    )
    answer = door.request("POST", "/api/ingest", raw, headers)
    assert answer.status_code == 202, answer.body
    assert drain_queue(aws.queue_url)[0]["payload"] == {"message": "squeezed", "pad": "x" * 300}


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/html, */*;q=0.1", None])
def test_json_answers_are_text_whatever_the_accept_header(door, put_key, aws, accept):
    """A base64 answer is decoded by API Gateway REST only for some Accept values; text passes
    through for all of them, the Go OpenTelemetry Collector's missing Accept included."""
    put_key(KEY)
    for body, status in ((b'{"message": "m"}', 202), (b"{broken", 400)):
        headers = {**JSON, "x-api-key": KEY} | ({"accept": accept} if accept else {})
        answer = door.request("POST", "/api/ingest", body, headers)
        assert answer.status_code == status
        assert answer.raw["isBase64Encoded"] is False
        assert json.loads(answer.raw["body"])


def test_health(door):
    answer = door.request("GET", "/health", None, {})
    assert (answer.status_code, answer.json_body) == (200, {"status": "ok"})


# --- payload 2.0 specifics -----------------------------------------------------------------


def test_http_api_named_stage_prefix_is_not_part_of_the_route(put_key, aws):
    put_key(KEY)
    answer = DoorClient("http").request("POST", "/api/ingest/feedback", b"{}", {**JSON, "x-api-key": KEY}, stage="prod")
    assert answer.status_code == 202, answer.body
    assert drain_queue(aws.queue_url)[0]["path"] == "/api/ingest/feedback"


@pytest.mark.parametrize(
    "event",
    [
        None,
        "POST /api/ingest",
        {},
        {"version": "2.0"},
        {"version": "2.0", "rawPath": "/api/ingest", "requestContext": {"http": {}}},
        {"version": "2.0", "rawPath": "api/ingest", "requestContext": {"http": {"method": "POST"}}},
        {"version": "2.0", "rawPath": "/api/ingest", "headers": ["x"], "requestContext": {"http": {"method": "POST"}}},
        {
            "version": "2.0",
            "rawPath": "/api/ingest",
            "rawQueryString": 5,
            "requestContext": {"http": {"method": "POST"}},
        },
        {"requestContext": {"httpMethod": "POST", "resourcePath": "/api/ingest"}, "headers": ["x"]},
    ],
)
def test_a_malformed_event_is_json_400_never_a_traceback(event):
    """(A body that is not base64 is the door's own 400: tests/functional/test_fuzz.py.)"""
    import app as app_module

    raw = app_module.app(event, LambdaContext("api_handler"))
    assert raw["statusCode"] == 400
    body = json.loads(raw["body"])
    assert set(body) == {"error", "message"} and body["error"] == "invalid_request"


def test_v2_event_becomes_the_rest_shape_chalice_reads():
    event = http_api_event(
        "/api/ingest/log",
        b"{}",
        {"Content-Type": "application/json", "X-Custom": "a,b", "Cookie": "a=1; b=2"},
        source_ip="2001:db8::9",
        stage="v1",
        query="x=1&x=2&y=",
    )
    rest = rest_event_from_v2(event)
    assert rest["path"] == "/api/ingest/log" and rest["httpMethod"] == "POST"
    assert rest["requestContext"]["identity"]["sourceIp"] == "2001:db8::9"
    assert rest["headers"]["x-custom"] == "a,b" and rest["multiValueHeaders"]["x-custom"] == ["a", "b"]
    assert rest["headers"]["cookie"] == "a=1; b=2"
    assert rest["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
    assert rest["body"] == b"{}" and rest["isBase64Encoded"] is False


def test_rest_answer_becomes_a_v2_response_with_cookies_apart():
    answer = to_v2_response(
        {
            "statusCode": 202,
            "headers": {"Content-Type": "application/json"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "Vary": ["Origin", "Accept"]},
            "body": "{}",
        }
    )
    assert answer == {
        "statusCode": 202,
        "headers": {"Content-Type": "application/json", "Vary": "Origin,Accept"},
        "cookies": ["a=1", "b=2"],
        "body": "{}",
        "isBase64Encoded": False,
    }


def test_route_table_prefers_literal_segments_and_decodes_captures():
    table = RouteTable(["/api/ingest/{signal}", "/api/ingest/log", "/api/ingest/{signal}/{rest}", "/health", "/"])
    assert table.match("/api/ingest/log") == ("/api/ingest/log", {})
    assert table.match("/api/ingest/log/") is None and table.match("//api/ingest/log") is None
    assert table.match("/api/ingest/m%C3%A9tric") == ("/api/ingest/{signal}", {"signal": "métric"})
    assert table.match("/api/ingest/a/b") == ("/api/ingest/{signal}/{rest}", {"signal": "a", "rest": "b"})
    assert table.match("/") == ("/", {})
    assert table.match("/api/ingest/a/b/c") is None and table.match("/healthz") is None
