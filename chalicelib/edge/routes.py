"""The edge's HTTP routes (CONTRACT §3) as a Chalice blueprint: each route decides its signal once.

A route resolves its `Signal` from the registry and hands `pipeline.handle` an
`IngestRequest`; an unknown `/api/ingest/...` word is the contract's JSON 404.
Other doors (OTLP `/v1/*`, Firehose `/api/firehose/{signal}`) add their routes beside
these, call their decoder, then `pipeline.accept`, and answer through `answer` (OTLP in
its own encodings: protobuf or JSON, `google.rpc.Status` errors).
"""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.signals import SIGNALS, Signal, sdk_route_signal
from chalicelib.edge import auth, cors, pipeline
from chalicelib.edge.decoders import firehose, otlp
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


# --- OTLP/HTTP (CONTRACT §10, docs/otlp.md) -------------------------------------------------


@edge.route("/v1/traces", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def otlp_traces() -> Response:
    return _otlp("/v1/traces")


@edge.route("/v1/logs", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def otlp_logs() -> Response:
    return _otlp("/v1/logs")


@edge.route("/v1/metrics", methods=INGEST_METHODS, content_types=ANY_CONTENT)
def otlp_metrics() -> Response:
    return _otlp("/v1/metrics")


def _otlp(path: str) -> Response:
    """One OTLP/HTTP export: 200 with the Export*ServiceResponse once its events are in SQS,
    or a google.rpc.Status; both in the request's encoding."""
    request = edge.current_request
    if request.method == "OPTIONS":
        return preflight()
    kind = otlp.KINDS[path]
    signal = SIGNALS[kind.signal]
    answer_type = otlp.answer_type(request.headers.get("content-type"))
    headers = {"Content-Type": answer_type, **cors.response_headers(request.headers.get("origin"))}
    try:
        with traced("otlp"):
            status, body = 200, _export(current_ingest_request(path), kind, signal, answer_type)
    except EdgeError as error:
        headers.update(pipeline.refusal(signal, error).headers)
        status, body = error.status, otlp.status_body(error, answer_type)
    except Exception:
        logger().exception("otlp ingest failed unexpectedly")
        status = 500
        body = otlp.status_body(EdgeError(500, "internal_error", "the edge failed; retry shortly"), answer_type)
    # Protobuf leaves base64-encoded as a binary type; JSON as text (see FrontDoorApp).
    return Response(
        body=body if answer_type == otlp.PROTOBUF else body.decode("utf-8"), status_code=status, headers=headers
    )


def _export(request: pipeline.IngestRequest, kind: otlp.OtlpKind, signal: Signal, answer_type: str) -> bytes:
    """Decode, then accept the events (all of them durably, or an EdgeError); the success body.

    A request with no items to store is still checked (key, billing, allowlist, flag):
    the spec answers it with success, and a bad key must hear 401 all the same.
    """
    headers = request.headers
    decoded = otlp.decode(kind, request.body, headers.get("content-type"), headers.get("content-encoding"))
    if decoded.events:
        pipeline.accept(request, signal, decoded.events, many=len(decoded.events) > 1)
    else:
        pipeline.authenticate(request, signal, auth.extract_api_key(headers, None))
    return otlp.success_body(kind, answer_type, decoded.rejected, decoded.reason)
