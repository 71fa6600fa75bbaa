"""The per-container back-off (runtime/backoff.py): open after a failure, one probe at a time once
its period is over, the period doubling while probes fail (capped), closed by any success."""

import pytest

from chalicelib.runtime.backoff import BackingOff, Backoff
from tests.conftest import Clock


class Down(Exception):
    """A failure of the dependency."""


def backoff(clock: Clock) -> Backoff:
    return Backoff("table", first=1.0, longest=10.0, clock=clock)


def call(breaker: Backoff, outcome: type[BaseException] | None = None) -> bool:
    """One call through the back-off: True when it was made, False when it was held off."""
    try:
        with breaker.attempt((Down,)):
            if outcome is not None:
                raise outcome("call failed")
    except BackingOff:
        return False
    except (Down, RuntimeError):
        pass
    return True


def test_closed_lets_every_call_through_and_a_failure_holds_off_for_the_first_period():
    clock = Clock()
    breaker = backoff(clock)
    assert call(breaker) and call(breaker) and not breaker.holding_off()
    assert call(breaker, Down)
    assert breaker.holding_off() and not call(breaker)
    clock.now += 0.99
    assert not call(breaker)
    clock.now += 0.01
    assert not breaker.holding_off()
    assert call(breaker)  # the probe, and it succeeded: closed
    assert breaker.failures == 0 and call(breaker) and call(breaker)


def test_each_failed_probe_doubles_the_period_up_to_the_longest():
    clock = Clock()
    breaker = backoff(clock)
    periods = []
    call(breaker, Down)
    for _ in range(6):
        waited = 0.0
        while not call(breaker, Down):  # probes as soon as it may, and fails again
            clock.now += 0.5
            waited += 0.5
        periods.append(waited)
    assert periods == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_one_probe_at_a_time_the_others_are_held_off_until_it_reports():
    clock = Clock()
    breaker = backoff(clock)
    call(breaker, Down)
    clock.now += 1
    with breaker.attempt((Down,)):  # the probe, in flight
        assert breaker.holding_off()
        with pytest.raises(BackingOff), breaker.attempt((Down,)):
            pytest.fail("a second probe while the first is in flight")
    assert not breaker.holding_off() and breaker.failures == 0


def test_a_probe_that_made_no_call_leaves_the_period_as_it_was_and_the_next_caller_probes():
    clock = Clock()
    breaker = backoff(clock)
    call(breaker, Down)
    clock.now += 1
    assert call(breaker, RuntimeError)  # not a failure of the dependency (no time left for the call)
    assert breaker.failures == 1 and not breaker.holding_off()
    assert call(breaker, Down) and breaker.failures == 2  # the next one probes; failing, 2 s
    clock.now += 1.5
    assert not call(breaker)
