"""The edge over local HTTP: Chalice's local server, held to the contract the deployed API keeps.

Requests reach the app as a Lambda function URL (the recommended front door, docs/deploy.md)
hands them over: payload 2.0 events through `app`'s own front door.

Chalice's dev server is close to API Gateway but not close enough for an edge whose
clients only understand the contract: it logs query strings (`?api_key=...`) verbatim,
answers 501/431/414 with HTML, matches `//api/ingest` and a
trailing slash that API Gateway refuses, reads a chunked body as empty, prints a
traceback whenever a client hangs up, and reports every client as 127.0.0.1. This
module fixes each of those in the local server only; nothing here runs deployed.

It also holds requests to what AWS enforces before and after the code runs, as a function
URL answers it (docs/local-stack.md, "Lambda's limits"): the 6 MB event and response of a
synchronous invocation, the function's timeout (never over API Gateway's 29 s), repeated
headers joined with commas, a text body that is not UTF-8 handed over base64.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

from chalice.local import ChaliceRequestHandler, ThreadedHTTPServer

LOCAL_SOURCE_IP = "127.0.0.1"
# Lambda's synchronous Invoke: the event JSON (request) and the function's answer (response).
MAX_EVENT_BYTES = 6 * 1024 * 1024
MAX_RESULT_BYTES = 6 * 1024 * 1024 + 100
# A body this large can never fit the event: refused before it is read.
MAX_BODY_BYTES = MAX_EVENT_BYTES
# API Gateway's integration timeout (REST 29 s, HTTP API 30 s): the function's own is capped by it.
INTEGRATION_TIMEOUT_SECONDS = 29.0
CHALICE_CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"
# A function URL's answers when Lambda refuses the event, or the invocation fails (error, timeout, too large).
EVENT_TOO_LARGE = {"Message": f"Request must be smaller than {MAX_EVENT_BYTES} bytes for the InvokeFunction operation"}
INVOCATION_FAILED = b"Internal Server Error"
_QUERY = re.compile(r"\?[^\s\"']*")
# What a status means when this server (not the app) answers it; the contract's error words.
_ERROR_WORDS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
    501: "not_implemented",
    505: "http_version_not_supported",
}
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def redact_query(text: str) -> str:
    """Any query string in a log line becomes `?…`: it may carry `api_key=...`."""
    return _QUERY.sub("?…", text)


def not_found_body(path: str) -> dict[str, str]:
    """What the deployed API's MISSING_AUTHENTICATION_TOKEN gateway response answers."""
    return {"error": "not_found", "message": f"no ingest route at {path}"}


def is_gateway_path(path: str) -> bool:
    """False for paths API Gateway does not route: empty segments (`//api/ingest`) or a
    trailing slash (`/api/ingest/`), which it answers 403 (the stack maps that to JSON 404)."""
    return path == "/" or (path.startswith("/") and "//" not in path and not path.endswith("/"))


def function_timeout(config: Path = CHALICE_CONFIG) -> float:
    """The edge function's timeout as deployed (`api_handler`'s `lambda_timeout`), at most the
    integration timeout of the strictest API Gateway door."""
    functions = json.loads(config.read_text()).get("lambda_functions", {})
    return min(float(functions.get("api_handler", {}).get("lambda_timeout", 3)), INTEGRATION_TIMEOUT_SECONDS)


def json_size(document: Any) -> int:
    """Bytes of `document` as the JSON payload Lambda counts (UTF-8, no escapes for non-ASCII)."""
    return len(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode())


def joined_headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Header fields as the 2.0 doors hand them over: a repeated name once, its values joined by commas
    (API Gateway HTTP API and function URLs do; the first spelling of the name is kept)."""
    joined: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for name, value in pairs:
        key = spelled.setdefault(name.lower(), name)
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


class BodyTooLarge(ValueError):
    """The request body is over MAX_BODY_BYTES."""


class BadFraming(ValueError):
    """A body whose length or chunk framing does not parse."""


def read_chunked(stream: Any, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body of a `Transfer-Encoding: chunked` request (RFC 9112 §7.1), trailers skipped."""
    body = bytearray()
    while True:
        size_line = stream.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadFraming("chunk size is not hexadecimal") from None
        if size == 0:
            break
        if size < 0 or len(body) + size > limit:
            raise BodyTooLarge
        chunk = stream.read(size)
        if len(chunk) != size:
            raise BadFraming("the body ended inside a chunk")
        body += chunk
        stream.readline(1024)  # the CRLF after the chunk
    while stream.readline(8192) not in (b"\r\n", b"\n", b""):
        pass  # trailer fields
    return bytes(body)


class EdgeRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler with the contract's answers at the HTTP layer.

    `source_ip_header` (None unless the local stack opts in) names a request header whose
    value becomes `requestContext.identity.sourceIp`, so allowlists can be tried locally.
    """

    source_ip_header: str | None = None
    timeout_seconds: float = 10.0  # make_handler sets the deployed function's
    server_version = "lookout-edge-local"
    sys_version = ""

    # -- answers the server itself gives -------------------------------------------------------
    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error http.server raises on its own (400, 414, 431, 501, ...) as contract JSON."""
        self.log_error("code %d, message %s", code, message)
        word = _ERROR_WORDS.get(code, "bad_request" if code < 500 else "internal_error")
        text = message or self.responses.get(code, ("",))[0] or word
        self._send_json(code, {"error": word, "message": text}, close=True)

    def _send_json(self, code: int, body: dict[str, Any], close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(data)

    # -- logging -------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} - [{self.log_date_time_string()}] {redact_query(format % args)}\n")

    # -- requests ------------------------------------------------------------------------------
    def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
        pairs = [(name, value) for name, value in self.headers.items() if name.lower() != "transfer-encoding"]
        headers: dict[str, Any] = joined_headers(pairs)
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            body = read_chunked(self.rfile)
            headers = {name: value for name, value in headers.items() if name.lower() != "content-length"}
            headers["Content-Length"] = str(len(body))
            return headers, body or None
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise BadFraming("Content-Length is not a number") from None
        if length > MAX_BODY_BYTES:
            raise BodyTooLarge
        return headers, (self.rfile.read(length) if length > 0 else None)

    def _generic_handle(self) -> None:
        # The path as sent: http.server collapses a leading "//" in self.path (CVE-2021-28861).
        path = self.requestline.split(" ")[1].split("?", 1)[0]
        try:
            headers, body = self._parse_payload()
        except BodyTooLarge:
            self._send_json(413, EVENT_TOO_LARGE, close=True)
            return
        except BadFraming as exc:
            self._send_json(400, {"error": "bad_request", "message": str(exc)}, close=True)
            return
        if not is_gateway_path(path):
            self._send_json(404, not_found_body(path))
            return
        try:
            headers, source_ip = self._take_source_ip(headers)
        except ValueError:
            message = f"{self.source_ip_header} must be an IPv4 or IPv6 address"
            self._send_json(400, {"error": "bad_request", "message": message})
            return
        event = self._function_url_event(path, headers, body, source_ip)
        if json_size(event) > MAX_EVENT_BYTES:  # Lambda refuses it: the function never runs
            self._send_json(413, EVENT_TOO_LARGE)
            return
        response = self._invoke(event)
        if response is None or json_size(response) > MAX_RESULT_BYTES:
            self._send_invocation_failed()
            return
        self._send_v2_response(response)

    def _function_url_event(
        self, path: str, headers: dict[str, Any], body: bytes | None, source_ip: str | None
    ) -> dict[str, Any]:
        """The event a Lambda function URL (the recommended front door) hands the app: payload 2.0,
        base64 bodies, the client's address as `requestContext.http.sourceIp`."""
        from edgectl.lambda_shim import function_url_event

        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        return function_url_event(
            path, body, headers, source_ip=source_ip or LOCAL_SOURCE_IP, method=self.command, query=query
        )

    def _invoke(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The app's answer to `event`, or None when it raised or ran past the function's timeout
        (Lambda then stops it; here the thread is left to finish, its answer dropped). The app's
        front door answers unknown routes and methods with the deployed JSON 404."""
        from edgectl.lambda_shim import LambdaContext

        context = LambdaContext("api_handler", self.timeout_seconds, 512)
        answer: list[dict[str, Any]] = []

        def run() -> None:
            try:
                answer.append(self.local_gateway._app_object(event, context))
            except Exception as exc:  # an unhandled error: Lambda reports a failed invocation
                self.log_error("the invocation failed: %s", type(exc).__name__)

        worker = threading.Thread(target=run, name="invocation", daemon=True)
        worker.start()
        worker.join(self.timeout_seconds)
        if worker.is_alive():
            self.log_error("the invocation ran past the function's %gs timeout", self.timeout_seconds)
        return answer[0] if answer else None

    def _send_invocation_failed(self) -> None:
        """What a function URL answers when the invocation fails (error, timeout, answer over 6 MB)."""
        self.send_response(502)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(INVOCATION_FAILED)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(INVOCATION_FAILED)

    def _send_v2_response(self, response: dict[str, Any]) -> None:
        headers: dict[str, Any] = dict(response.get("headers") or {})
        if response.get("cookies"):
            headers["Set-Cookie"] = list(response["cookies"])
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body)
        self._send_http_response(response["statusCode"], headers, body)

    def _take_source_ip(self, headers: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """(headers without the opt-in source-IP header, its address); ValueError when it is not an IP."""
        if not self.source_ip_header:
            return headers, None
        wanted = self.source_ip_header.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
        if value is None:
            return headers, None
        rest = {k: v for k, v in headers.items() if k.lower() != wanted}
        return rest, str(ipaddress.ip_address(value.strip()))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle


class EdgeHTTPServer(ThreadedHTTPServer):
    """A client that gives up (closed socket, reset) is not an error worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _CLIENT_GONE):
            return
        super().handle_error(request, client_address)


def make_handler(source_ip_header: str | None) -> type[EdgeRequestHandler]:
    """The handler class, with the deployed function's timeout and the local-only source-IP header
    when the stack opts in."""
    attributes = {"source_ip_header": source_ip_header, "timeout_seconds": function_timeout()}
    return type("EdgeHandler", (EdgeRequestHandler,), attributes)
