"""Rate limits settled in batches: containers counting locally against one moto counter."""

from __future__ import annotations

import random
import time
from collections import Counter

import boto3
import pytest

from chalicelib.edge import ratelimit
from chalicelib.edge.ratelimit import CALL_TIMEOUT_SECONDS, SETTLE_EVENTS, SETTLE_SECONDS, MinuteLimiter
from chalicelib.runtime.aws import client
from chalicelib.runtime.deadline import TIMEOUT_STEPS, Deadline
from tests.conftest import REGION

MINUTE_START = 1_800_000_000 // 60 * 60  # a whole minute, so simulated minutes are whole too


def count_dynamodb_writes() -> Counter[str]:
    """DynamoDB calls of the rate counter's client, by operation, as botocore sends them."""
    calls: Counter[str] = Counter()
    counter_client = client("dynamodb", single_attempt=True, timeout_seconds=CALL_TIMEOUT_SECONDS)
    counter_client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.update([model.name]), unique_id="count-writes"
    )
    return calls


def simulate(
    table: str, limit: int, offered_per_minute: int, minutes: int, containers: int = 10
) -> tuple[Counter[int], int]:
    """Requests of one event each, evenly spread over simulated time, each to a random container;
    accepted events per minute and the number of requests."""
    limiters = [MinuteLimiter(table) for _ in range(containers)]
    rng = random.Random(29)
    requests = offered_per_minute * minutes
    accepted: Counter[int] = Counter()
    for i in range(requests):
        now = MINUTE_START + i * 60 * minutes / requests
        if not rng.choice(limiters).over_limit("42", limit, 1, now):
            accepted[int(now) // 60] += 1
    return accepted, requests


def test_ten_containers_at_twice_the_limit_stay_within_ten_percent_for_a_write_per_20_requests(aws):
    calls = count_dynamodb_writes()
    limit = 3000
    accepted, requests = simulate(aws.idempotency_table, limit, offered_per_minute=2 * limit, minutes=3)
    assert len(accepted) == 3
    for minute, events in accepted.items():
        assert limit <= events <= 1.10 * limit, minute  # never under the limit at twice its traffic
    assert set(calls) == {"UpdateItem"}
    assert 0 < calls["UpdateItem"] <= requests / 20
    stored = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=aws.idempotency_table, Key={"pk": {"S": f"rate#42#{MINUTE_START // 60}"}}
    )["Item"]
    assert limit < int(stored["hits"]["N"]) <= max(accepted.values()) + 10  # + each container's refused request
    assert int(stored["expires_at"]["N"]) == MINUTE_START + 120


def test_below_the_limit_everything_passes_for_a_write_per_settle_batch(aws):
    calls = count_dynamodb_writes()
    limit = 6000
    accepted, requests = simulate(aws.idempotency_table, limit, offered_per_minute=limit // 2, minutes=2)
    assert sum(accepted.values()) == requests
    assert 0 < calls["UpdateItem"] <= requests / SETTLE_EVENTS * 1.05  # + each container's first settle


def test_a_spent_minute_is_refused_locally_until_the_next(aws):
    calls = count_dynamodb_writes()
    limiter = MinuteLimiter(aws.idempotency_table)
    assert [limiter.over_limit("42", 2, 1, MINUTE_START + t) for t in (0, 1, 2)] == [False, False, True]
    writes = calls["UpdateItem"]
    assert all(limiter.over_limit("42", 2, 1, MINUTE_START + 3 + t / 10) for t in range(100))
    assert calls["UpdateItem"] == writes
    assert limiter.over_limit("42", 2, 1, MINUTE_START + 60) is False


def test_a_request_bigger_than_the_limit_is_refused_without_a_write(aws):
    calls = count_dynamodb_writes()
    assert MinuteLimiter(aws.idempotency_table).over_limit("42", 5, 6, MINUTE_START) is True
    assert calls["UpdateItem"] == 0


def test_projects_are_counted_apart(aws):
    limiter = MinuteLimiter(aws.idempotency_table)
    assert limiter.over_limit("1", 1, 1, MINUTE_START) is False
    assert limiter.over_limit("2", 1, 1, MINUTE_START) is False
    assert limiter.over_limit("1", 1, 1, MINUTE_START + 1) is True


def test_a_container_learns_of_the_others_when_it_settles(aws):
    first, second = MinuteLimiter(aws.idempotency_table), MinuteLimiter(aws.idempotency_table)
    for t in range(50):
        assert first.over_limit("42", 60, 1, MINUTE_START + t / 10) is False
    # The second's first request settles, and its answer holds the first's settled events.
    assert second.over_limit("42", 60, 11, MINUTE_START + 5) is True


def test_an_unreachable_counter_lets_requests_through_and_is_retried_after_the_settle_interval(aws, monkeypatch):
    calls = count_dynamodb_writes()
    # The edge's configured table is gone (its policy names the configured table: another is AccessDenied).
    monkeypatch.setenv("LOOKOUT_EDGE_IDEMPOTENCY_TABLE", "no-such-table")
    limiter = MinuteLimiter("no-such-table")
    with pytest.raises(Exception, match="ResourceNotFound"):
        limiter.over_limit("42", 100, 1, MINUTE_START)
    # Failing open: no refusal, and no call per request while the counter is down.
    assert not any(limiter.over_limit("42", 100, 1, MINUTE_START + t / 10) for t in range(1, 49))
    assert calls["UpdateItem"] == 1
    monkeypatch.setenv("LOOKOUT_EDGE_IDEMPOTENCY_TABLE", aws.idempotency_table)
    limiter.table = aws.idempotency_table  # the counter is back
    assert limiter.over_limit("42", 100, 1, MINUTE_START + SETTLE_SECONDS) is False
    assert calls["UpdateItem"] == 2
    stored = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=aws.idempotency_table, Key={"pk": {"S": f"rate#42#{MINUTE_START // 60}"}}
    )["Item"]
    assert stored["hits"]["N"] == "50"  # nothing let through while it was down is forgotten


def test_no_settle_when_the_deadline_is_nearer_than_the_call_could_take(aws):
    calls = count_dynamodb_writes()
    limiter = MinuteLimiter(aws.idempotency_table)
    assert limiter.over_limit("42", 1, 1, MINUTE_START, deadline=Deadline.after(2 * min(TIMEOUT_STEPS))) is False
    assert calls["UpdateItem"] == 0
    assert limiter.over_limit("42", 1, 1, MINUTE_START + 1, deadline=Deadline.after(3)) is True


def test_a_stalled_counter_is_tried_once_and_the_request_deadline_holds(aws, silent_aws):
    client("dynamodb", single_attempt=True, timeout_seconds=CALL_TIMEOUT_SECONDS)  # a warm container's
    deadline = Deadline.after(1.5)
    with pytest.raises(Exception, match="timeout"):
        ratelimit.over_limit(aws.idempotency_table, "42", 100, 1, MINUTE_START, deadline)
    assert deadline.left() > 0
    waited = time.monotonic() + 5
    while not silent_aws and time.monotonic() < waited:  # the server's thread may not have run yet
        time.sleep(0.01)
    assert len(silent_aws) == 1 and b"UpdateItem" in silent_aws[0]
