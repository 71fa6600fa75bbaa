"""runtime/deadline.py: the request's Deadline, its per-call timeouts and the clients they select.

The clock is the test's (a `Clock` standing in for time.monotonic): nothing here is timed."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import pytest

from chalicelib.runtime import aws, deadline
from chalicelib.runtime.deadline import MARGIN_SECONDS, TIMEOUT_STEPS, UNBOUNDED, Deadline, OutOfTime
from tests.conftest import Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    now = Clock(1000.0)
    monkeypatch.setattr(deadline, "time", SimpleNamespace(monotonic=now))
    return now


def test_a_call_gets_its_cap_while_two_waits_of_it_fit(clock: Clock) -> None:
    limit = Deadline.after(3.5)
    assert limit.at == 1003.5 and limit.left() == 3.5
    assert limit.call_timeout(0.5) == 0.5
    assert limit.call_timeout(0.8) == 0.8  # a cap off the steps is kept as it is
    clock.now += 3.5 - MARGIN_SECONDS - 2 * 0.5 - 0.01
    assert limit.call_timeout(0.5) == 0.5  # connect + read of 0.5 s still end before the margin
    clock.now += 0.02
    assert limit.call_timeout(0.5) == 0.25


@pytest.mark.parametrize(
    ("left", "expected"),
    [(4.2, 2.0), (4.0, 1.0), (2.1, 1.0), (2.0, 0.5), (1.0, 0.25), (0.65, 0.25), (0.61, 0.25), (0.5, 0.1), (0.31, 0.1)],
)
def test_a_short_time_left_rounds_down_to_a_step(clock: Clock, left: float, expected: float) -> None:
    limit = Deadline(clock.now + left)
    timeout = limit.call_timeout(2.0)
    assert timeout == expected
    assert 2 * timeout <= left - MARGIN_SECONDS  # one call (connect, then read) ends in time


@pytest.mark.parametrize("left", [0.29, 0.1, 0.0, -1.0])
def test_no_call_when_not_even_the_smallest_step_fits(clock: Clock, left: float) -> None:
    limit = Deadline(clock.now + left)
    with pytest.raises(OutOfTime):
        limit.call_timeout(2.0)
    assert not limit.allows(0.25)


def test_timeouts_are_a_handful_per_cap_whatever_the_time_left(clock: Clock) -> None:
    """Each distinct timeout is a client (or pool) kept per container: they must not multiply."""
    limit = Deadline(clock.now + 5.0)
    seen = set()
    while limit.allows(0.8):
        seen.add(limit.call_timeout(0.8))
        clock.now += 0.001
    assert seen == {0.8, 0.5, 0.25, 0.1}
    assert seen <= set(TIMEOUT_STEPS) | {0.8}


def test_sooner_keeps_a_reserve_and_the_deadline_is_immutable(clock: Clock) -> None:
    limit = Deadline.after(3.5)
    assert limit.sooner(0.6) == Deadline(1002.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limit.at = 0.0  # type: ignore[misc]


def test_outside_a_request_nothing_is_bounded() -> None:
    assert deadline.current() is UNBOUNDED
    assert UNBOUNDED.call_timeout(2.0) == 2.0 and UNBOUNDED.allows(60.0)
    assert UNBOUNDED.left() == float("inf")


def test_a_request_budget_is_this_contexts_only(clock: Clock) -> None:
    seen_elsewhere: list[Deadline] = []
    with deadline.request_budget() as limit:
        assert deadline.current() is limit and deadline.of_request() is limit
        assert limit.left() == deadline.REQUEST_BUDGET_SECONDS
        other = threading.Thread(target=lambda: seen_elsewhere.append(deadline.current()))  # another request
        other.start()
        other.join()
        with deadline.request_budget(1.0) as inner:
            assert deadline.current() is inner and inner.left() == 1.0
        assert deadline.current() is limit
    assert deadline.current() is UNBOUNDED
    assert seen_elsewhere == [UNBOUNDED]


def test_of_request_is_never_unbounded(clock: Clock) -> None:
    assert deadline.of_request().left() == deadline.REQUEST_BUDGET_SECONDS


def test_the_budget_leaves_the_php_sdk_room_for_a_cold_start() -> None:
    assert deadline.REQUEST_BUDGET_SECONDS <= 4.0  # the PHP SDK gives up at 5 s


def test_a_bounded_client_is_single_attempt_with_the_deadlines_timeout(clock: Clock) -> None:
    limit = Deadline(clock.now + 3.5)
    first = aws.bounded_client("dynamodb", limit, 0.5)
    assert first.meta.config.connect_timeout == first.meta.config.read_timeout == 0.5
    assert first.meta.config.retries["total_max_attempts"] == 1
    clock.now += 1.0
    assert aws.bounded_client("dynamodb", limit, 0.5) is first  # the same step: the same client
    clock.now += 1.5  # 1.0 s left: 0.25 s per wait
    short = aws.bounded_client("dynamodb", limit, 0.5)
    assert short is not first and short.meta.config.read_timeout == 0.25
    clock.now += 1.0
    with pytest.raises(OutOfTime):
        aws.bounded_client("dynamodb", limit, 0.5)
