"""The ingest path (chalicelib/edge/pipeline.py) through the real app on moto: what a hostile or
unlucky client met in issue #15 — no partial accept, no silent drop, honest errors."""

from __future__ import annotations

import gzip
import json

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError

from chalicelib.contract.signals import MAX_EVENTS_PER_REQUEST
from chalicelib.runtime import aws as aws_clients
from tests.conftest import REGION, drain_queue

KEY = "lk_pipeline_secret_key_7"
NDJSON = "application/x-ndjson"


def post(http, path, body, content_type="application/json", **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = {k.replace("_", "-"): v for k, v in headers.items()}
    return http.post(path, body=raw, headers={"content-type": content_type, "x-api-key": KEY, **extra})


def ndjson(*payloads) -> bytes:
    return b"\n".join(json.dumps(p).encode() for p in payloads)


def error_of(response):
    assert set(response.json_body) == {"error", "message"}, response.json_body
    return response.status_code, response.json_body["error"]


def idempotency_items(aws) -> list[dict]:
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=aws.idempotency_table)["Items"]
    return [item for item in items if item["pk"]["S"].startswith("idem#")]


# --- 1. gzip members ------------------------------------------------------------------------


def test_three_gzip_members_are_three_events(http, put_key, aws):
    put_key(KEY)
    body = b"".join(gzip.compress(ndjson({"n": n}) + b"\n") for n in range(3))
    response = post(http, "/api/ingest/event", body, NDJSON, content_encoding="gzip")
    assert response.status_code == 202, response.json_body
    assert len(response.json_body["event_ids"]) == 3
    assert sorted(m["payload"]["n"] for m in drain_queue(aws.queue_url)) == [0, 1, 2]


def test_trailing_garbage_after_gzip_is_400_and_queues_nothing(http, put_key, aws):
    put_key(KEY)
    body = gzip.compress(ndjson({"n": 1})) + b"\x00garbage"
    assert error_of(post(http, "/api/ingest/event", body, NDJSON, content_encoding="gzip")) == (400, "invalid_body")
    assert drain_queue(aws.queue_url) == []


# --- 2. one Idempotency-Key, two different requests -----------------------------------------


@pytest.mark.parametrize(
    ("second_body", "second_type", "second_path"),
    [
        ({"job": "other"}, "application/json", "/api/ingest/job"),
        (ndjson({"job": "a"}, {"job": "b"}, {"job": "c"}), NDJSON, "/api/ingest/job"),
        ({"job": "nightly"}, "application/json", "/api/ingest/cron"),
    ],
    ids=["other-body", "ndjson-after-json", "other-route"],
)
def test_a_reused_key_for_another_request_is_422_and_enqueues_nothing(
    http, put_key, aws, second_body, second_type, second_path
):
    put_key(KEY)
    first = post(http, "/api/ingest/job", {"job": "nightly"}, idempotency_key="k-1")
    assert first.status_code == 202
    drain_queue(aws.queue_url)
    second = post(http, second_path, second_body, second_type, idempotency_key="k-1")
    assert error_of(second) == (422, "idempotency_mismatch")
    assert drain_queue(aws.queue_url) == []


def test_the_same_request_again_gets_the_stored_body_with_its_run_id(http, put_key, aws):
    put_key(KEY)
    first = post(http, "/api/ingest/job", {"job": "nightly"}, idempotency_key="k-2")
    again = post(http, "/api/ingest/job", {"job": "nightly", "api_key": KEY}, idempotency_key="k-2")
    assert first.status_code == again.status_code == 202
    assert again.json_body == first.json_body and len(first.json_body["run_id"]) == 26
    assert len(drain_queue(aws.queue_url)) == 1


# --- 3 and 4. SQS answers lost -----------------------------------------------------------------


class LostAnswerSQS:
    """The real queue, but the answer to the first `lose` batch calls never arrives (botocore's
    ReadTimeoutError, whose `response` is None): SQS holds those messages all the same."""

    def __init__(self, lose: int):
        self.real, self.lose, self.calls = aws_clients.client("sqs"), lose, 0

    def send_message_batch(self, QueueUrl, Entries):
        self.calls += 1
        answer = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        if self.calls <= self.lose:
            raise ReadTimeoutError(endpoint_url="http://sqs.local")
        return answer


def test_a_lost_sqs_answer_is_resent_under_the_same_event_id_and_answered_202(http, put_key, aws, monkeypatch):
    put_key(KEY)
    lossy = LostAnswerSQS(lose=1)
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda _name, **_: lossy)
    response = post(http, "/api/ingest", {"message": "m"})
    assert response.status_code == 202, response.json_body
    copies = drain_queue(aws.queue_url)
    assert len(copies) == 2  # the ambiguous send landed too: the backend stores one event id once
    assert {m["event_id"] for m in copies} == {response.json_body["event_id"]}


def test_an_enqueue_that_stays_ambiguous_is_503_that_does_not_claim_nothing_was_accepted(
    http, put_key, aws, monkeypatch
):
    put_key(KEY)
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", 1.5)
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda _name, **_: LostAnswerSQS(lose=1000))
    lines = ndjson({"n": 0}, {"n": 1})
    refused = post(http, "/api/ingest/event", lines, NDJSON, idempotency_key="ambiguous")
    assert error_of(refused) == (503, "service_unavailable")
    assert "Retry-After" in refused.headers
    assert "nothing was accepted" not in refused.json_body["message"]
    assert "may have been accepted" in refused.json_body["message"]
    maybe = drain_queue(aws.queue_url)
    assert maybe  # they did land

    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", aws_clients.client)
    retried = post(http, "/api/ingest/event", lines, NDJSON, idempotency_key="ambiguous")
    assert retried.status_code == 202
    resent = drain_queue(aws.queue_url)
    assert {m["event_id"] for m in maybe + resent} == set(retried.json_body["event_ids"])  # same ids throughout


# --- 5. NDJSON: capped, every line checked --------------------------------------------------


def test_more_than_the_cap_is_413_too_many_events_and_enqueues_nothing(http, put_key, aws):
    put_key(KEY)
    lines = b"\n".join(b"{}" for _ in range(MAX_EVENTS_PER_REQUEST + 1))
    assert error_of(post(http, "/api/ingest/event", lines, NDJSON)) == (413, "too_many_events")
    assert drain_queue(aws.queue_url) == []


def test_the_cap_is_accepted_and_its_idempotency_record_stays_far_under_400_kb(http, put_key, aws):
    put_key(KEY)
    lines = ndjson(*({"n": n, "message": "x" * 40} for n in range(MAX_EVENTS_PER_REQUEST)))
    response = post(http, "/api/ingest/event", lines, NDJSON, idempotency_key="the-cap")
    assert response.status_code == 202
    assert len(response.json_body["event_ids"]) == MAX_EVENTS_PER_REQUEST
    (item,) = idempotency_items(aws)
    size = sum(len(name) + len(json.dumps(value)) for name, value in item.items())
    assert size < 100 * 1024  # DynamoDB refuses items over 400 KB
    assert len(drain_queue(aws.queue_url)) == MAX_EVENTS_PER_REQUEST


@pytest.mark.parametrize(
    ("path", "line", "status"),
    [
        ("/api/ingest/log", {"entries": [{}] * 201}, 413),
        ("/api/ingest/log", {"message": "no entries"}, 400),
        ("/api/ingest/trace/otlp", {"spans": []}, 400),
        ("/api/ingest/event", [1, 2], 400),
        ("/api/ingest/job", {"run_id": True}, 400),
    ],
)
def test_every_ndjson_line_is_checked_like_a_json_body(http, put_key, aws, path, line, status):
    put_key(KEY)
    good = {"entries": []} if "log" in path else {"resourceSpans": []}
    response = post(http, path, ndjson(good, line, good), NDJSON)
    assert response.status_code == status, response.json_body
    assert response.json_body["message"].startswith("line 2: ")
    assert drain_queue(aws.queue_url) == []


# --- 6. replays before the rate limit ---------------------------------------------------------


def test_a_replay_is_answered_from_its_record_not_rate_limited(http, put_key, aws):
    put_key(KEY, rate_limit_per_minute=1)
    first = post(http, "/api/ingest", {"n": 1}, idempotency_key="once")
    replay = post(http, "/api/ingest", {"n": 1}, idempotency_key="once")
    assert first.status_code == replay.status_code == 202
    assert replay.json_body == first.json_body
    assert error_of(post(http, "/api/ingest", {"n": 2})) == (429, "rate_limited")  # the replay spent nothing
    assert len(drain_queue(aws.queue_url)) == 1


def test_a_rate_limited_request_leaves_its_key_unused(http, put_key, aws):
    put_key(KEY, rate_limit_per_minute=1)
    assert post(http, "/api/ingest", {"n": 1}).status_code == 202
    limited = post(http, "/api/ingest", {"n": 2}, idempotency_key="later")
    assert error_of(limited) == (429, "rate_limited")
    assert idempotency_items(aws) == []  # a retry next minute is a first attempt, not a replay


# --- 9. ids the SDK reads back ----------------------------------------------------------------


@pytest.mark.parametrize("given", [True, False, 1.5, {"id": 1}, ["a"]])
def test_a_run_id_that_is_no_id_is_400(http, put_key, aws, given):
    put_key(KEY)
    response = post(http, "/api/ingest/job", {"run_id": given, "status": "ok"})
    assert error_of(response) == (400, "invalid_body")
    assert "run_id" in response.json_body["message"]
    assert drain_queue(aws.queue_url) == []


@pytest.mark.parametrize(("given", "answered"), [(None, None), ("", None), (" r-1 ", "r-1"), (42, "42")])
def test_run_id_given_or_assigned(http, put_key, aws, given, answered):
    put_key(KEY)
    body = post(http, "/api/ingest/job", {"run_id": given, "status": "in_progress"}).json_body
    (message,) = drain_queue(aws.queue_url)
    if answered is None:  # null or blank asks the edge for one
        assert len(body["run_id"]) == 26 and message["assigned_ids"] == {"run_id": body["run_id"]}
    else:
        assert body["run_id"] == answered and "assigned_ids" not in message
