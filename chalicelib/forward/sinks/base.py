"""What every destination of the forwarder promises: deliver a batch, say what became of each event.

A sink classifies its own answers (as the OpenTelemetry Collector's exporters do): it
knows which of its statuses mean "taken", "refused for good" or "try again later". What
is done with the queue message afterwards (delete, dead-letter, back off) is decided once,
in chalicelib.forward.settle, for every sink alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any, Protocol, runtime_checkable


class Envelope(dict[str, Any]):
    """A queue message (CONTRACT §5) with its payload decoded back to JSON.

    `source` is its SQS body as received when that body already is this JSON (payload
    inline): a sink that forwards the message unchanged splices it instead of encoding
    the message again. Sinks read it, never change it.
    """

    __slots__ = ("source",)

    def __init__(self, fields: dict[str, Any], source: str | None = None) -> None:
        super().__init__(fields)
        self.source = source


MAX_ERROR_TEXT = 256


class OutcomeKind(Enum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"  # refused for good: retrying cannot help
    RETRY = "retry"


class Reason(Enum):
    """Why an event was not delivered; the value is what logs, metrics and DLQ attributes show."""

    # Refused for good (the dead-letter reasons).
    REJECTED = "rejected"  # the destination refused this event
    BATCH_REJECTED = "batch_rejected"  # the destination refused the whole request
    MALFORMED = "malformed"  # the queue message is not one: never sent anywhere
    NO_DESTINATION = "no_destination"  # no configured destination takes its signal
    SINK_ERROR = "sink_error"  # the sink's own code failed on this batch (a mapping bug): parked, not looped
    # Left on the queue for a later try.
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TOKEN_UNAVAILABLE = "token_unavailable"  # noqa: S105 - a reason, not a secret
    AUTH_FAILED = "auth_failed"
    HTTP_STATUS = "http_status"  # a transient or unexpected status (the status says which)
    UNREADABLE_ANSWER = "unreadable_answer"
    MISSING_RESULT = "missing_result"
    UNKNOWN_RESULT = "unknown_result"
    DEFERRED = "deferred"  # not sent: the invocation had no time left for another request


@dataclass(frozen=True)
class Outcome:
    """What became of one event at one destination, and why (for logs, metrics, DLQ attributes)."""

    kind: OutcomeKind
    reason: Reason | None = None
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the destination asked us to wait (a floor)

    @property
    def taken(self) -> bool:
        return self.kind in (OutcomeKind.DELIVERED, OutcomeKind.DUPLICATE)

    @property
    def label(self) -> str:
        """One word for logs: the reason, or what was taken ("delivered", "duplicate")."""
        if self.reason is Reason.HTTP_STATUS:
            return f"http_{self.status}"
        return self.reason.value if self.reason else self.kind.value


@cache  # one shared (frozen) outcome per status: a batch of 100 asks for the same one 100 times
def delivered(status: int | None = None) -> Outcome:
    return Outcome(OutcomeKind.DELIVERED, status=status)


@cache
def duplicate(status: int | None = None) -> Outcome:
    return Outcome(OutcomeKind.DUPLICATE, status=status)


def rejected(reason: Reason, status: int | None = None, error: str | None = None) -> Outcome:
    return Outcome(OutcomeKind.REJECTED, reason, status, short(error) if error else None)


def retry(reason: Reason, status: int | None = None, error: str | None = None, after: float | None = None) -> Outcome:
    return Outcome(OutcomeKind.RETRY, reason, status, short(error) if error else None, after)


def short(text: str) -> str:
    """Error text fit for one log field or message attribute: one line, at most MAX_ERROR_TEXT."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


class Sink(Protocol):
    """One destination. `signals` None means every signal."""

    name: str
    signals: frozenset[str] | None

    def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """One outcome per envelope, in order; never raises for the destination's failures."""
        ...


# What `PreparedSink.prepare` returns: the destination's requests, sent when called.
Send = Callable[[], list[Outcome]]


@runtime_checkable
class PreparedSink(Sink, Protocol):
    """A sink with CPU work to do before its requests (mapping, encoding). The forwarder runs every
    destination's `prepare` one after the other, then their sends side by side: threads that take
    turns at the interpreter lock to encode lengthen each other's network waits (docs/performance.md)."""

    def prepare(self, envelopes: Sequence[Envelope]) -> Send:
        """Everything but I/O; the returned call does `deliver`'s requests and returns its outcomes."""
        ...
