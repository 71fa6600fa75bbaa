"""The forwarder's pure decisions: records, Lookout's answer per event, verdicts, backoff, DLQ attributes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from chalicelib.contract.envelope import encode_message
from chalicelib.forward.records import parse_records
from chalicelib.forward.settle import (
    Action,
    RetryPolicy,
    Verdict,
    boto_attributes,
    dead_letter_attributes,
    plan,
    retry_visibility,
    verdict,
    without_dlq_attributes,
)
from chalicelib.forward.sinks.base import OutcomeKind, Reason, delivered, duplicate, rejected, retry
from chalicelib.forward.sinks.http_post import HttpAnswer
from chalicelib.forward.sinks.lookout import classify, request_body
from chalicelib.runtime.http_pool import parse_retry_after
from tests.fake_lookout import queue_message


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


def answer(status: int, body: object = b"", retry_after: str | None = None) -> HttpAnswer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpAnswer(status, data, retry_after)


def test_records_keep_what_the_handler_needs() -> None:
    (record,) = records_for(queue_message(), receive_count=4)
    assert (record.message_id, record.receipt_handle, record.receive_count) == ("m0", "h0", 4)
    assert record.source_queue == "lookout-edge-events"
    assert record.event_id == record.envelope["event_id"]
    assert record.signal == "error"


def test_request_body_decodes_compressed_payloads() -> None:
    payload = {"blob": "y" * 400_000}
    records = records_for(queue_message(payload), "garbage")
    assert json.loads(records[0].body)["payload_encoding"] == "gzip+base64"
    assert records[1].envelope is None  # the unusable record is never sent
    (event,) = json.loads(request_body([records[0].envelope]))["events"]
    assert event["payload"] == payload and event["payload_encoding"] == "json"


def test_results_map_to_outcomes_by_event_id() -> None:
    ids = [queue_message()["event_id"] for _ in range(5)]
    results = [
        {"event_id": ids[3], "status": "duplicate"},
        {"event_id": ids[0], "status": "accepted"},
        {"event_id": ids[1], "status": "rejected", "error": "payload\n  too deep"},
        {"event_id": ids[4], "status": "weird"},
    ]  # ids[2] missing
    outcomes = classify(answer(207, {"results": results}), ids)
    assert outcomes == [
        delivered(207),
        rejected(Reason.REJECTED, 207, "payload too deep"),
        retry(Reason.MISSING_RESULT, 207),
        duplicate(207),
        retry(Reason.UNKNOWN_RESULT, 207),
    ]


@pytest.mark.parametrize("body", [b"", b"not json", b'{"results": "no"}', b"[]", b'{"ok": true}'])
def test_success_status_without_readable_results_deletes_nothing(body: bytes) -> None:
    assert [o.kind for o in classify(answer(200, body), ["e1"])] == [OutcomeKind.RETRY]


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_permanent_statuses_reject_the_batch(status: int) -> None:
    outcomes = classify(answer(status, {"error": "bad", "message": "x"}), ["e1", "e2"])
    assert outcomes == [rejected(Reason.BATCH_REJECTED, status, "bad x")] * 2


@pytest.mark.parametrize(
    ("status", "label"),
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
def test_transient_and_unexpected_statuses_retry(status: int, label: str) -> None:
    (outcome,) = classify(answer(status, b"<html>gateway</html>"), ["e1"])
    assert (outcome.kind, outcome.label, outcome.status) == (OutcomeKind.RETRY, label, status)


def test_retry_after_of_the_answer_is_kept_with_each_outcome() -> None:
    outcomes = classify(answer(429, b"", retry_after="17"), ["e1", "e2"])
    assert [o.retry_after for o in outcomes] == [17.0, 17.0]


@pytest.mark.parametrize(("error", "reason"), [("timeout", Reason.TIMEOUT), ("connection", Reason.CONNECTION)])
def test_no_answer_retries(error: str, reason: Reason) -> None:
    assert classify(HttpAnswer(None, error=error), ["e1", "e2"]) == [retry(reason)] * 2


def test_unusable_messages_are_dead_lettered_whatever_the_destinations_say() -> None:
    bad_gzip = json.dumps({"event_id": "e", "payload_encoding": "gzip+base64", "payload": "bm90IGd6aXA="})
    records = records_for("{", json.dumps({"no": "event id"}), bad_gzip, queue_message())
    assert [r.envelope is None for r in records] == [True, True, True, False]
    verdicts = [verdict(r, {"lookout": retry(Reason.TIMEOUT)} if r.envelope else {}) for r in records]
    assert [v.action for v in verdicts] == [Action.DEAD_LETTER] * 3 + [Action.RETRY]
    assert verdicts[0].reasons == ["malformed"]
    attributes = dead_letter_attributes(records[0], verdicts[0])
    assert attributes["dlq_reason"]["StringValue"] == "malformed"


def test_verdict_deletes_only_when_every_destination_took_it() -> None:
    (record,) = records_for(queue_message())
    assert verdict(record, {"lookout": delivered(200), "loki": duplicate(204)}).action is Action.DELETE
    assert verdict(record, {"lookout": retry(Reason.TIMEOUT), "loki": retry(Reason.CONNECTION)}).action is Action.RETRY
    refused = verdict(record, {"lookout": delivered(200), "loki": rejected(Reason.BATCH_REJECTED, 400)})
    assert (refused.action, list(refused.refusals), refused.delivered_to) == (
        Action.DEAD_LETTER,
        ["loki"],
        frozenset({"lookout"}),
    )


def test_progress_is_requeued_when_some_took_it_and_others_must_try_again() -> None:
    (record,) = records_for(queue_message())
    decided = verdict(
        record, {"lookout": delivered(200), "loki": retry(Reason.TIMEOUT), "tsdb": rejected(Reason.REJECTED)}
    )
    assert (decided.action, decided.delivered_to, list(decided.refusals)) == (
        Action.REQUEUE,
        frozenset({"lookout"}),
        ["tsdb"],
    )
    (step,) = plan([record], [decided], RetryPolicy(10, 900), rand=lambda: 0.0)
    assert step.copy is not None and step.copy.body == record.body and step.copy.delay_seconds == 5
    # The copy, received again, is sent only to loki; its refusal by tsdb is kept for the DLQ.
    (again,) = parse_records(
        {"Records": [{**raw_record(record), "messageAttributes": lambda_shape(step.copy.attributes)}]}
    )
    assert again.delivered_to == {"lookout"} and list(again.refusals) == ["tsdb"]
    final = verdict(again, {"loki": delivered(204)})
    assert (final.action, final.delivered_to) == (Action.DEAD_LETTER, {"lookout", "loki"})
    attributes = dead_letter_attributes(again, final)
    assert attributes["delivered_to"]["StringValue"] == "loki,lookout"  # sorted
    assert attributes["dlq_sinks"]["StringValue"] == "tsdb"
    # A redrive strips dlq_*: only tsdb is still to take it.
    (redriven,) = parse_records(
        {"Records": [{**raw_record(again), "messageAttributes": lambda_shape(without_dlq_attributes(attributes))}]}
    )
    assert redriven.delivered_to == {"lookout", "loki"} and redriven.refusals == {}


def test_a_message_no_destination_takes_is_dead_lettered_not_dropped() -> None:
    (record,) = records_for(queue_message())
    decided = verdict(record, {}, meant=False)
    assert (decided.action, decided.reasons) == (Action.DEAD_LETTER, ["no_destination"])


def raw_record(record) -> dict:
    return {"messageId": record.message_id, "receiptHandle": record.receipt_handle, "body": record.body}


def lambda_shape(attributes: dict) -> dict:
    return {k: {"stringValue": v["StringValue"], "dataType": v["DataType"]} for k, v in attributes.items()}


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    low = [retry_visibility(n, None, 10, 900, rand=lambda: 0.0) for n in range(1, 9)]
    high = [retry_visibility(n, None, 10, 900, rand=lambda: 0.999999) for n in range(1, 9)]
    assert low == [5, 10, 20, 40, 80, 160, 320, 450]
    assert high == [10, 20, 40, 80, 160, 320, 640, 900]
    assert retry_visibility(500, None, 10, 10**9, rand=lambda: 1.0) == 12 * 3600  # SQS maximum


def test_retry_after_is_a_floor_under_the_cap() -> None:
    assert retry_visibility(1, 120.0, 10, 900, rand=lambda: 0.0) == 120
    assert retry_visibility(1, 5000.0, 10, 900, rand=lambda: 0.0) == 900


def test_plan_uses_the_longest_retry_after_of_the_destinations() -> None:
    (record,) = records_for(queue_message())
    decided = verdict(record, {"a": retry(Reason.HTTP_STATUS, 429, after=30.0), "b": retry(Reason.TIMEOUT)})
    (step,) = plan([record], [decided], RetryPolicy(1, 900), rand=lambda: 0.0)
    assert (step.visibility, step.copy) == (30, None)


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after("Sun, 22 Nov 2026 10:01:30 GMT", now) == 90.0
    assert parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_dead_letter_attributes_keep_originals_and_name_the_refusing_destination() -> None:
    (record,) = records_for(queue_message())
    decided = Verdict(Action.DEAD_LETTER, {"lookout": rejected(Reason.REJECTED, 200, "not allowed here")})
    attributes = dead_letter_attributes(record, decided)
    assert attributes == {
        "signal": {"DataType": "String", "StringValue": "error"},
        "dlq_reason": {"DataType": "String", "StringValue": "rejected"},
        "dlq_status": {"DataType": "Number", "StringValue": "200"},
        "dlq_error": {"DataType": "String", "StringValue": "not allowed here"},
        "dlq_sinks": {"DataType": "String", "StringValue": "lookout"},
        "dlq_refusals": {
            "DataType": "String",
            "StringValue": '{"lookout":{"reason":"rejected","status":200,"error":"not allowed here"}}',
        },
    }
    assert without_dlq_attributes(attributes) == {"signal": {"DataType": "String", "StringValue": "error"}}


def test_several_refusals_are_each_recorded() -> None:
    (record,) = records_for(queue_message())
    decided = Verdict(
        Action.DEAD_LETTER,
        {"lookout": rejected(Reason.REJECTED, 200, "no"), "loki": rejected(Reason.BATCH_REJECTED, 400, "bad labels")},
    )
    attributes = dead_letter_attributes(record, decided)
    assert attributes["dlq_sinks"]["StringValue"] == "lookout,loki"
    assert json.loads(attributes["dlq_refusals"]["StringValue"]) == {
        "lookout": {"reason": "rejected", "status": 200, "error": "no"},
        "loki": {"reason": "batch_rejected", "status": 400, "error": "bad labels"},
    }


def test_lambda_binary_attributes_convert_to_bytes() -> None:
    converted = boto_attributes({"raw": {"binaryValue": "AAE=", "dataType": "Binary"}})
    assert converted == {"raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}
