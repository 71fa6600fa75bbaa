"""A per-container back-off (a small circuit breaker) for a dependency that failed: while it is
open no call is made, and once its period is over one caller at a time probes.

    closed ──a call fails──▶ open for `first` s ──period over──▶ one probe (the others: still open)
      ▲                        ▲                                  │ fails: open twice as long as
      └──────────── a call succeeds (the probe, or any call) ─────┘ before, up to `longest` s

Hand-written (about 60 lines) rather than pybreaker: pybreaker holds its lock around the whole
protected call (every key lookup of a container would wait for any other in flight, and a probe
against a stalled table would hold up the cached answers it is meant to spare), its reset timeout
is fixed rather than growing, and it reads the wall clock (no seam for a test to move time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class BackingOff(Exception):
    """No call was made: the dependency failed recently and its back-off period is not over
    (or another caller is probing it right now)."""


class Backoff:
    """When `name` may be called: always while it answers; after a failure, not for `first` s,
    then by one probe at a time, the period doubling with each failure in a row up to `longest`
    s; any success closes it. Opening and closing are logged (warning, info); while it stays
    open, nothing is (a line per refused request would be the outage's biggest bill).
    """

    def __init__(self, name: str, first: float, longest: float, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.first = first
        self.longest = longest
        self.clock = clock
        self._lock = threading.Lock()
        self.failures = 0  # failed calls in a row; 0 is closed
        self._reopens_at = 0.0
        self._probing = False

    def holding_off(self) -> bool:
        """Whether a caller would be refused now (open, or a probe in flight); claims nothing."""
        with self._lock:
            return self.failures > 0 and (self._probing or self.clock() < self._reopens_at)

    def refuse_while_holding_off(self) -> None:
        """BackingOff while a caller would be refused (`holding_off`): for a cache's `store_down`,
        which then answers its stale entry at once instead of waiting on a call in flight."""
        if self.holding_off():
            raise BackingOff(f"{self.name}: backing off")

    @contextmanager
    def attempt(self, failures: tuple[type[BaseException], ...]) -> Iterator[None]:
        """Make one call inside, or raise BackingOff without making it. Once the period is over
        the first caller in is the probe, and until it is done every other caller is refused.

        The call's outcome: an exception among `failures` opens the back-off (or keeps it open,
        for twice as long); any other (no time left for the call, a bug) leaves it as it was;
        no exception closes it.
        """
        self._admit()
        try:
            yield
        except failures as exc:
            self._failed(exc)
            raise
        except BaseException:
            with self._lock:
                self._probing = False
            raise
        self._succeeded()

    def _admit(self) -> None:
        with self._lock:
            if self.failures == 0:
                return
            if self._probing or self.clock() < self._reopens_at:
                raise BackingOff(f"{self.name}: {self.failures} failed call(s) in a row, not asked again yet")
            self._probing = True

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            failures, period = self.failures, min(self.first * 2 ** (self.failures - 1), self.longest)
            self._reopens_at = self.clock() + period
            self._probing = False
        from chalicelib.runtime.observability import logger

        logger().warning(
            f"{self.name} failed; not asking it again for {period:g} s",
            extra={"dependency": self.name, "reason": type(exc).__name__, "failures_in_a_row": failures},
        )

    def _succeeded(self) -> None:
        with self._lock:
            failures, self.failures, self._probing = self.failures, 0, False
        if failures:
            from chalicelib.runtime.observability import logger

            logger().info(f"{self.name} answers again", extra={"dependency": self.name, "failures_in_a_row": failures})
