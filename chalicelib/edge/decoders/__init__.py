"""Decoders: one request body in, the events it carries out. One module per way in.

    sdk_json.py   JSON object or NDJSON lines of the Lookout SDKs (`/api/ingest...`)
    otlp.py       OTLP/HTTP protobuf or JSON (`/v1/traces|logs|metrics`)
    firehose.py   Amazon Data Firehose HTTP endpoint deliveries (`/api/firehose/{signal}`)

A decoder only reads: it refuses what it cannot read (400, 413, 415 as `EdgeError`)
and returns `Event`s. Everything after that is common and lives in
`chalicelib.edge.pipeline.accept(request, signal, events, ...)`: the per-event checks
(`contract.signals.check_event`, the 1,000-event cap), key, idempotency, rate limit,
queue messages, enqueue. A decoder may run those checks itself to refuse sooner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event as decoded: what goes into one queue message's `payload`."""

    payload: Any  # the JSON document; `accept` refuses anything but an object
    size: int  # its decoded size in bytes, for the 1 MiB per-event limit
    where: str = ""  # how an error points at it: "line 3", "record 2"
