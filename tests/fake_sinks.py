"""Strict in-repo stand-ins for Loki and an OTLP/HTTP backend (Tempo), which cannot be installed here.

Each checks its request against the documented format and answers as the real server
does: Loki's push API (https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs)
answers 204, or 400 with a plain-text reason; OTLP/HTTP
(https://opentelemetry.io/docs/specs/otlp/#otlphttp) answers 200 with an Export*ServiceResponse.
A test can force a status (`down`) to play an outage.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fake_lookout import LoopbackFake, serve

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
HEX = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
OTLP_ROUTES = {"/v1/traces": "resourceSpans", "/v1/logs": "resourceLogs", "/v1/metrics": "resourceMetrics"}


class Refused(Exception):
    """The request breaks the documented format: 400 with this text."""


@dataclass
class StrictServer(LoopbackFake):
    """A keep-alive HTTP server; subclasses check a request in `check` and return its answer body."""

    down: int | None = None  # answer this status to everything (an outage)
    refusals: int = 0  # requests answered with `down`
    requests: list[dict[str, Any]] = field(default_factory=list)  # the accepted bodies, decoded
    headers: list[dict[str, str]] = field(default_factory=list)

    def check(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        raise NotImplementedError

    def start(self) -> StrictServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if fake.down:
                    status, body = fake.down, b"unavailable"
                    fake.refusals += 1
                else:
                    try:
                        status, body = fake.check(self.path, headers, raw)
                        fake.headers.append(headers)
                    except Refused as exc:
                        status, body = 400, str(exc).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve(Handler)
        return self


def _json_body(headers: dict[str, str], raw: bytes, gzipped: bool) -> Any:
    if not headers.get("content-type", "").startswith("application/json"):
        raise Refused(f"unsupported content type {headers.get('content-type')!r}")
    if gzipped:
        if headers.get("content-encoding") != "gzip":
            raise Refused("expected Content-Encoding: gzip")
        raw = gzip.decompress(raw)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise Refused(f"invalid JSON: {exc}") from None


class StrictLoki(StrictServer):
    """`POST /loki/api/v1/push`, JSON streams, gzip; label names and nanosecond strings checked."""

    def check(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        if path != "/loki/api/v1/push":
            return 404, b"404 page not found"
        body = _json_body(headers, raw, gzipped=True)
        streams = body.get("streams") if isinstance(body, dict) else None
        if not isinstance(streams, list) or not streams:
            raise Refused("streams must be a non-empty array")
        for stream in streams:
            labels = stream.get("stream")
            if not isinstance(labels, dict) or not labels:
                raise Refused("each stream needs at least one label")
            for name, value in labels.items():
                if not LABEL_NAME.fullmatch(name) or not isinstance(value, str):
                    raise Refused(f"invalid label {name}={value!r}")
            values = stream.get("values")
            if not isinstance(values, list) or not values:
                raise Refused("each stream needs values")
            for entry in values:
                if not (isinstance(entry, list) and len(entry) in (2, 3) and isinstance(entry[1], str)):
                    raise Refused(f'a value is ["<ns>", "<line>"], got {entry!r}')
                if not (isinstance(entry[0], str) and entry[0].isdigit() and len(entry[0]) >= 19):
                    raise Refused(f"timestamps are nanosecond strings, got {entry[0]!r}")
        self.requests.append(body)
        return 204, b""

    def lines(self) -> list[tuple[dict[str, str], str]]:
        return [(s["stream"], v[1]) for body in self.requests for s in body["streams"] for v in s["values"]]


class StrictOtlp(StrictServer):
    """OTLP/HTTP JSON: the export request of the path, hex ids of the right length."""

    def check(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        key = OTLP_ROUTES.get(path)
        if key is None:
            return 404, b"not found"
        body = _json_body(headers, raw, gzipped=False)
        if not isinstance(body, dict) or set(body) != {key} or not isinstance(body[key], list):
            raise Refused(f"{path} takes {{{key!r}: [...]}}")
        _check_ids(body)
        self.requests.append({"path": path, **body})
        return 200, b"{}"


def _check_ids(value: Any) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            if name in HEX and item and not re.fullmatch(f"[0-9a-f]{{{HEX[name]}}}", str(item)):
                raise Refused(f"{name} must be {HEX[name]} hex digits, got {item!r}")
            _check_ids(item)
    elif isinstance(value, list):
        for item in value:
            _check_ids(item)
