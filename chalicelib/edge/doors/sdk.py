"""The Lookout SDKs' door (CONTRACT §3): one JSON object, or NDJSON with one event per line.

`application/json` (and `text/plain` that parses as JSON, as `sendBeacon` sends it)
is one event; `application/x-ndjson` is one event per non-blank line, answered with
`event_ids`. Gzip/deflate and the size limits are `bodies`' job. Answers are the
contract's JSON, with the CORS headers every answer to an `Origin` carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalice import Response

from chalicelib.contract.errors import EdgeError, bad_request, unsupported
from chalicelib.contract.signals import Signal
from chalicelib.edge import cors
from chalicelib.edge.bodies import check_received_size, decode_content, media_type, ndjson_events, parse_json
from chalicelib.edge.doors import Batch, Event, IngestRequest, idempotency_header
from chalicelib.edge.serve import json_response

JSON_TYPES = frozenset({"application/json", "text/plain"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonlines"})


@dataclass(frozen=True)
class SdkBody:
    events: list[Event]
    many: bool  # NDJSON: the 202 lists `event_ids`


def decode(raw: bytes, content_type: str | None, content_encoding: str | None) -> SdkBody:
    """Check the content type, decode the encoding, parse; refuse with the contract's codes."""
    media = media_type(content_type)
    if media not in JSON_TYPES and media not in NDJSON_TYPES:
        raise unsupported(f"content type {media!r} is not accepted; send application/json or application/x-ndjson")
    check_received_size(raw)
    data = decode_content(raw, content_encoding)
    if not data.strip():
        raise bad_request("the request body is empty")
    if media in NDJSON_TYPES:
        events = ndjson_events(data)
        if not events:
            raise bad_request("the NDJSON body has no events")
        return SdkBody(events=events, many=True)
    return SdkBody(events=[Event(parse_json(data), len(data))], many=False)


class SdkDoor:
    """`/api/ingest...`: 202 with the contract's body once every event is in SQS."""

    segment = "ingest"

    def __init__(self, request: IngestRequest, signal: Signal | None):
        self.request = request
        self.signal = signal  # None: no ingest route at this path (the contract's 404)
        self.signal_name = signal.name if signal else ""

    def decode(self) -> Batch:
        if self.signal is None:
            raise EdgeError(404, "not_found", f"no ingest route at {self.request.path}")
        headers = self.request.headers
        body = decode(self.request.body, headers.get("content-type"), headers.get("content-encoding"))
        return Batch(self.signal, body.events, many=body.many, idempotency_key=idempotency_header(headers))

    def answer(self, accepted: dict[str, Any] | None) -> Response:
        return self._json(202, accepted or {})

    def refuse(self, error: EdgeError) -> Response:
        return self._json(error.status, error.body(), error.headers())

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        origin = self.request.headers.get("origin")
        return json_response(status, body, {**(headers or {}), **cors.response_headers(origin)})
