"""The edge's HTTP routes (CONTRACT §3, §9, §10) as a Chalice blueprint: the one route table.

Each ingest route builds its door for the request (chalicelib/edge/doors/) and hands it
to `serve`, which does the rest the same way for every door. A new door is its module
plus its route lines here. An unknown `/api/ingest/...` word is the SDK door's JSON 404.
"""

from __future__ import annotations

import base64
import binascii

from chalice import Blueprint, Response

from chalicelib.contract.signals import SIGNALS, sdk_route_signal
from chalicelib.edge import cors
from chalicelib.edge.doors import IngestRequest
from chalicelib.edge.doors.firehose import FirehoseDoor
from chalicelib.edge.doors.otlp import OtlpDoor
from chalicelib.edge.doors.sdk import SdkDoor
from chalicelib.edge.remote_config import answer_request as config_answer
from chalicelib.edge.serve import json_response, serve
from chalicelib.runtime import deadline
from chalicelib.runtime.config import settings

edge = Blueprint(__name__)

INGEST_METHODS = ["POST", "OPTIONS"]
# Accept every content type at the router: the doors answer 415 with the contract's JSON error.
ANY_CONTENT = ["*/*"]
ERROR = SIGNALS["error"]
OTLP = SIGNALS["otlp"]


def current_request(path: str) -> IngestRequest:
    """The current HTTP request as the doors see it; `path` is the route's, for the message."""
    request = edge.current_request
    body, unreadable = event_body(request.to_original_event())
    return IngestRequest(
        path=path,
        headers=request.headers,
        body=body,
        client_ip=(request.context.get("identity") or {}).get("sourceIp"),
        method=request.method,
        unreadable=unreadable,
    )


def event_body(event: dict) -> tuple[bytes, str | None]:
    """The body as bytes and, when it cannot be read, why (the door answers 400 in its terms).

    Base64 strictly (Chalice's own decoding skips stray characters); text as UTF-8.
    """
    body = event.get("body")
    if isinstance(body, bytes):  # the gateway decoded a payload 2.0 body already
        return body, None
    if not body:
        return b"", None
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True), None
        except (binascii.Error, ValueError):
            return b"", "the request body is marked base64 but is not valid base64"
    try:
        return body.encode("utf-8"), None
    except UnicodeEncodeError:
        return b"", "the request body is not valid UTF-8 text"


@edge.route("/health", methods=["GET"])
def health() -> Response:
    return json_response(200, {"status": "ok"})


@edge.route("/api/config", methods=["GET"])
def remote_config() -> Response:
    """The SDK's remote config, proxied to Lookout and cached (a stale copy beats an error)."""
    headers = edge.current_request.headers
    with deadline.request_budget(
        settings().request_budget_seconds
    ):  # the key lookup and Lookout's answer, within the budget
        status, body, extra = config_answer(headers)
    answer_headers = {**extra, **cors.response_headers(headers.get("origin"))}
    return json_response(status, body.decode("utf-8", "replace"), answer_headers)


# --- The SDK door (doors/sdk.py) -------------------------------------------------------------


@edge.route("/api/ingest", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_error() -> Response:
    return serve(SdkDoor(current_request("/api/ingest"), ERROR))


@edge.route("/api/v1/ingest", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_v1() -> Response:
    return serve(SdkDoor(current_request("/api/v1/ingest"), ERROR))


@edge.route("/api/v1/errors", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_v1_errors() -> Response:
    return serve(SdkDoor(current_request("/api/v1/errors"), ERROR))


@edge.route("/api/ingest/trace/otlp", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_otlp() -> Response:
    return serve(SdkDoor(current_request("/api/ingest/trace/otlp"), OTLP))


@edge.route("/api/ingest/{signal}", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_signal(signal: str) -> Response:
    return serve(SdkDoor(current_request(f"/api/ingest/{signal}"), sdk_route_signal(signal)))


@edge.route("/api/ingest/{signal}/{rest}", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_unknown_nested(signal: str, rest: str) -> Response:
    """Unknown nested paths get the contract's JSON 404 instead of API Gateway's 403 (deeper
    ones too, through the stack's MISSING_AUTHENTICATION_TOKEN gateway response)."""
    return serve(SdkDoor(current_request(f"/api/ingest/{signal}/{rest}"), None))


# --- The Firehose door (doors/firehose.py, CONTRACT §9, docs/firehose.md) --------------------


@edge.route("/api/firehose/{signal}", methods=["POST"], content_types=ANY_CONTENT)
def firehose_delivery(signal: str) -> Response:
    return serve(FirehoseDoor(current_request(f"/api/firehose/{signal}"), signal))


# --- The OTLP/HTTP door (doors/otlp.py, CONTRACT §10, docs/otlp.md) --------------------------


@edge.route("/v1/traces", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def otlp_traces() -> Response:
    return serve(OtlpDoor(current_request("/v1/traces")))


@edge.route("/v1/logs", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def otlp_logs() -> Response:
    return serve(OtlpDoor(current_request("/v1/logs")))


@edge.route("/v1/metrics", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def otlp_metrics() -> Response:
    return serve(OtlpDoor(current_request("/v1/metrics")))
