"""The Lookout SDKs' bodies (CONTRACT §3): one JSON object, or NDJSON with one event per line.

`application/json` (and `text/plain` that parses as JSON, as `sendBeacon` sends it)
is one event; `application/x-ndjson` is one event per non-blank line, answered with
`event_ids`. Gzip/deflate and the size limits are `bodies`' job.
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.contract.errors import EdgeError, bad_request, unsupported
from chalicelib.contract.signals import check_event_count
from chalicelib.edge.bodies import check_received_size, decode_content, media_type, parse_json
from chalicelib.edge.decoders import Event

JSON_TYPES = frozenset({"application/json", "text/plain"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonlines"})


@dataclass(frozen=True)
class SdkBody:
    events: list[Event]
    many: bool  # NDJSON: the 202 lists `event_ids`


def decode(raw: bytes, content_type: str | None, content_encoding: str | None) -> SdkBody:
    """Check the content type, decode the encoding, parse; refuse with the contract's codes."""
    kind = media_type(content_type)
    if kind not in JSON_TYPES and kind not in NDJSON_TYPES:
        raise unsupported(f"content type {kind!r} is not accepted; send application/json or application/x-ndjson")
    check_received_size(raw)
    data = decode_content(raw, content_encoding)
    if not data.strip():
        raise bad_request("the request body is empty")
    if kind in NDJSON_TYPES:
        return SdkBody(events=_parse_ndjson(data), many=True)
    return SdkBody(events=[Event(parse_json(data), len(data))], many=False)


def _parse_ndjson(data: bytes) -> list[Event]:
    events: list[Event] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        check_event_count(len(events) + 1)  # stop at the first line over the cap, before parsing it
        try:
            events.append(Event(parse_json(line), len(line), f"line {number}"))
        except EdgeError as exc:
            raise bad_request(f"line {number}: {exc.message}") from None
    if not events:
        raise bad_request("the NDJSON body has no events")
    return events
