"""The fault soak at a few hundred events (bench/soak.py; `make soak` runs it at 20,000)."""

from __future__ import annotations

import io

import pytest

from bench.soak import Soak, SoakPlan
from edgectl.devstack import mariadb_available

pytestmark = pytest.mark.skipif(not mariadb_available(), reason="the receiver stores in MariaDB at 127.0.0.1:3306")


def test_every_accepted_event_is_stored_once_or_dead_lettered_then_redriven() -> None:
    out = io.StringIO()
    report = Soak(SoakPlan(), out=out).run()
    print(out.getvalue() + report.table())
    assert report.timed_out is None, out.getvalue()
    assert len(report.accepted) >= 0.9 * SoakPlan().events, report.table()
    assert 500 not in report.refused, report.table()  # the edge never crashed
    # The faults really happened: every kind, the wrong token window, the forwarder kill.
    for kind in ("5xx_before", "5xx_after", "slow", "reset_before", "reset_after", "wrong_token"):
        assert report.proxy[kind] > 0, report.table()
    assert report.restarts == 1
    # The promise: nothing lost, nothing stored twice, before and after the redrive.
    assert report.lost == 0 and report.duplicated == 0, report.table()
    # Idempotent retries happened, and every replay named the first 202's event ids.
    assert report.replays > 0 and report.replay_mismatches == 0, report.table()
    assert report.stored + report.dead_lettered == len(report.accepted)
    assert report.duplicate_deliveries > 0, "slow answers after commit must have caused redeliveries"
    assert report.stored_after_redrive == len(report.accepted), report.table()
    assert report.lost_after_redrive == 0 and report.duplicated_after_redrive == 0
    assert report.left_in_dlq == 0
    # The Loki sink was down for a while and still has every accepted log event.
    assert report.loki_outage_refusals > 0 and report.accepted_logs, report.table()
    assert report.lost_at_loki == 0 and report.in_loki == len(report.accepted_logs), report.table()
    assert report.ok
