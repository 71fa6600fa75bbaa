"""`POST /api/firehose/{signal}` through the real Chalice `app` on moto (CONTRACT §9).

Requests come from tests/firehose_producer.py, built as AWS's "HTTP Endpoint Delivery
Request and Response Specifications" says Firehose builds them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from chalicelib.contract import envelope
from chalicelib.edge.doors import firehose
from chalicelib.runtime import aws as aws_clients
from tests.conftest import REGION, drain_queue, reset_container_state
from tests.firehose_producer import SOURCE_ARN, Delivery, cloudwatch_logs_record, delivery
from tests.functional.test_front_doors import DOORS, DoorClient
from tests.functional.test_ingest import PartlyFailingSQS

KEY = "lk_live_firehose_key_1"


def send(http: Any, shipment: Delivery, signal: str = "event") -> Any:
    headers, body = shipment.request()
    return http.post(f"/api/firehose/{signal}", body=body, headers=headers)


def spec_error(response: Any, shipment: Delivery) -> tuple[int, str]:
    """The failure body the spec asks for; (status, the contract code at the front of errorMessage)."""
    body = response.json_body
    assert set(body) == {"requestId", "timestamp", "errorMessage"}, body
    assert body["requestId"] == shipment.request_id
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, body["errorMessage"].split(":", 1)[0]


def queued(aws: Any) -> int:
    sqs = boto3.client("sqs", region_name=REGION)
    attributes = sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


# --- 200 and what gets queued -------------------------------------------------------------


@pytest.mark.parametrize("gzip_body", [False, True])
def test_delivery_is_answered_as_the_spec_says_once_queued(http, put_key, aws, gzip_body: bool):
    put_key(KEY, project_id="42", organization_id="7")
    shipment = delivery([{"name": "a", "n": 1}, {"name": "b", "n": 2, "api_key": KEY}], KEY, gzip_body=gzip_body)
    before = int(time.time() * 1000)
    response = send(http, shipment)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json_body) == {"requestId", "timestamp"}
    assert response.json_body["requestId"] == shipment.request_id
    assert before <= response.json_body["timestamp"] <= int(time.time() * 1000)
    messages = sorted(drain_queue(aws.queue_url), key=lambda m: m["payload"]["n"])
    assert [m["payload"] for m in messages] == [{"name": "a", "n": 1}, {"name": "b", "n": 2}]
    for message in messages:
        assert message["signal"] == "event" and message["path"] == "/api/firehose/event"
        assert (message["project_id"], message["organization_id"]) == ("42", "7")
        assert message["idempotency_key"] == shipment.request_id
        assert message["headers"] == {
            "x-amz-firehose-request-id": shipment.request_id,
            "x-amz-firehose-source-arn": SOURCE_ARN,
            "x-amz-firehose-common-attributes": json.dumps({"commonAttributes": {"env": "test"}}),
        }
        assert message["_attributes"] == {"signal": "event", "project_id": "42"}
        assert KEY not in json.dumps(message)


def test_event_ids_are_ulids_of_the_first_attempt(http, put_key, aws):
    put_key(KEY)
    shipment = delivery([{"n": i} for i in range(3)], KEY)
    assert send(http, shipment).status_code == 200
    ids = [m["event_id"] for m in sorted(drain_queue(aws.queue_url), key=lambda m: m["payload"]["n"])]
    assert len(set(ids)) == 3 and ids == sorted(ids) and all(len(i) == 26 for i in ids)


def test_the_usual_key_sources_work_without_the_firehose_header(http, put_key, aws):
    put_key(KEY)
    shipment = delivery([{"n": 1}], None)
    headers, body = shipment.request()
    response = http.post("/api/firehose/event", body=body, headers={**headers, "X-Api-Key": KEY})
    assert response.status_code == 200


def test_cloudwatch_logs_records_become_log_events(http, put_key, aws):
    put_key(KEY)
    control = cloudwatch_logs_record([])  # stands in for the subscription's first message: no events
    shipment = delivery([cloudwatch_logs_record(["START", "boom"], group="/aws/lambda/orders"), control], KEY)
    assert send(http, shipment, "log").status_code == 200
    (message,) = drain_queue(aws.queue_url)
    assert message["signal"] == "log"
    assert [(e["message"], e["log_group"]) for e in message["payload"]["entries"]] == [
        ("START", "/aws/lambda/orders"),
        ("boom", "/aws/lambda/orders"),
    ]


def test_a_delivery_of_no_events_is_200_after_the_key_check(http, put_key, aws):
    put_key(KEY)
    assert send(http, delivery([b""], KEY), "log").status_code == 200
    stranger = delivery([b""], "lk_unknown")
    assert spec_error(send(http, stranger, "log"), stranger) == (401, "invalid_api_key")
    assert queued(aws) == 0


class CountingSQS:
    """Takes every batch and keeps the bodies: moto's in-process SQS needs minutes for 10,000
    messages on a loaded machine; the decoding, checks and batching under test are the real ones."""

    def __init__(self):
        self.bodies: list[str] = []

    def send_message_batch(self, QueueUrl, Entries):
        assert len(Entries) <= 10
        self.bodies += [e["MessageBody"] for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def test_10000_small_records_are_all_queued_once(http, put_key, aws, monkeypatch):
    put_key(KEY)
    sqs = CountingSQS()
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: sqs)
    shipment = delivery([{"n": i} for i in range(firehose.MAX_RECORDS)], KEY, gzip_body=True)
    response = send(http, shipment)
    assert response.status_code == 200, response.json_body
    messages = [json.loads(body) for body in sqs.bodies]
    assert sorted(m["payload"]["n"] for m in messages) == list(range(firehose.MAX_RECORDS))
    assert len({m["event_id"] for m in messages}) == firehose.MAX_RECORDS


# --- every refusal: the spec's body, the contract's status, nothing queued ---------------


def test_no_key_and_unknown_key_are_401(http, put_key, aws):
    put_key(KEY)
    missing = delivery([{"n": 1}], None)
    assert spec_error(send(http, missing), missing) == (401, "missing_api_key")
    unknown = delivery([{"n": 1}], "lk_not_a_key")
    assert spec_error(send(http, unknown), unknown) == (401, "invalid_api_key")
    assert queued(aws) == 0


def test_billing_allowlist_and_disabled_signal(http, put_key, aws):
    put_key(KEY, billing_ok=False)
    shipment = delivery([{"n": 1}], KEY)
    assert spec_error(send(http, shipment), shipment) == (402, "billing_required")
    put_key(KEY, ip_allowlist=["10.0.0.0/8"])
    reset_container_state()  # the cached key item is the old one
    assert spec_error(send(http, shipment), shipment) == (403, "ip_not_allowed")
    put_key(KEY, trace_enabled=False)
    reset_container_state()
    otlp = delivery([{"resourceSpans": []}], KEY)
    assert spec_error(send(http, otlp, "otlp"), otlp) == (403, "signal_disabled")
    assert queued(aws) == 0


@pytest.mark.parametrize(
    ("records", "status", "code"),
    [
        ("not a list", 400, "invalid_body"),
        (["bm90IGpzb24="], 400, "invalid_body"),  # a record that is not an object
        ([{"data": "%%% not base64 %%%"}], 400, "invalid_body"),
        ([{"data": "eyJuIjogMX0="}] * (firehose.MAX_RECORDS + 1), 413, "payload_too_large"),
    ],
)
def test_malformed_deliveries(http, put_key, aws, records: Any, status: int, code: str):
    put_key(KEY)
    shipment = delivery([], KEY)
    headers, _ = shipment.request()
    body = json.dumps({"requestId": shipment.request_id, "timestamp": 1, "records": records}).encode()
    response = http.post("/api/firehose/event", body=body, headers=headers)
    assert spec_error(response, shipment) == (status, code)
    assert queued(aws) == 0


def test_a_record_over_1024000_bytes_is_413_and_nothing_of_the_delivery_is_queued(http, put_key, aws):
    put_key(KEY)
    big = json.dumps({"pad": "x" * firehose.MAX_RECORD_BYTES}).encode()
    shipment = delivery([{"n": 1}, big], KEY)
    response = send(http, shipment)
    assert spec_error(response, shipment) == (413, "payload_too_large")
    assert "record 2" in response.json_body["errorMessage"]
    assert queued(aws) == 0


def test_every_event_is_checked_as_on_the_ingest_route(http, put_key, aws):
    put_key(KEY)
    over = delivery([{"entries": [{"message": "m"}] * 201}], KEY)
    assert spec_error(send(http, over, "log"), over) == (413, "payload_too_large")
    shapeless = delivery([{"entries": []}, [1, 2]], KEY)
    response = send(http, shapeless)
    assert spec_error(response, shapeless) == (400, "invalid_body")
    assert "record 2" in response.json_body["errorMessage"]
    wrong = delivery([cloudwatch_logs_record(["x"])], KEY)
    assert spec_error(send(http, wrong, "event"), wrong) == (400, "invalid_body")
    assert queued(aws) == 0


def test_unknown_signal_is_404_in_the_spec_shape(http, put_key, aws):
    put_key(KEY)
    shipment = delivery([{"n": 1}], KEY)
    assert spec_error(send(http, shipment, "rum"), shipment) == (404, "not_found")


def test_rate_limited_delivery_is_429_with_retry_after(http, put_key, aws):
    put_key(KEY, rate_limit_per_minute=5)
    shipment = delivery([{"n": i} for i in range(6)], KEY)
    response = send(http, shipment)
    assert spec_error(response, shipment) == (429, "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert queued(aws) == 0


def test_no_secret_in_an_error_body(http, put_key, aws):
    shipment = delivery([{"n": 1}], "lk_secret_that_is_unknown")
    response = send(http, shipment)
    assert "lk_secret_that_is_unknown" not in json.dumps(response.json_body)


# --- retries: Firehose resends with the same X-Amz-Firehose-Request-Id -----------------------


def test_a_retry_of_an_accepted_delivery_is_200_and_enqueues_nothing(http, put_key, aws):
    put_key(KEY)
    shipment = delivery([{"n": i} for i in range(5)], KEY)
    assert send(http, shipment).status_code == 200
    first = drain_queue(aws.queue_url)
    again = send(http, shipment)
    assert again.status_code == 200 and again.json_body["requestId"] == shipment.request_id
    assert drain_queue(aws.queue_url) == [] and len(first) == 5


def test_a_retry_after_a_partial_enqueue_sends_only_the_rest_under_the_same_ids(http, put_key, aws, monkeypatch):
    put_key(KEY)
    flaky = PartlyFailingSQS(aws_clients.client("sqs"), failing_bodies={3, 7})
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: flaky)
    shipment = delivery([{"n": i} for i in range(12)], KEY, gzip_body=True)
    first = send(http, shipment)
    assert spec_error(first, shipment) == (503, "service_unavailable")
    assert "Retry-After" in first.headers
    assert sorted(flaky.sent) == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]
    partial = {m["payload"]["n"]: m["event_id"] for m in drain_queue(aws.queue_url)}
    flaky.failing = set()
    flaky.sent = []
    second = send(http, shipment)
    assert second.status_code == 200
    assert sorted(flaky.sent) == [3, 7]
    rest = {m["payload"]["n"]: m["event_id"] for m in drain_queue(aws.queue_url)}
    assert set(rest) == {3, 7}
    all_ids = sorted({**partial, **rest}.values())
    fresh = envelope.stable_ulids(shipment.request_id, 0, 12)  # same request id, other time: other ids
    assert len(all_ids) == 12 and set(all_ids).isdisjoint(fresh)
    assert send(http, shipment).status_code == 200 and drain_queue(aws.queue_url) == []


def test_the_idempotency_record_stays_small_for_a_large_delivery(http, put_key, aws):
    put_key(KEY)
    shipment = delivery([{"n": i} for i in range(2000)], KEY)
    assert send(http, shipment).status_code == 200
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=aws.idempotency_table)["Items"]
    (item,) = [i for i in items if shipment.request_id in i["pk"]["S"]]
    assert len(json.dumps(item)) < 1000


# --- every front door (CONTRACT §8) --------------------------------------------------------


@pytest.mark.parametrize("door_name", DOORS)
def test_a_gzip_delivery_through_every_front_door(door_name, put_key, aws):
    door = DoorClient(door_name)
    put_key(KEY)
    shipment = delivery([{"n": 1}, {"n": 2}], KEY, gzip_body=True)
    headers, body = shipment.request()
    answer = door.request("POST", "/api/firehose/event", body, headers)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json_body["requestId"] == shipment.request_id
    assert sorted(m["payload"]["n"] for m in drain_queue(aws.queue_url)) == [1, 2]
