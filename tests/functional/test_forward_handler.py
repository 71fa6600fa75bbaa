"""The forwarder end to end: moto SQS, a real HTTP server as Lookout, the handler as Lambda calls it."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from chalicelib.forward.handler import BatchIncomplete
from chalicelib.runtime.config import ConfigError, settings
from edgectl.resources import StackNames
from tests.conftest import EDGE_TOKEN as TOKEN
from tests.conftest import drain_queue
from tests.fake_lookout import (
    REGION,
    FakeLookout,
    Seen,
    accept_all,
    enqueue,
    forward_like_lambda,
    queue_counts,
    queue_message,
    release,
    sqs_event,
)


def results(*verdicts: tuple[str, str]) -> dict:
    return {
        "results": [
            {"event_id": e, "status": s, **({"error": "bad shape"} if s == "rejected" else {})} for e, s in verdicts
        ]
    }


def test_all_accepted_are_posted_once_and_deleted(aws: StackNames, lookout: FakeLookout) -> None:
    messages = [queue_message({"message": f"m{i}"}) for i in range(3)]
    enqueue(aws.queue_url, messages)

    answer = forward_like_lambda(sqs_event(aws.queue_url))

    assert answer == {"batchItemFailures": []}
    assert len(lookout.requests) == 1
    request = lookout.requests[0]
    assert request.path == "/api/ingest/edge"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"events": messages}
    assert queue_counts(aws.queue_url) == (0, 0)
    assert queue_counts(aws.dlq_url) == (0, 0)


def test_a_settled_batch_is_left_for_lambda_to_delete(
    aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda deletes a batch whose handler returned: a DeleteMessageBatch of the forwarder's own
    would be a second, billed call for the same messages."""
    from app import forward_events
    from chalicelib.runtime import sqs_batch

    calls: list[str] = []
    monkeypatch.setattr(sqs_batch, "delete_messages", lambda url, handles: calls.append(url) or set())
    messages = [queue_message({"message": f"m{i}"}) for i in range(3)]
    ids = [m["event_id"] for m in messages]
    enqueue(aws.queue_url, messages)
    lookout.answer = lambda r: (207, {}, results((ids[0], "accepted"), (ids[1], "rejected"), (ids[2], "duplicate")))

    assert forward_events(sqs_event(aws.queue_url), None) == {"batchItemFailures": []}

    assert calls == []
    assert queue_counts(aws.queue_url) == (0, 3)  # in flight until Lambda deletes them
    assert queue_counts(aws.dlq_url) == (1, 0)  # the refused one's copy is made first


def test_rejected_event_alone_goes_to_dlq_with_reason(aws: StackNames, lookout: FakeLookout) -> None:
    messages = [queue_message() for _ in range(3)]
    bodies = enqueue(aws.queue_url, messages)
    ids = [m["event_id"] for m in messages]
    lookout.answer = lambda r: (207, {}, results((ids[0], "accepted"), (ids[1], "rejected"), (ids[2], "duplicate")))

    forward_like_lambda(sqs_event(aws.queue_url))

    assert queue_counts(aws.queue_url) == (0, 0)
    (dead,) = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=aws.dlq_url, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead["Body"] == bodies[1]
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes == {
        "signal": "error",
        "project_id": "42",
        "dlq_reason": "rejected",
        "dlq_status": "207",
        "dlq_error": "bad shape",
        "dlq_sinks": "lookout",
        "dlq_refusals": '{"lookout":{"reason":"rejected","status":207,"error":"bad shape"}}',
    }


def test_server_error_deletes_nothing_and_hides_for_backoff(aws: StackNames, lookout: FakeLookout) -> None:
    enqueue(aws.queue_url, [queue_message() for _ in range(4)])
    lookout.answer = lambda r: (500, {}, {"error": "oops"})

    with pytest.raises(BatchIncomplete, match="4 of 4"):
        forward_like_lambda(sqs_event(aws.queue_url))

    assert queue_counts(aws.queue_url) == (0, 4)
    assert queue_counts(aws.dlq_url) == (0, 0)
    # First receive, base 1 s: back after about a second (moto honours ChangeMessageVisibility).
    time.sleep(1.2)
    assert queue_counts(aws.queue_url) == (4, 0)


def test_retry_after_is_honoured(aws: StackNames, lookout: FakeLookout) -> None:
    enqueue(aws.queue_url, [queue_message()])
    lookout.answer = lambda r: (503, {"Retry-After": "3"}, {"error": "token_unset"})

    with pytest.raises(BatchIncomplete):
        forward_like_lambda(sqs_event(aws.queue_url))

    time.sleep(1.5)  # backoff alone (1 s) would have released it by now
    assert queue_counts(aws.queue_url) == (0, 1)
    time.sleep(2)
    assert queue_counts(aws.queue_url) == (1, 0)


def test_timeout_is_transient(aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_EDGE_FORWARD_READ_TIMEOUT", "0.3")
    settings.cache_clear()
    lookout.delay = 1.0  # without the read timeout the backend's 200 would delete both
    enqueue(aws.queue_url, [queue_message(), queue_message()])

    with pytest.raises(BatchIncomplete):
        forward_like_lambda(sqs_event(aws.queue_url))

    assert queue_counts(aws.queue_url) == (0, 2)
    assert queue_counts(aws.dlq_url) == (0, 0)


def test_connection_refused_is_transient(
    aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookout.stop()  # nothing listens on that port any more
    settings.cache_clear()
    enqueue(aws.queue_url, [queue_message()])

    with pytest.raises(BatchIncomplete):
        forward_like_lambda(sqs_event(aws.queue_url))

    assert queue_counts(aws.queue_url) == (0, 1)


def test_wrong_token_loses_nothing_and_delivers_once_fixed(
    aws: StackNames,
    lookout: FakeLookout,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", "the-wrong-token")
    settings.cache_clear()

    def check_token(request: Seen) -> tuple:
        if request.headers["authorization"] != f"Bearer {TOKEN}":
            # A careless backend that echoes what it got: must still never reach logs.
            return 401, {}, {"error": "unauthorized", "message": f"bad {request.headers['authorization']}"}
        return accept_all(request)

    lookout.answer = check_token
    messages = [queue_message() for _ in range(3)]
    enqueue(aws.queue_url, messages)

    event = sqs_event(aws.queue_url)
    with pytest.raises(BatchIncomplete):
        forward_like_lambda(event)
    assert queue_counts(aws.queue_url) == (0, 3)
    assert queue_counts(aws.dlq_url) == (0, 0)
    output = capsys.readouterr()
    logged = [str(record.__dict__) for record in caplog.records]
    assert all("the-wrong-token" not in text for text in [output.out, output.err, *logged])
    (failure,) = [r for r in caplog.records if r.getMessage() == "forward batch not fully delivered"]
    assert (failure.statuses, failure.reasons) == ([401], ["auth_failed"])  # the failure line says why

    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", TOKEN)
    settings.cache_clear()
    release(aws.queue_url, event)
    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}
    assert queue_counts(aws.queue_url) == (0, 0)
    assert lookout.requests[-1].body == {"events": messages}


def test_gzip_payload_arrives_as_the_original_json(aws: StackNames, lookout: FakeLookout) -> None:
    payload = {"message": "big", "lines": [f"line {i} of a long log " * 8 for i in range(2000)]}
    message = queue_message(payload)
    (body,) = enqueue(aws.queue_url, [message])
    assert json.loads(body)["payload_encoding"] == "gzip+base64"

    forward_like_lambda(sqs_event(aws.queue_url))

    (sent,) = lookout.requests[0].body["events"]
    assert sent["payload"] == payload
    assert sent["payload_encoding"] == "json"
    assert queue_counts(aws.queue_url) == (0, 0)


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_permanent_status_dead_letters_the_whole_batch(aws: StackNames, lookout: FakeLookout, status: int) -> None:
    enqueue(aws.queue_url, [queue_message() for _ in range(3)])
    lookout.answer = lambda r: (status, {}, {"error": "invalid", "message": "events[0] has no signal"})

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}

    assert queue_counts(aws.queue_url) == (0, 0)
    dead = drain_queue(aws.dlq_url)
    assert len(dead) == 3
    for message in dead:
        assert message["_attributes"]["dlq_reason"] == "batch_rejected"
        assert message["_attributes"]["dlq_status"] == str(status)
        assert message["_attributes"]["dlq_error"] == "invalid events[0] has no signal"


def test_a_413_for_a_combined_batch_dead_letters_only_the_event_too_large_on_its_own(
    aws: StackNames, lookout: FakeLookout
) -> None:
    """Lookout refuses request bodies over a byte limit: the batch is split in halves until only
    the event that is too large by itself is refused."""
    limit = 20_000

    def refuse_large(request: Seen) -> tuple:
        if len(json.dumps(request.body)) > limit:
            return 413, {}, {"error": "payload_too_large", "message": "body over limit"}
        return accept_all(request)

    lookout.answer = refuse_large
    messages = [queue_message({"message": f"small {i}", "pad": "x" * 1_500}) for i in range(10)]
    messages[6] = queue_message({"message": "huge", "pad": "y" * 30_000})
    bodies = enqueue(aws.queue_url, messages)

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}

    stored = [e["event_id"] for r in lookout.requests if len(json.dumps(r.body)) <= limit for e in r.body["events"]]
    assert sorted(stored) == sorted(m["event_id"] for i, m in enumerate(messages) if i != 6)
    assert queue_counts(aws.queue_url) == (0, 0)
    (dead,) = drain_queue_raw(aws.dlq_url)
    assert dead["Body"] == bodies[6]
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert (attributes["dlq_reason"], attributes["dlq_status"]) == ("batch_rejected", "413")


def test_partial_answer_settles_each_message_and_raises_for_the_rest(aws: StackNames, lookout: FakeLookout) -> None:
    """Path (a): the handler raises, so Lambda deletes nothing; path (b): what was delivered is
    already gone. Either way (ReportBatchItemFailures on or off) only the missing event remains."""
    messages = [queue_message() for _ in range(3)]
    bodies = enqueue(aws.queue_url, messages)
    ids = [m["event_id"] for m in messages]
    lookout.answer = lambda r: (200, {}, results((ids[0], "accepted"), (ids[1], "rejected")))  # ids[2] missing

    event = sqs_event(aws.queue_url)
    with pytest.raises(BatchIncomplete, match="1 of 3"):
        forward_like_lambda(event)

    assert queue_counts(aws.queue_url) == (0, 1)
    assert queue_counts(aws.dlq_url) == (1, 0)
    release(aws.queue_url, event)
    (left,) = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=aws.queue_url)["Messages"]
    assert left["Body"] == bodies[2]


def test_dlq_send_failure_keeps_the_rejected_event_queued(
    aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKOUT_EDGE_DLQ_URL", aws.dlq_url + "-missing")
    settings.cache_clear()
    messages = [queue_message(), queue_message()]
    enqueue(aws.queue_url, messages)
    lookout.answer = lambda r: (
        200,
        {},
        results((messages[0]["event_id"], "accepted"), (messages[1]["event_id"], "rejected")),
    )

    with pytest.raises(BatchIncomplete, match="1 of 2"):
        forward_like_lambda(sqs_event(aws.queue_url))

    assert queue_counts(aws.queue_url) == (0, 1)  # the accepted one is deleted, the rejected one kept


def test_malformed_message_is_dead_lettered_without_posting(aws: StackNames, lookout: FakeLookout) -> None:
    enqueue(aws.queue_url, ["not json at all"])

    forward_like_lambda(sqs_event(aws.queue_url))

    assert lookout.requests == []
    (dead,) = drain_queue_raw(aws.dlq_url)
    assert dead["Body"] == "not json at all"
    assert dead["MessageAttributes"]["dlq_reason"]["StringValue"] == "malformed"


def test_records_from_another_queue_are_refused_before_posting(
    aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(aws.queue_url, [queue_message()])
    event = sqs_event(aws.queue_url)
    monkeypatch.setenv("LOOKOUT_EDGE_QUEUE_URL", aws.dlq_url)
    settings.cache_clear()

    with pytest.raises(ConfigError, match="LOOKOUT_EDGE_QUEUE_URL"):
        forward_like_lambda(event)
    assert lookout.requests == []


def test_a_healthy_forwarder_counts_once_per_interval_and_failures_at_once(
    aws: StackNames, lookout: FakeLookout, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deliveries are summed in the container (a line per batch would be most of the log bill);
    a refusal is written by the invocation that saw it, so alarms see it at once."""

    def emf_lines() -> list[dict]:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]

    def batch(*statuses: str) -> None:
        messages = [queue_message() for _ in statuses]
        enqueue(aws.queue_url, messages)
        answer = results(*((m["event_id"], status) for m, status in zip(messages, statuses, strict=True)))
        lookout.answer = lambda r: (200, {}, answer)
        forward_like_lambda(sqs_event(aws.queue_url))

    batch("accepted", "duplicate", "rejected")
    first, refused = emf_lines()  # the container's first counts are written at once
    assert all(line["service"] == "lookout-edge-forwarder" for line in (first, refused))
    assert (first["forwarded"], first["duplicate"], len(first["backend_latency"])) == (1, 1, 1)
    assert (refused["rejected"], refused["dead_lettered"]) == ([1.0], [1.0])
    assert "forwarded" not in refused and "retried" not in first

    batch("accepted", "accepted")
    assert emf_lines() == []  # within the interval: nothing written

    monkeypatch.setenv("LOOKOUT_EDGE_METRICS_INTERVAL_SECONDS", "0")
    settings.cache_clear()
    batch("accepted")
    (line,) = emf_lines()
    assert line["forwarded"] == 3 and len(line["backend_latency"]) == 2
    units = {m["Name"]: m.get("Unit") for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"forwarded": None, "backend_latency": "Milliseconds"}


def drain_queue_raw(queue_url: str) -> list[dict]:
    return boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
