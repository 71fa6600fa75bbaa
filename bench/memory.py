"""7. Peak memory per door (issue #24 point 2): each door's worst accepted and worst refused request.

The requests are tests/worst_inputs.py's (tests/functional/test_memory_bounds.py asserts each peak is
under 256 MB). The peak is tracemalloc's over the request through the real `app` (Chalice's
test client), against a moto server of its own, so moto's memory is not counted; protobuf's C
heap (upb) is not traced.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from bench.events import BENCH_KEY
from bench.stack import Stack, own_stack, put_bench_key, say

MIB = 1024 * 1024


def run(_shared: Stack) -> dict[str, Any]:
    with own_stack() as stack:
        put_bench_key(stack)
        return {"cases": [_measure(build) for build in _cases()], "limit_mib": 256}


def _cases() -> Any:
    from tests.worst_inputs import WORST

    return WORST


def _measure(build: Any) -> dict[str, Any]:
    from chalice.test import Client

    from app import app
    from tests.conftest import TEST_STAGE
    from tests.worst_inputs import KEY

    case = build()
    headers = {name: BENCH_KEY if value == KEY else value for name, value in case.headers.items()}
    with Client(app, stage_name=TEST_STAGE) as client:
        tracemalloc.start()
        try:
            response = client.http.post(case.path, body=case.body, headers=headers)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    say(f"memory: {case.door} {case.name}: {response.status_code}, peak {peak / MIB:.1f} MiB")
    return {"door": case.door, "case": case.name, "status": response.status_code, "peak_mib": round(peak / MIB, 1)}
