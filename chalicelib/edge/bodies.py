"""Request bodies, whatever the door: size as received, capped decompression, strict JSON, NDJSON.

Pure functions (no AWS) the doors (chalicelib/edge/doors/) share; every refusal
is an EdgeError with the contract's code.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

from chalicelib.contract.budget import DecodeBudget, inflate
from chalicelib.contract.errors import EdgeError, bad_request, too_large, unsupported
from chalicelib.contract.signals import MAX_EVENTS_PER_REQUEST, check_event_count
from chalicelib.edge.doors import SDK_POLICY, Event

MIB = 1024 * 1024
MAX_RAW_BYTES = 5 * MIB
MAX_DECODED_BYTES = SDK_POLICY.decoded_limit  # OTLP's too
GZIP_MAGIC = b"\x1f\x8b"


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` → `application/json`; missing → JSON."""
    if not content_type:
        return "application/json"
    return content_type.split(";", 1)[0].strip().lower()


def check_received_size(raw: bytes) -> None:
    """413 for a body over the limit as received, before any work is spent on it."""
    if len(raw) > MAX_RAW_BYTES:
        raise too_large(f"the request body is {len(raw)} bytes; the limit is {MAX_RAW_BYTES}")


def decode_content(raw: bytes, content_encoding: str | None, budget: DecodeBudget | None = None) -> bytes:
    """Undo gzip/deflate, charging `budget` (the request's; default a fresh 5 MiB one) for every
    decoded byte as it comes, so a bomb costs little memory; an uncompressed body is charged whole."""
    budget = budget or DecodeBudget(MAX_DECODED_BYTES)
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        budget.take(len(raw))
        return raw
    if encoding in ("gzip", "x-gzip"):
        return _inflate(raw, zlib.MAX_WBITS | 16, "gzip", budget)
    if encoding == "deflate":
        # RFC 9110 deflate is zlib-wrapped; some clients send raw deflate.
        spent = budget.used
        try:
            return _inflate(raw, zlib.MAX_WBITS, "deflate", budget)
        except _CorruptStream:
            budget.used = spent  # the zlib-wrapped attempt's output is dropped
            return _inflate(raw, -zlib.MAX_WBITS, "deflate", budget)
    raise unsupported(f"content encoding {encoding!r} is not accepted; send gzip, deflate or none")


class _CorruptStream(Exception):
    pass


def _inflate(raw: bytes, wbits: int, name: str, budget: DecodeBudget) -> bytes:
    """Every member of the stream (RFC 1952 lets gzip concatenate members), all or nothing.

    Data after the last member is refused (400), except gzip's zero padding: a body is
    never accepted with part of it silently dropped.
    """
    out = bytearray()
    pending = raw
    while True:
        decompressor = zlib.decompressobj(wbits)
        try:
            out += inflate(decompressor, pending, budget)
        except zlib.error as exc:
            if name == "deflate" and wbits > 0:
                raise _CorruptStream from exc
            raise bad_request(f"the body is not valid {name} data") from exc
        if not decompressor.eof:
            if name == "deflate" and wbits > 0:
                raise _CorruptStream
            raise bad_request(f"the {name} body is truncated")
        pending = decompressor.unused_data
        if name == "gzip" and pending.startswith(GZIP_MAGIC):
            continue  # the next member
        trailing = pending.rstrip(b"\0") if name == "gzip" else pending
        if trailing:
            raise bad_request(f"the {name} body has {len(trailing)} bytes of trailing data after its end")
        return bytes(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]}… is too large")
    return value


def parse_json(data: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no numbers that overflow, no runaway nesting."""
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise bad_request("the body is nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise bad_request(f"the body is not valid JSON: {_short(exc)}") from None


def ndjson_events(data: bytes, where: str = "", limit: int | None = MAX_EVENTS_PER_REQUEST) -> list[Event]:
    """NDJSON: one event per non-blank line, errors naming the line; none for a blank body.

    Over `limit` events is a 413 at the first line past it, before that line is parsed
    (None: the caller bounds the count its own way).
    """
    prefix = f"{where} " if where else ""
    events: list[Event] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        if limit is not None:
            check_event_count(len(events) + 1, limit)
        try:
            events.append(Event(parse_json(line), len(line), f"{prefix}line {number}"))
        except EdgeError as error:
            raise bad_request(f"line {number}: {error.message}") from None
    return events


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."
