"""Per-project events per minute at a fraction of a DynamoDB write per request.

Each container counts a project's events locally and settles with the shared counter (one
item per project and minute in the idempotency table) at most every `SETTLE_EVENTS` events
or `SETTLE_SECONDS`: one UpdateItem adds the container's unsettled events and reads the
project's total back. Once that total says the minute is spent, the container refuses
locally, writing nothing, until the next minute.

Why not a write per request: at steady load below the limit it costs 1/SETTLE_EVENTS of a
write per event instead of one ($0.03 instead of $0.63 per million events).

Precision: between two settles a container accepts at most one settle batch without knowing
what the others did, so a project gets at most its limit plus one batch per container that
serves it: containers x SETTLE_EVENTS events (or what a container takes in SETTLE_SECONDS if
that is less). Near the limit the batches shrink: each container settles after its share of
half the budget left (its share of the project's events over this minute and the last, from
the totals its settles read back), so in steady traffic the overshoot is about a percent
(docs/rate-limits.md: the bound and the measured figures).

The counter failing (or no time left before the request's deadline) never refuses a request:
it is let through, its events stay unsettled, and the container tries again after
SETTLE_SECONDS.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from chalicelib.runtime.aws import bounded_client
from chalicelib.runtime.container import per_container
from chalicelib.runtime.deadline import UNBOUNDED, Deadline

# A container's unsettled events before it settles (at most; fewer near the limit).
SETTLE_EVENTS = 20
# A container with unsettled events settles on its next request once this much time has passed.
SETTLE_SECONDS = 5.0
# Connect and read timeout (each) of the counter's UpdateItem, one attempt, less when the request's
# deadline is nearer; the settle is skipped when not even the shortest call fits before it.
CALL_TIMEOUT_SECONDS = 0.25


def seconds_to_next_minute(now: float) -> int:
    return max(1, 60 - int(now) % 60)


def over_limit(
    table: str, project_id: str, limit: int, events: int, now: float | None = None, deadline: Deadline = UNBOUNDED
) -> bool:
    """Count `events` against this minute's budget; True when the project has spent it.

    `deadline` (the request's, less what the enqueue needs) bounds the counter's UpdateItem.
    Raises when the counter could not be reached (the caller lets the request through).
    """
    return container_limiter(table).over_limit(project_id, limit, events, time.time() if now is None else now, deadline)


@per_container
def container_limiter(table: str) -> MinuteLimiter:
    return MinuteLimiter(table)


@dataclass
class _Tally:
    """One project's minute as this container knows it."""

    minute: int
    settled_total: int = 0  # the shared total at this container's last settle
    settled_here: int = 0  # how much of it this container added
    unsettled: int = 0  # events accepted here and not yet added to the shared total
    settle_at: int = SETTLE_EVENTS  # unsettled events that trigger the next settle
    last_minute: tuple[int, int] = (0, 0)  # the previous minute's (settled_here, settled_total)
    last_settle: float = float("-inf")
    retry_after: float = float("-inf")  # after a failed settle, none before this

    def start_minute(self, minute: int, limit: int, settle_events: int) -> None:
        self.last_minute = (self.settled_here, self.settled_total) if minute == self.minute + 1 else (0, 0)
        self.minute, self.settled_total, self.settled_here, self.unsettled = minute, 0, 0, 0
        self.settle_at = self._batch(limit, settle_events)

    def learn(self, total: int, batch: int, limit: int, settle_events: int) -> None:
        """Take in the shared total an UpdateItem that added `batch` events answered."""
        self.settled_total = max(self.settled_total, total)  # a concurrent settle may answer first
        self.settled_here += batch
        self.settle_at = self._batch(limit, settle_events)

    def share(self) -> float:
        """This container's share of the project's events, over this minute and the last
        (a single settle's is noisy; the minute's alone is too high while the others'
        first batches are unsettled)."""
        here, total = self.last_minute[0] + self.settled_here, self.last_minute[1] + self.settled_total
        return min(1.0, here / total) if total else 1.0

    def _batch(self, limit: int, settle_events: int) -> int:
        """Settle after our share of half of what is left of the budget: the next settles of
        every container together then spend about half of it, whoever settles first."""
        left = limit - self.settled_total
        return max(1, min(settle_events, int(self.share() * left / 2)))


class MinuteLimiter:
    """One container's local counts of every project it serves, settled with the shared counters."""

    def __init__(self, table: str, settle_events: int = SETTLE_EVENTS, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.table = table
        self.settle_events = settle_events
        self.settle_seconds = settle_seconds
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()  # the local edge serves requests on threads

    def over_limit(self, project_id: str, limit: int, events: int, now: float, deadline: Deadline = UNBOUNDED) -> bool:
        """Whether a request of `events` events at `now` (epoch seconds) is over the limit."""
        minute = int(now) // 60
        with self._lock:
            tally = self._tallies.setdefault(project_id, _Tally(minute=-1))
            if tally.minute != minute:  # the last minute's unsettled events no longer matter
                tally.start_minute(minute, limit, self.settle_events)
            if tally.settled_total + tally.unsettled + events > limit:
                return True
            tally.unsettled += events
            due = tally.unsettled >= tally.settle_at or now - tally.last_settle >= self.settle_seconds
            if not due or now < tally.retry_after or not deadline.allows(CALL_TIMEOUT_SECONDS):
                return False
            batch, tally.unsettled, tally.last_settle = tally.unsettled, 0, now
        try:
            total = self._add(project_id, minute, batch, deadline)
        except Exception:
            with self._lock:
                if tally.minute == minute:
                    tally.unsettled += batch
                tally.retry_after = now + self.settle_seconds
            raise
        with self._lock:
            if tally.minute == minute:
                tally.learn(total, batch, limit, self.settle_events)
        return total > limit

    def _add(self, project_id: str, minute: int, events: int, deadline: Deadline) -> int:
        """Add `events` to the project's counter for `minute`; the total it now holds."""
        counter = bounded_client("dynamodb", deadline, CALL_TIMEOUT_SECONDS)
        response = counter.update_item(
            TableName=self.table,
            Key={"pk": {"S": f"rate#{project_id}#{minute}"}},
            UpdateExpression="ADD hits :n SET expires_at = if_not_exists(expires_at, :exp)",
            ExpressionAttributeValues={":n": {"N": str(events)}, ":exp": {"N": str((minute + 2) * 60)}},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["hits"]["N"])
