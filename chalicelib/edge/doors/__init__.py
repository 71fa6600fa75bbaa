"""Doors: the ingest protocols, one module each, all of the same shape.

    sdk.py        JSON object or NDJSON lines of the Lookout SDKs (`/api/ingest...`)
    otlp.py       OTLP/HTTP protobuf or JSON (`/v1/traces|logs|metrics`)
    firehose.py   Amazon Data Firehose HTTP endpoint deliveries (`/api/firehose/{signal}`)

A door is built per request (`Door(request, ...)`, keeping what it chose from it: the
signal, OTLP's encoding, Firehose's request id) and has three methods:

    decode()          the body → a `Batch` (its events, signal and `AcceptPolicy`), or EdgeError
    answer(accepted)  the success answer, given what `pipeline.accept` returned
    refuse(error)     the answer to an EdgeError, in the door's own terms

`chalicelib.edge.serve.serve(door)` runs them: preflight, tracing, the refusal's count and
log line, and the 500, written once. Everything between decode and answer is common and
lives in `chalicelib.edge.pipeline.accept(request, batch)`. A new door is one module here
plus its route line in `chalicelib/edge/routes.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.contract import envelope
from chalicelib.contract.signals import MAX_EVENTS_PER_REQUEST, Signal

if TYPE_CHECKING:
    from chalice import Response

    from chalicelib.contract.errors import EdgeError


@dataclass(frozen=True)
class IngestRequest:
    """What the edge needs of an HTTP request; `headers` keys are lowercase.

    `path` is the route's path as CONTRACT §5 puts it in the message (`/api/ingest/log`).
    """

    path: str
    headers: Mapping[str, str]
    body: bytes
    client_ip: str | None
    method: str = "POST"
    # Why the gateway event's body could not be read (bad base64): `serve` answers 400.
    unreadable: str | None = None


@dataclass(frozen=True)
class Event:
    """One event as decoded: what goes into one queue message's `payload`."""

    payload: Any  # the JSON document; `accept` refuses anything but an object
    size: int  # its decoded size in bytes, for the 1 MiB per-event limit
    where: str = ""  # how an error points at it: "line 3", "record 2"
    # `payload_json`, when the door serialised the payload already (OTLP sizes its events so).
    serialised: str | None = field(default=None, repr=False, compare=False)

    @cached_property
    def payload_json(self) -> str:
        """The queued payload (`api_key` stripped) as `envelope.dumps` writes it: serialised once,
        for the idempotency fingerprint and the queue message both."""
        if self.serialised is not None:
            return self.serialised
        return envelope.dumps(envelope.strip_api_key(self.payload))


@dataclass(frozen=True)
class AcceptPolicy:
    """How a door's batches differ on the one accept path (`pipeline.accept`)."""

    # Fewer events is a 400; none at all is still authenticated (an OTLP export without
    # items, a Firehose delivery of CloudWatch Logs control messages), then nothing is sent.
    min_events: int = 1
    # More is a 413 `too_many_events` (Firehose cannot split a delivery: its cap is its own).
    max_events: int = MAX_EVENTS_PER_REQUEST
    # The client reads the 202 body (`event_id(s)`, `run_id`/`check_in_id`, `config_version`) and
    # the first event id correlates the log lines. Without: the door answers in its own terms.
    reply_body: bool = True
    # Event ids derive from the idempotency key and the first attempt's time
    # (`envelope.stable_ulids`): the record keeps that time and the count, a few hundred bytes
    # whatever the size, and a retry after a partial enqueue sends the rest under the same ids.
    stable_ids: bool = False
    # Before the idempotency record's key, for keys that are not the client's own (Firehose's).
    claim_prefix: str = ""
    # The request's decoded-size budget (chalicelib/contract/budget.py), and so what it may queue
    # (`pipeline.check_queued_size`): 5 MiB as CONTRACT §3 says; a Firehose delivery's is its own.
    decoded_limit: int = 5 * 1024 * 1024


SDK_POLICY = AcceptPolicy()


@dataclass(frozen=True)
class Batch:
    """A decoded request, ready for `pipeline.accept`."""

    signal: Signal
    events: list[Event]
    policy: AcceptPolicy = SDK_POLICY
    many: bool = False  # the 202 lists `event_ids` (NDJSON, batches) rather than one `event_id`
    # The door's own key source (Firehose's access key header); None: CONTRACT §3's sources.
    api_key: str | None = None
    idempotency_key: str | None = None
    # Request headers every queue message carries besides the `X-Lookout-*` ones (names lowercase).
    carried: Mapping[str, str] = field(default_factory=dict)


class Door(Protocol):
    """One ingest protocol, built per request (see the module docstring)."""

    request: IngestRequest
    # The trace segment and the `signal` of the refusal's log line.
    segment: str
    signal_name: str

    def decode(self) -> Batch: ...

    def answer(self, accepted: dict[str, Any] | None) -> Response: ...

    def refuse(self, error: EdgeError) -> Response: ...


def idempotency_header(headers: Mapping[str, str]) -> str | None:
    """The client's `Idempotency-Key`, when it sent a non-blank one."""
    return (headers.get("idempotency-key") or "").strip() or None
