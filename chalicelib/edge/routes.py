"""The edge's HTTP routes (CONTRACT §3) as a Chalice blueprint: each route decides its signal once.

A route resolves its `Signal` from the registry and hands `pipeline.handle` an
`IngestRequest`; an unknown `/api/ingest/...` word is the contract's JSON 404.
Other doors (OTLP `/v1/*`, Firehose `/api/firehose/{signal}`) add their routes beside
these, call their decoder, then `pipeline.accept`, and answer through `answer`.
"""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.signals import SIGNALS, Signal, sdk_route_signal
from chalicelib.edge import cors, pipeline
from chalicelib.edge.decoders import firehose
from chalicelib.runtime.observability import logger, traced

edge = Blueprint(__name__)

INGEST_METHODS = ["POST", "OPTIONS"]
# Accept every content type at the router: the decoders answer 415 with the contract's JSON error.
ANY_CONTENT = ["*/*"]
ERROR = SIGNALS["error"]
OTLP = SIGNALS["otlp"]


def json_response(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def answer(reply: pipeline.Reply) -> Response:
    """A pipeline reply as a JSON response, with the CORS headers every answer to an `Origin` carries."""
    origin = edge.current_request.headers.get("origin")
    return json_response(reply.status, reply.body, {**reply.headers, **cors.response_headers(origin)})


def current_ingest_request(path: str) -> pipeline.IngestRequest:
    """The current HTTP request as the pipeline sees it; `path` is the route's, for the message."""
    request = edge.current_request
    return pipeline.IngestRequest(
        path=path,
        headers=request.headers,
        body=request.raw_body or b"",
        client_ip=(request.context.get("identity") or {}).get("sourceIp"),
    )


def preflight() -> Response:
    """The CORS preflight: no key, nothing remote."""
    headers = edge.current_request.headers
    allowed = cors.preflight_headers(headers.get("origin"), headers.get("access-control-request-headers"))
    return Response(body="", status_code=204, headers=allowed)


def _ingest(path: str, signal: Signal | None) -> Response:
    """One SDK route: preflight, the contract's 404, or the ingest path."""
    if edge.current_request.method == "OPTIONS":
        return preflight()
    if signal is None:
        return answer(pipeline.Reply(404, {"error": "not_found", "message": f"no ingest route at {path}"}))
    try:
        with traced("ingest"):
            reply = pipeline.handle(current_ingest_request(path), signal)
    except Exception:
        logger().exception("ingest failed unexpectedly")
        reply = pipeline.Reply(500, {"error": "internal_error", "message": "the edge failed; retry shortly"})
    return answer(reply)


@edge.route("/health", methods=["GET"])
def health() -> Response:
    return json_response(200, {"status": "ok"})


@edge.route("/api/config", methods=["GET"])
def remote_config() -> Response:
    """The SDK's remote config, proxied to Lookout and cached (a stale copy beats an error)."""
    request = edge.current_request
    status, body, headers = pipeline.config_request(request.headers)
    return Response(
        body=body.decode("utf-8", "replace"),
        status_code=status,
        headers={"Content-Type": "application/json", **headers, **cors.response_headers(request.headers.get("origin"))},
    )


@edge.route("/api/ingest", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_error() -> Response:
    return _ingest("/api/ingest", ERROR)


@edge.route("/api/v1/ingest", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_v1() -> Response:
    return _ingest("/api/v1/ingest", ERROR)


@edge.route("/api/v1/errors", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_v1_errors() -> Response:
    return _ingest("/api/v1/errors", ERROR)


@edge.route("/api/ingest/trace/otlp", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_otlp() -> Response:
    return _ingest("/api/ingest/trace/otlp", OTLP)


@edge.route("/api/ingest/{signal}", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_signal(signal: str) -> Response:
    return _ingest(f"/api/ingest/{signal}", sdk_route_signal(signal))


@edge.route("/api/ingest/{signal}/{rest}", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def ingest_unknown_nested(signal: str, rest: str) -> Response:
    """Unknown nested paths get the contract's JSON 404 instead of API Gateway's 403 (deeper
    ones too, through the stack's MISSING_AUTHENTICATION_TOKEN gateway response)."""
    return _ingest(f"/api/ingest/{signal}/{rest}", None)


@edge.route("/api/firehose/{signal}", methods=["POST"], content_types=ANY_CONTENT)
def firehose_delivery(signal: str) -> Response:
    """Amazon Data Firehose HTTP endpoint deliveries (CONTRACT §9, docs/firehose.md)."""
    request = current_ingest_request(f"/api/firehose/{signal}")
    try:
        with traced("firehose"):
            reply = pipeline.handle_delivery(request, signal)
    except Exception:
        logger().exception("firehose delivery failed unexpectedly")
        failure = EdgeError(500, "internal_error", "the edge failed; retry shortly")
        request_id = firehose.header_request_id(request.headers)
        reply = pipeline.Reply(500, firehose.error_body(request_id, failure))
    return json_response(reply.status, reply.body, reply.headers)
