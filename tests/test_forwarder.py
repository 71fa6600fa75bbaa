"""The forwarder's pure decisions: request body, outcome per event, backoff, DLQ attributes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fake_lookout import queue_message

from chalicelib.contract.envelope import encode_message
from chalicelib.forward.settle import (
    Action,
    BackendAnswer,
    Outcome,
    boto_attributes,
    classify,
    dead_letter_attributes,
    parse_records,
    request_body,
    retry_visibility,
    without_dlq_attributes,
)
from chalicelib.runtime.http import parse_retry_after


def records_for(*messages: dict | str, receive_count: int = 1) -> list:
    raw = [
        {
            "messageId": f"m{i}",
            "receiptHandle": f"h{i}",
            "body": m if isinstance(m, str) else encode_message(m),
            "attributes": {"ApproximateReceiveCount": str(receive_count)},
            "messageAttributes": {"signal": {"stringValue": "error", "dataType": "String"}},
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:lookout-edge-events",
        }
        for i, m in enumerate(messages)
    ]
    return parse_records({"Records": raw})


def answer(status: int, body: object = b"", retry_after: str | None = None) -> BackendAnswer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return BackendAnswer(status, data, retry_after)


def test_records_keep_what_the_handler_needs() -> None:
    (record,) = records_for(queue_message(), receive_count=4)
    assert (record.message_id, record.receipt_handle, record.receive_count) == ("m0", "h0", 4)
    assert record.source_queue == "lookout-edge-events"
    assert record.event_id == record.message["event_id"]


def test_request_body_decodes_compressed_payloads() -> None:
    payload = {"blob": "y" * 400_000}
    records = records_for(queue_message(payload), "garbage")
    assert json.loads(records[0].body)["payload_encoding"] == "gzip+base64"
    (event,) = json.loads(request_body(records))["events"]  # the unusable record is not sent
    assert event["payload"] == payload and event["payload_encoding"] == "json"


def test_results_map_to_actions_by_event_id() -> None:
    messages = [queue_message() for _ in range(5)]
    ids = [m["event_id"] for m in messages]
    results = [
        {"event_id": ids[3], "status": "duplicate"},
        {"event_id": ids[0], "status": "accepted"},
        {"event_id": ids[1], "status": "rejected", "error": "payload\n  too deep"},
        {"event_id": ids[4], "status": "weird"},
    ]  # ids[2] missing
    outcomes = classify(records_for(*messages), answer(207, {"results": results}))
    assert outcomes == [
        Outcome(Action.DELETE, "accepted", 207),
        Outcome(Action.DEAD_LETTER, "rejected", 207, "payload too deep"),
        Outcome(Action.RETRY, "missing_result", 207),
        Outcome(Action.DELETE, "duplicate", 207),
        Outcome(Action.RETRY, "unknown_result", 207),
    ]


@pytest.mark.parametrize("body", [b"", b"not json", b'{"results": "no"}', b"[]", b'{"ok": true}'])
def test_success_status_without_readable_results_deletes_nothing(body: bytes) -> None:
    outcomes = classify(records_for(queue_message()), answer(200, body))
    assert [o.action for o in outcomes] == [Action.RETRY]


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_permanent_statuses_dead_letter_the_batch(status: int) -> None:
    outcomes = classify(records_for(queue_message(), queue_message()), answer(status, {"error": "bad", "message": "x"}))
    assert outcomes == [Outcome(Action.DEAD_LETTER, "batch_rejected", status, "bad x")] * 2


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, "auth_failed"),
        (403, "auth_failed"),
        (408, "http_408"),
        (429, "http_429"),
        (500, "http_500"),
        (502, "http_502"),
        (503, "http_503"),
        (301, "http_301"),
        (409, "http_409"),
        (418, "http_418"),
    ],
)
def test_transient_and_unexpected_statuses_retry(status: int, reason: str) -> None:
    (outcome,) = classify(records_for(queue_message()), answer(status, b"<html>gateway</html>"))
    assert (outcome.action, outcome.reason, outcome.status) == (Action.RETRY, reason, status)


@pytest.mark.parametrize("error", ["timeout", "connection", "token_unavailable"])
def test_no_answer_retries(error: str) -> None:
    outcomes = classify(records_for(queue_message(), queue_message()), BackendAnswer(None, error=error))
    assert outcomes == [Outcome(Action.RETRY, error)] * 2


def test_unusable_messages_are_dead_lettered_whatever_the_answer() -> None:
    bad_gzip = json.dumps({"event_id": "e", "payload_encoding": "gzip+base64", "payload": "bm90IGd6aXA="})
    records = records_for("{", json.dumps({"no": "event id"}), bad_gzip, queue_message())
    assert [r.message is None for r in records] == [True, True, True, False]
    outcomes = classify(records, BackendAnswer(None, error="timeout"))
    assert [o.action for o in outcomes] == [Action.DEAD_LETTER] * 3 + [Action.RETRY]
    assert classify(records[:1], None)[0].reason == "malformed"


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    low = [retry_visibility(n, None, 10, 900, rand=lambda: 0.0) for n in range(1, 9)]
    high = [retry_visibility(n, None, 10, 900, rand=lambda: 0.999999) for n in range(1, 9)]
    assert low == [5, 10, 20, 40, 80, 160, 320, 450]
    assert high == [10, 20, 40, 80, 160, 320, 640, 900]
    assert retry_visibility(500, None, 10, 10**9, rand=lambda: 1.0) == 12 * 3600  # SQS maximum


def test_retry_after_is_a_floor_under_the_cap() -> None:
    assert retry_visibility(1, 120.0, 10, 900, rand=lambda: 0.0) == 120
    assert retry_visibility(1, 5000.0, 10, 900, rand=lambda: 0.0) == 900


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after("Sun, 22 Nov 2026 10:01:30 GMT", now) == 90.0
    assert parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_dead_letter_attributes_keep_originals_and_never_the_token() -> None:
    (record,) = records_for(queue_message())
    outcome = Outcome(Action.DEAD_LETTER, "rejected", 200, "token tok-123 not allowed here")
    attributes = dead_letter_attributes(record, outcome, secret="tok-123")
    assert attributes == {
        "signal": {"DataType": "String", "StringValue": "error"},
        "dlq_reason": {"DataType": "String", "StringValue": "rejected"},
        "dlq_status": {"DataType": "Number", "StringValue": "200"},
        "dlq_error": {"DataType": "String", "StringValue": "token [redacted] not allowed here"},
    }
    assert without_dlq_attributes(attributes) == {"signal": {"DataType": "String", "StringValue": "error"}}


def test_lambda_binary_attributes_convert_to_bytes() -> None:
    converted = boto_attributes({"raw": {"binaryValue": "AAE=", "dataType": "Binary"}})
    assert converted == {"raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}
