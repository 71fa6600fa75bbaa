"""The queue message of CONTRACT §5: build it, encode it to fit SQS, decode it back.

Pure functions: the edge builds and encodes, the forwarder decodes.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from chalicelib.contract.errors import too_large

VERSION = 1
# SQS allows 256 KiB for body plus attributes; keep a margin for the attributes.
MAX_MESSAGE_BYTES = 256 * 1024 - 2 * 1024

# ULIDs (https://github.com/ulid/spec): 48 bits of Unix milliseconds, 80 random bits, Crockford
# base32. Written here, not imported: python-ulid cost ~12 ms of a Lambda-like cold start on Python 3.11
# (typing_extensions, an importlib.metadata lookup), and the edge answers its first request then.
# tests/unit/test_envelope.py checks the encoding against python-ulid.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RANDOM_BITS = 80
_ulid_lock = threading.Lock()
_last_ulid = 0  # the last id given, as an integer: the next is above it


def ulid_text(value: int) -> str:
    """A 128-bit ULID as its 26 characters."""
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_ulid() -> str:
    """A monotonic ULID: sortable, unique even within one millisecond (the randomness of the
    last one plus one, as the spec's monotonic generator does)."""
    global _last_ulid
    with _ulid_lock:
        now = time.time_ns() // 1_000_000 << RANDOM_BITS | int.from_bytes(os.urandom(10), "big")
        _last_ulid = now if now >> RANDOM_BITS > _last_ulid >> RANDOM_BITS else _last_ulid + 1
        return ulid_text(_last_ulid)


def utc_now_iso(now: datetime | None = None) -> str:
    """`2026-11-22T10:00:00.123Z`: UTC with milliseconds, as the contract shows."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def strip_api_key(payload: Any) -> Any:
    """Drop the top-level `api_key` of an object payload: the key is never queued."""
    if isinstance(payload, dict) and "api_key" in payload:
        return {k: v for k, v in payload.items() if k != "api_key"}
    return payload


# One encoder for every call: `json.dumps` with options builds a new JSONEncoder each time, a
# measurable share of a small event's cost on the hot path (it is stateless, so shared safely).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact ASCII JSON: escapes control and non-BMP characters SQS would refuse."""
    return _ENCODER.encode(value)


def encode_message(message: dict[str, Any]) -> str:
    """The SQS body of a whole message dict (its payload serialised here)."""
    fields = {name: value for name, value in message.items() if name != "payload"}
    return encode_body(fields, dumps(message["payload"]))


def encode_body(fields: dict[str, Any], payload_json: str) -> str:
    """The SQS body: `payload_json` (already `dumps`ed) spliced in after `payload_encoding`, the
    bytes `dumps` of the whole message would give; gzip+base64 when inline would not fit (else 413)."""
    names = list(fields)
    cut = names.index("payload_encoding") + 1 if "payload_encoding" in names else len(names)
    head = {name: fields[name] for name in names[:cut]}
    tail = {name: fields[name] for name in names[cut:]}
    opening = dumps(head)[:-1] + ("," if head else "")
    closing = "," + dumps(tail)[1:] if tail else "}"
    body = f'{opening}"payload":{payload_json}{closing}'
    if len(body) <= MAX_MESSAGE_BYTES:
        return body
    packed = base64.b64encode(gzip.compress(payload_json.encode(), 6)).decode()
    smaller = {**head, "payload_encoding": "gzip+base64", "payload": packed, **tail}
    body = dumps(smaller)
    if len(body) > MAX_MESSAGE_BYTES:
        raise too_large("the event does not fit in one queue message even compressed")
    return body


def decode_payload(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its payload back as JSON, whatever `payload_encoding` it had."""
    if message.get("payload_encoding") != "gzip+base64":
        return message
    payload = json.loads(gzip.decompress(base64.b64decode(message["payload"])))
    return dict(message, payload_encoding="json", payload=payload)


def stable_ulids(seed: str, time_ms: int, count: int) -> list[str]:
    """ULIDs that a retry of the same input gets again: `time_ms`, 64 bits of the seed's hash
    and the position (≤ 65,535) as randomness. The backend stores an event id once, so a
    retried delivery (Lambda's retry of a failed invocation) is not stored twice."""
    import hashlib

    digest = int.from_bytes(hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    base = (time_ms & (2**48 - 1)) << RANDOM_BITS | digest << 16
    return [ulid_text(base | position) for position in range(count)]
