"""Issue #27 point 3, short: bench/outages.py at a few seconds per phase (`make soak` runs 60 s each).

Under steady load of single events and NDJSON batches, the edge region's SQS answers errors, then
stalls: its edge spills to the home region's queue. Then the keys table and the idempotency table do
the same. Every request is answered 202 (but those with an Idempotency-Key while the idempotency
table is down: 503 by design), every accepted event is stored once by the receiver, nothing is in
either region's dead-letter queue.
"""

from __future__ import annotations

import io

import pytest

from bench.outages import PHASES, OutagePlan, OutageSoak
from chalicelib.edge.spill import BACKOFF_LONGEST_SECONDS
from edgectl.devstack import mariadb_available

pytestmark = pytest.mark.skipif(not mariadb_available(), reason="the receiver stores in MariaDB at 127.0.0.1:3306")


def test_an_outage_in_the_edges_region_costs_no_event() -> None:
    out = io.StringIO()
    plan = OutagePlan(phase_seconds=4.0)
    report = OutageSoak(plan, out=out).run()
    table = out.getvalue() + report.table()
    print(table)
    assert report.timed_out is None, table
    assert [phase.name for phase in report.phases] == [phase.name for phase in PHASES]
    phases = {phase.name: phase for phase in report.phases}
    for phase in report.phases:
        assert phase.requests > 0 and phase.accepted, table
        # Zero refused. A request with an Idempotency-Key needs its claim: 503 while the idempotency
        # table is down (by design), and, on a loaded machine, when the local table answers a claim
        # later than its 0.5 s timeout (docs/reliability.md, "Time budgets"): not what this test is about.
        assert phase.unkeyed_refused == 0 and set(phase.keyed_refused) <= {503}, table
    # Keyed requests were spilled too (their claims record what got into either queue).
    assert phases["SQS errors"].keyed_accepted > 0 and phases["SQS stalled"].keyed_accepted > 0, table
    # The faults really happened: every fault phase failed calls, the SQS ones spilled (the others did not),
    # keyed requests were refused while the idempotency table was down.
    # (The SQS stalled phase may make no regional call at all: it follows the errors phase, whose
    # back-off, up to BACKOFF_LONGEST_SECONDS, can outlast a 4 s phase; tests/functional/test_spill.py
    # has the stall and its probe, and `make soak`'s 60 s phases show both.)
    unfaulted = ("baseline", "SQS stalled", "recovered")
    assert all(phase.faulted > 0 for phase in report.phases if phase.name not in unfaulted), table
    assert phases["SQS errors"].spilled > 0 and phases["SQS stalled"].spilled > 0, table
    assert phases["baseline"].spilled == 0, table
    # After the SQS phases a container keeps spilling until a probe finds its region again, at most
    # BACKOFF_LONGEST_SECONDS later (chalicelib/edge/spill.py): the phases after that spill nothing.
    last_sqs = max(index for index, phase in enumerate(report.phases) if phase.name.startswith("SQS"))
    settled = [
        phase
        for index, phase in enumerate(report.phases)
        if (index - last_sqs - 1) * plan.phase_seconds >= BACKOFF_LONGEST_SECONDS
    ]
    assert settled and all(phase.spilled == 0 for phase in settled), table
    assert phases["idem errors"].keyed_refused and phases["idem stalled"].keyed_refused, table
    # Zero lost, none stored twice, nothing dead-lettered.
    assert report.lost == 0 and report.duplicated == 0 and report.dead_lettered == 0, table
    assert report.stored == len(report.accepted)
