"""The request's deadline: every edge answer within REQUEST_BUDGET_SECONDS of the handler's start.

How a caller uses it (docs/reliability.md, "Time budgets per request"):

    from chalicelib.runtime import deadline

    with deadline.request_budget():            # serve() and /api/config, at entry
        ...
    limit = deadline.current()                 # anywhere below: this request's Deadline
    limit = deadline.of_request()              # the same, or a fresh budget where none was set
    timeout = limit.call_timeout(0.5)          # connect and read timeout of ONE call, or OutOfTime
    dynamodb = aws.bounded_client("dynamodb", limit, 0.5)   # one attempt, that timeout
    limit.left(), limit.at                     # seconds left; the monotonic instant itself
    limit.sooner(0.6)                          # the same deadline less a reserve for what follows

`call_timeout(cap)` is the connect timeout and the read timeout of one call, each: one call
(a new connection, then the answer) takes at most twice it, and twice it always fits in the
time left less MARGIN_SECONDS (for answering after the last call). It is rounded down to one of
TIMEOUT_STEPS (or is `cap` itself), so the clients and HTTP pools keyed by timeout stay a handful
per container. When not even the smallest step fits, it raises `OutOfTime`: no new call past the
deadline. A loop that retries (SQS sends, the idempotency claim's wait) asks again before each try.

The edge's enqueue gets `pipeline`'s Deadline as `send_messages(..., deadline=<Deadline>.at)` (the
float instant; with an idempotency claim, `sooner()` by what marking the claim needs afterwards).

Outside a request (the forwarder, the key sync, the CLI, a test calling a function directly)
`current()` is UNBOUNDED: `call_timeout(cap)` is `cap`, nothing runs out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

# Every edge answer within this many seconds of the handler's start. The PHP SDK gives up 5 s
# after it sends; before the handler starts, a cold start has to fit in what is left (measured by
# `make bench`: ~0.2 s from import to the first 202 on an idle machine, ~1 s for a first OTLP
# request on a loaded one; docs/performance.md, docs/otlp.md), plus the network and the gateway.
# 3.5 s leaves 1.5 s of that.
REQUEST_BUDGET_SECONDS = 3.5
# Kept free after the last call: building and returning the answer.
MARGIN_SECONDS = 0.1
# The connect/read timeouts a call may get, rounded down to one of these (or its own cap): each
# distinct timeout is one botocore client (or urllib3 pool) per container, kept for its life.
TIMEOUT_STEPS = (0.1, 0.25, 0.5, 1.0, 2.0)


class OutOfTime(Exception):
    """Too little of the request's budget is left to make another call at all."""


@dataclass(frozen=True)
class Deadline:
    """An instant on the `time.monotonic()` clock (`at`) by which the answer must be ready."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        """Seconds until the deadline (negative once past it; infinite when unbounded)."""
        return self.at - time.monotonic()

    def sooner(self, seconds: float) -> Deadline:
        """This deadline less `seconds` kept for what must still happen after (bookkeeping)."""
        return Deadline(self.at - seconds)

    def call_timeout(self, cap: float) -> float:
        """The connect and the read timeout of one call: `cap`, or less when time is short
        (rounded down to TIMEOUT_STEPS); OutOfTime when even the smallest step does not fit."""
        fits = (self.left() - MARGIN_SECONDS) / 2  # connect, then read: two waits at most
        if cap <= fits:
            return cap
        steps = [step for step in TIMEOUT_STEPS if step <= fits]
        if not steps:
            raise OutOfTime(f"{max(self.left(), 0.0):.2f} s left of the request's budget")
        return steps[-1]

    def allows(self, cap: float) -> bool:
        """Whether one more call (of at most `cap` per wait) can still be made."""
        try:
            self.call_timeout(cap)
        except OutOfTime:
            return False
        return True


UNBOUNDED = Deadline(math.inf)

_current: ContextVar[Deadline] = ContextVar("lookout_edge_request_deadline", default=UNBOUNDED)


def current() -> Deadline:
    """The deadline of the request being served in this context; UNBOUNDED outside one."""
    return _current.get()


def of_request() -> Deadline:
    """`current()`, or a fresh REQUEST_BUDGET_SECONDS one when no request set it: what must never
    run unbounded (the edge's enqueue resends until its deadline) uses this one."""
    found = _current.get()
    return Deadline.after(REQUEST_BUDGET_SECONDS) if found is UNBOUNDED else found


@contextmanager
def request_budget(seconds: float | None = None) -> Iterator[Deadline]:
    """Serve a request within `seconds` (None or 0: REQUEST_BUDGET_SECONDS) from now: `current()` inside.
    The edge passes LOOKOUT_EDGE_REQUEST_BUDGET_SECONDS (`Settings.request_budget_seconds`)."""
    token = _current.set(Deadline.after(seconds or REQUEST_BUDGET_SECONDS))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
