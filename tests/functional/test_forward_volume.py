"""Batches of up to 100: requests split by count and bytes, backpressure, the invocation's deadline.

End to end: moto SQS, a real HTTP server as Lookout (and the strict Loki fake), the handler
as Lambda's event source calls it, with batches gathered as the event source gathers them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from chalicelib.forward import handler
from chalicelib.forward.handler import BatchIncomplete
from chalicelib.forward.sinks.base import Reason, delivered, retry
from chalicelib.forward.sinks.batching import MIB, Limits, deliver_in_requests, request_caps
from chalicelib.forward.sinks.http_post import HttpAnswer
from chalicelib.runtime.config import settings
from edgectl.lambda_shim import receive_batch, sqs_record
from edgectl.resources import StackNames
from tests.fake_lookout import (
    REGION,
    FakeLookout,
    Seen,
    accept_all,
    forward_like_lambda,
    queue_counts,
    queue_message,
    release,
)
from tests.fake_sinks import StrictLoki


def fill(queue_url: str, count: int, payload_bytes: int = 0) -> list[dict[str, Any]]:
    """`count` messages on the queue, ten per SendMessageBatch; each payload about `payload_bytes`."""
    sqs = boto3.client("sqs", region_name=REGION)
    messages = [queue_message({"message": f"m{i}", "pad": "x" * payload_bytes}) for i in range(count)]
    for start in range(0, count, 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(m, separators=(",", ":")),
                    "MessageAttributes": {"signal": {"DataType": "String", "StringValue": m["signal"]}},
                }
                for i, m in enumerate(messages[start : start + 10])
            ],
        )
    return messages


def batch_event(queue_url: str, batch_size: int = 100, window: float = 20) -> dict[str, Any]:
    """One invocation's SQS event, gathered as the event source mapping gathers it (the window
    is long: the queue is filled beforehand, and moto answers slowly on a loaded machine)."""
    sqs = boto3.client("sqs", region_name=REGION)
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages = receive_batch(sqs, queue_url, wait_seconds=0, batch_size=batch_size, window_seconds=window)
    return {"Records": [sqs_record(m, arn) for m in messages]}


def event_ids(requests: list[Seen]) -> list[list[str]]:
    return [[e["event_id"] for e in r.body["events"]] for r in requests]


def all_event_ids(requests: list[Seen]) -> list[str]:
    return [e["event_id"] for r in requests for e in r.body["events"]]


def test_the_event_source_shim_gathers_a_batch_of_100_from_receives_of_10(aws: StackNames) -> None:
    fill(aws.queue_url, 130)
    assert len(batch_event(aws.queue_url)["Records"]) == 100
    assert len(batch_event(aws.queue_url, window=1.5)["Records"]) == 30  # the window closed on an empty queue


def test_a_batch_of_100_is_one_request_and_every_message_settles(aws: StackNames, lookout: FakeLookout) -> None:
    messages = fill(aws.queue_url, 100)

    assert forward_like_lambda(batch_event(aws.queue_url)) == {"batchItemFailures": []}

    assert event_ids(lookout.requests) == [[m["event_id"] for m in messages]]
    assert queue_counts(aws.queue_url) == (0, 0) and queue_counts(aws.dlq_url) == (0, 0)


def test_large_events_go_in_requests_of_at_most_1_mib_each_event_once(aws: StackNames, lookout: FakeLookout) -> None:
    messages = fill(aws.queue_url, 100, payload_bytes=30_000)  # ~3 MB in all

    assert forward_like_lambda(batch_event(aws.queue_url)) == {"batchItemFailures": []}

    sizes = [len(json.dumps(r.body, separators=(",", ":"))) for r in lookout.requests]
    assert len(sizes) == 3 and all(size <= MIB for size in sizes), sizes
    assert all_event_ids(lookout.requests) == [m["event_id"] for m in messages]
    assert queue_counts(aws.queue_url) == (0, 0)


def test_after_a_429_the_rest_of_the_batch_is_not_sent_and_all_of_it_backs_off(
    aws: StackNames, lookout: FakeLookout
) -> None:
    lookout.answer = lambda seen: (429, {"Retry-After": "30"}, {"error": "slow down"})
    fill(aws.queue_url, 100, payload_bytes=30_000)  # three requests' worth
    event = batch_event(aws.queue_url)

    with pytest.raises(BatchIncomplete, match="100 of 100"):
        forward_like_lambda(event)

    assert len(lookout.requests) == 1  # not three: a backend asking for less gets less
    release_after = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=aws.queue_url)
    assert "Messages" not in release_after  # all hidden for their backoff (Retry-After 30 s)
    assert queue_counts(aws.queue_url) == (0, 100) and queue_counts(aws.dlq_url) == (0, 0)


def test_a_batch_that_timed_out_is_retried_in_smaller_requests(
    aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lookout takes 50 events within the read timeout but not 100: the retry sends halves."""
    monkeypatch.setenv("LOOKOUT_EDGE_FORWARD_READ_TIMEOUT", "0.5")
    settings.cache_clear()

    def slow_for_many(seen: Seen) -> tuple[int, dict[str, str], Any]:
        if len(seen.body["events"]) > 50:
            time.sleep(1.0)
        return accept_all(seen)

    lookout.answer = slow_for_many
    messages = fill(aws.queue_url, 100)
    event = batch_event(aws.queue_url)
    with pytest.raises(BatchIncomplete):
        forward_like_lambda(event)
    release(aws.queue_url, event)

    assert forward_like_lambda(batch_event(aws.queue_url)) == {"batchItemFailures": []}

    assert [len(ids) for ids in event_ids(lookout.requests)] == [100, 50, 50]
    assert sorted(all_event_ids(lookout.requests[1:])) == sorted(m["event_id"] for m in messages)
    assert queue_counts(aws.queue_url) == (0, 0)


def test_no_request_starts_that_could_outlast_the_invocation(
    aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 s are needed per request (connect 1 + read 2 + 5 for the settlement): with 9 s left, the
    first request goes (its answer takes 1.5 s) and the rest of the batch is left for later."""
    monkeypatch.setenv("LOOKOUT_EDGE_FORWARD_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("LOOKOUT_EDGE_FORWARD_READ_TIMEOUT", "2")
    settings.cache_clear()
    lookout.delay = 1.5
    fill(aws.queue_url, 100, payload_bytes=30_000)
    event = batch_event(aws.queue_url)

    with pytest.raises(BatchIncomplete) as raised:
        handler.forward(event, remaining_ms=9_000)

    (sent,) = event_ids(lookout.requests)
    assert str(raised.value).startswith(f"{100 - len(sent)} of 100")
    release(aws.queue_url, event)
    lookout.delay = 0  # the deferral is shown; the rest need not take 1.5 s a request
    # The rest, whole: the batching window would wait for a 100th message that is not there.
    assert forward_like_lambda(batch_event(aws.queue_url, batch_size=100 - len(sent))) == {"batchItemFailures": []}
    assert len(all_event_ids(lookout.requests)) == 100  # the deferred ones once, later
    assert queue_counts(aws.queue_url) == (0, 0) and queue_counts(aws.dlq_url) == (0, 0)


def test_lookout_and_loki_each_get_a_batch_of_100_in_their_own_requests(
    aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch
) -> None:
    loki = StrictLoki().start()
    try:
        monkeypatch.setenv(
            "LOOKOUT_EDGE_SINKS", json.dumps([{"name": "loki", "type": "loki", "url": loki.url, "signals": ["error"]}])
        )
        settings.cache_clear()
        messages = fill(aws.queue_url, 100, payload_bytes=15_000)  # ~1.5 MB of lines

        assert forward_like_lambda(batch_event(aws.queue_url)) == {"batchItemFailures": []}

        assert len(lookout.requests) == 2  # 1 MiB each at most
        assert len(loki.requests) == 2
        pushed = [json.loads(text)["event_id"] for _, text in loki.lines()]
        assert pushed == [m["event_id"] for m in messages]
        assert queue_counts(aws.queue_url) == (0, 0)
    finally:
        loki.stop()


def test_requests_hold_the_limit_in_events_and_bytes_and_an_oversized_event_alone() -> None:
    sent: list[list[int]] = []

    def send(batch: Any) -> tuple[HttpAnswer, list]:
        sent.append(list(batch))
        return HttpAnswer(200), [delivered(200)] * len(batch)

    sizes = [100] * 25 + [5_000] + [100] * 4
    outcomes = deliver_in_requests("test", Limits(max_events=10, max_bytes=1_000), sizes, send)

    assert outcomes == [delivered(200)] * 30
    assert sent == [list(range(0, 10)), list(range(10, 20)), list(range(20, 25)), [25], list(range(26, 30))]


def test_a_timeout_halves_the_requests_and_answers_that_take_everything_grow_them_back() -> None:
    sent: list[int] = []

    def send(batch: Any) -> tuple[HttpAnswer, list]:
        sent.append(len(batch))
        if len(sent) == 1:
            return HttpAnswer(None, error="timeout"), [retry(Reason.TIMEOUT)] * len(batch)
        return HttpAnswer(200), [delivered(200)] * len(batch)

    deliver_in_requests("test", Limits(), [10] * 100, send)
    assert sent == [100]
    assert request_caps()["test"] == 50
    deliver_in_requests("test", Limits(), [10] * 100, send)
    assert sent == [100, 50, 50]
    assert request_caps()["test"] == 70  # two answers that took everything: +10 each


@pytest.mark.parametrize(
    ("outcome", "requests"),
    [
        (retry(Reason.HTTP_STATUS, 503), 1),  # the backend says it is busy: the rest waits
        (retry(Reason.HTTP_STATUS, 429), 1),
        (retry(Reason.CONNECTION), 1),
        (retry(Reason.AUTH_FAILED, 401), 1),
        (retry(Reason.HTTP_STATUS, 500), 3),  # one request's failure: the others still go
        (retry(Reason.MISSING_RESULT, 200), 3),
    ],
)
def test_what_holds_back_the_rest_of_the_batch(outcome: Any, requests: int) -> None:
    sent: list[int] = []

    def send(batch: Any) -> tuple[HttpAnswer, list]:
        sent.append(len(batch))
        return HttpAnswer(outcome.status), [outcome] * len(batch)

    assert deliver_in_requests("test", Limits(max_events=10), [1] * 30, send) == [outcome] * 30
    assert len(sent) == requests


def test_a_timeout_outcome_holds_back_the_rest_with_it() -> None:
    def send(batch: Any) -> tuple[HttpAnswer, list]:
        return HttpAnswer(None, error="timeout"), [retry(Reason.TIMEOUT)] * len(batch)

    outcomes = deliver_in_requests("test", Limits(max_events=10), [1] * 30, send)
    assert outcomes == [retry(Reason.TIMEOUT)] * 30
    assert request_caps()["test"] == 5
