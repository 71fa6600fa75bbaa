"""Bounded memory per request (issue #24 point 2): each door's worst accepted and worst refused
request, through the real app on moto, peaks under 256 MB (the edge function has 512 MB).

The peak is tracemalloc's: every Python allocation of the request, moto's DynamoDB included,
not the C heap of protobuf's parser (upb), which holds at most the parsed message (a few times
its 5 MiB). SQS is a recording stand-in that confirms every message: moto's SQS keeps what it
is sent (it would count the queue's memory as the edge's) and takes minutes for 1,000 messages
under tracemalloc. The inputs are tests/worst_inputs.py; `make bench` prints the same peaks.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from chalicelib.edge.pipeline import QUEUED_MULTIPLE
from tests.worst_inputs import KEY, MIB, WORST, RecordingSQS, WorstCase

PEAK_LIMIT = 256 * MIB


def peak_of(http: Any, case: WorstCase) -> tuple[Any, int]:
    """The answer to `case` and the request's peak of traced memory, in bytes."""
    tracemalloc.start()
    try:
        response = http.post(case.path, body=case.body, headers=case.headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, peak


@pytest.mark.parametrize("build", WORST, ids=lambda build: build.__name__)
def test_the_worst_request_of_each_door_peaks_under_256_mb(http, put_key, aws, monkeypatch, build) -> None:
    # Memory, not time, is under test: tracemalloc makes every allocation several times slower, and the
    # request's 3.5 s budget ran out while decoding (503), before the key lookup and the enqueue.
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", 120.0)
    put_key(KEY)
    sqs = RecordingSQS.install(monkeypatch)
    case = build()
    response, peak = peak_of(http, case)
    assert response.status_code == case.status, response.body[:300]
    assert peak < PEAK_LIMIT, f"{case.door} {case.name}: peak {peak / MIB:.0f} MiB"
    queued = sqs.queued_bytes
    if case.status == 413:
        assert queued == 0
    else:
        cap = 8 * MIB if case.door == "firehose" else 5 * MIB
        assert 0 < queued <= QUEUED_MULTIPLE * cap, f"queued {queued / MIB:.1f} MiB"


def test_an_uncompressed_firehose_body_is_refused_like_the_gzipped_one(http, put_key, aws) -> None:
    from tests.worst_inputs import firehose_refused_plain

    put_key(KEY)
    plain = firehose_refused_plain()
    gzipped = WorstCase(
        plain.door, plain.name, plain.path, {**plain.headers, "Content-Encoding": "gzip"}, _gzip(plain.body), 413
    )
    for case in (plain, gzipped):
        response = http.post(case.path, body=case.body, headers=case.headers)
        assert response.status_code == 413
        assert response.json_body["errorMessage"].startswith("payload_too_large:")


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, 1)


def test_one_budget_covers_the_body_and_every_nested_decompression() -> None:
    """The delivery's 8 MiB is spent by the body as decoded and by each CloudWatch Logs message:
    two records of 3 MiB fit after a small body, a third is refused while it is decompressed."""
    import gzip

    from chalicelib.contract.budget import DecodeBudget
    from chalicelib.contract.errors import EdgeError
    from chalicelib.edge.doors import firehose
    from tests.firehose_producer import Delivery, cloudwatch_logs_record

    record = cloudwatch_logs_record(["x" * 65536] * 48)  # ~3 MiB decoded, ~9 KiB gzip
    for count, fits in ((2, True), (3, False)):
        _, body = Delivery([record] * count, KEY, gzip_body=True).request()
        budget = DecodeBudget(firehose.FIREHOSE_POLICY.decoded_limit)
        request = firehose.load_request(body, "gzip", budget)
        assert budget.used == len(gzip.decompress(body))
        if fits:
            events = firehose.decode_delivery(request, "log", budget)
            assert sum(len(event.payload["entries"]) for event in events) == count * 48
            assert budget.used == len(gzip.decompress(body)) + count * len(gzip.decompress(record))
        else:
            with pytest.raises(EdgeError) as refused:
                firehose.decode_delivery(request, "log", budget)
            assert refused.value.status == 413 and refused.value.message.startswith("record 3:")
            assert budget.used <= budget.limit + 64 * 1024  # stopped within one zlib chunk of the cap


def test_an_uncompressed_body_spends_the_budget_as_a_gzipped_one_does() -> None:
    from chalicelib.contract.errors import EdgeError
    from chalicelib.edge.doors import firehose
    from tests.worst_inputs import firehose_refused_plain

    plain = firehose_refused_plain().body
    for body, encoding in ((plain, None), (_gzip(plain), "gzip")):
        with pytest.raises(EdgeError) as refused:
            firehose.load_request(body, encoding)
        assert refused.value.status == 413
