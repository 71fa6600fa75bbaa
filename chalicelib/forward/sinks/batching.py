"""One destination's share of an SQS batch, in requests it accepts, sent without hammering it.

Every sink sends through `deliver_in_requests` (docs/forwarder.md, "Batches and backpressure"):

- a request holds at most `Limits.max_events` events (CONTRACT §6: 100) and about
  `Limits.max_bytes` of body, the destination's documented request size; an event larger than
  that goes alone (a 413 for several is split in halves by `split_when_too_large`);
- requests go one after the other: a forwarder never has two requests in flight at one
  destination, so the event source's maximum concurrency is the destination's concurrency;
- after a request the destination answered 429, 502, 503 or 504, or that timed out, could not
  connect or was refused its credentials, the rest of the batch is not sent this time: it gets
  that same outcome, so it backs off with it (Retry-After included) instead of adding load to a
  backend that said it has too much (another 5xx is one request's failure: the rest still goes);
- a request that timed out halves the events per request this container sends that destination;
  each answer that took everything adds a tenth of the maximum back. A batch that timed out is
  therefore retried in smaller requests. A slow answer that came in time changes nothing: it
  took its events, and smaller requests would only hold more messages back;
- a request starts only while the invocation has time left for a full connect + read timeout
  and the settlement after it; the rest is left for the retry (`deferred`), so a large batch
  never runs into the function timeout, which would bring back messages already delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chalicelib.forward.sinks.base import Outcome, OutcomeKind, Reason, retry
from chalicelib.forward.sinks.http_post import HttpAnswer, split_when_too_large
from chalicelib.runtime.config import settings
from chalicelib.runtime.container import per_container

MAX_EVENTS = 100  # CONTRACT §6, and the largest forwarder batch the stack takes
MIB = 1024 * 1024
# What says the destination cannot take more now (or never will with these credentials): the
# rest of the batch waits. OVERLOADED are the statuses of a busy server or its gateway.
HOLD_BACK = frozenset({Reason.TIMEOUT, Reason.CONNECTION, Reason.AUTH_FAILED, Reason.TOKEN_UNAVAILABLE})
OVERLOADED = frozenset({429, 502, 503, 504})
# Time kept after the last request for the SQS settlement calls of the largest batch.
SETTLEMENT_SECONDS = 5.0

Send = Callable[[Sequence[int]], tuple[HttpAnswer, list[Outcome]]]


@dataclass(frozen=True)
class Limits:
    """What one request to a destination may hold."""

    max_events: int = MAX_EVENTS
    max_bytes: int = MIB


@dataclass
class Invocation:
    """The running invocation's deadline (time.monotonic()), set by the handler; None: no bound."""

    deadline: float | None = None


@per_container
def invocation() -> Invocation:
    return Invocation()


@per_container
def request_caps() -> dict[str, int]:
    """Events per request for each destination, as this container learnt them."""
    return {}


def deliver_in_requests(name: str, limits: Limits, sizes: Sequence[int], send: Send) -> list[Outcome]:
    """Outcomes for events 0..len(sizes)-1; `send(indices)` posts those events as one request."""
    outcomes: list[Outcome | None] = [None] * len(sizes)
    caps = request_caps()
    position = 0
    while position < len(sizes):
        if not _time_for_a_request():
            held = retry(Reason.DEFERRED, error="no time left in the invocation for another request")
            outcomes[position:] = [held] * (len(sizes) - position)
            break
        chunk = list(_next_request(sizes, position, min(caps.get(name, limits.max_events), limits.max_events), limits))
        answered = split_when_too_large(chunk, send)
        caps[name] = min(_next_cap(caps.get(name, limits.max_events), len(chunk), answered), limits.max_events)
        for index, outcome in zip(chunk, answered, strict=True):
            outcomes[index] = outcome
        position += len(chunk)
        failing = next((o for o in answered if _holds_back(o)), None)
        if failing is not None:
            outcomes[position:] = [failing] * (len(sizes) - position)
            break
    return cast(list[Outcome], outcomes)


def _next_request(sizes: Sequence[int], start: int, cap: int, limits: Limits) -> Iterator[int]:
    """Indices from `start` while the request stays within `cap` events and `max_bytes` (at least one)."""
    total = 0
    for index in range(start, min(len(sizes), start + max(1, cap))):
        total += sizes[index]
        if index > start and total > limits.max_bytes:
            return
        yield index


def _holds_back(outcome: Outcome) -> bool:
    if outcome.kind is not OutcomeKind.RETRY:
        return False
    return outcome.reason in HOLD_BACK or (outcome.reason is Reason.HTTP_STATUS and outcome.status in OVERLOADED)


def _next_cap(cap: int, sent: int, answered: Sequence[Outcome]) -> int:
    """Halve on a timeout; grow by a tenth of the maximum on an answer that took everything;
    keep it on any other failure (backoff handles those)."""
    if any(o.reason is Reason.TIMEOUT for o in answered):
        return max(1, min(cap, sent) // 2)
    if any(o.kind is OutcomeKind.RETRY for o in answered):
        return cap
    return cap + max(1, MAX_EVENTS // 10)


def _time_for_a_request() -> bool:
    deadline = invocation().deadline
    if deadline is None:
        return True
    config = settings()
    needed = config.forward_connect_timeout + config.forward_read_timeout + SETTLEMENT_SECONDS
    return deadline - time.monotonic() >= needed


def sizes_of(parts: Sequence[Any]) -> list[int]:
    """Byte sizes of encoded parts (str of ASCII JSON or bytes), plus a separator each."""
    return [len(part) + 1 for part in parts]
