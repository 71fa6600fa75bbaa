"""How the Loki and OTLP sinks read each signal (docs/sinks.md), checked by the strict fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chalicelib.forward.sinks import loki, otlp
from chalicelib.forward.sinks.base import OutcomeKind, Reason
from chalicelib.forward.sinks.loki import LokiSink, lines, push_body
from chalicelib.forward.sinks.otlp import OtlpSink
from chalicelib.forward.sinks.registry import parse
from tests.fake_lookout import queue_message
from tests.fake_sinks import StrictLoki, StrictOtlp

RECEIVED_NS = 1_795_341_600_123_000_000


def otlp_logs_message() -> dict:
    payload = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1764669600000000001",
                                "severityText": "WARN",
                                "body": {"stringValue": "slow"},
                            },
                            {
                                "observedTimeUnixNano": "1764669600000000002",
                                "severityText": "Error",
                                "body": {"stringValue": "failed"},
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "attributes": [{"key": "order", "value": {"intValue": "17"}}],
                            },
                        ]
                    }
                ],
            }
        ]
    }
    return queue_message(payload, signal="otlp_logs", path="/v1/logs")


def test_otlp_log_records_become_lines_with_bounded_labels() -> None:
    (slow, failed) = list(lines(otlp_logs_message()))
    assert slow == (
        {"project_id": "42", "signal": "otlp_logs", "level": "warning", "service_name": "billing"},
        1764669600000000001,
        "slow",
    )
    assert failed[0]["level"] == "error" and failed[1] == 1764669600000000002
    assert json.loads(failed[2]) == {
        "body": "failed",
        "attributes": {"order": 17},
        "trace_id": "5b8efff798038103d269b633813fc60c",
    }


def test_raw_lines_keep_their_order_and_source() -> None:
    message = queue_message({"lines": ["a", "b"], "source": "deploy.log"}, signal="log", path="/api/ingest/log")
    assert list(lines(message)) == [
        ({"project_id": "42", "signal": "log", "service_name": "deploy.log"}, RECEIVED_NS, "a"),
        ({"project_id": "42", "signal": "log", "service_name": "deploy.log"}, RECEIVED_NS + 1, "b"),
    ]


def test_any_other_signal_is_one_json_line_and_ids_are_never_labels() -> None:
    message = queue_message({"message": "boom", "level": "CRITICAL", "request_id": "r-1", "level_x": 1})
    ((labels, timestamp, text),) = list(lines(message))
    assert labels == {"project_id": "42", "signal": "error", "level": "critical"}
    assert timestamp == RECEIVED_NS
    assert json.loads(text)["event_id"] == message["event_id"] and "request_id" in json.loads(text)
    odd = queue_message({"level": "loud"}, signal="rum")
    assert next(lines(odd))[0] == {"project_id": "42", "signal": "rum"}  # an unknown level is no label


def test_one_stream_per_label_set() -> None:
    body = json.loads(push_body([lines(m) for m in (queue_message(), queue_message(), otlp_logs_message())]))
    assert [len(s["values"]) for s in body["streams"]] == [2, 1, 1]


@pytest.fixture
def servers() -> Iterator[tuple[StrictLoki, StrictOtlp]]:
    pair = (StrictLoki().start(), StrictOtlp().start())
    yield pair
    for server in pair:
        server.stop()


def sink(module, spec: dict):
    (parsed,) = parse(json.dumps([spec]))
    return module.build(parsed)


def test_loki_and_otlp_sinks_pass_their_strict_servers(servers: tuple[StrictLoki, StrictOtlp]) -> None:
    fake_loki, fake_otlp = servers
    loki_sink: LokiSink = sink(
        loki, {"name": "l", "type": "loki", "url": fake_loki.url, "signals": ["otlp_logs"], "token": "t0k"}
    )
    otlp_sink: OtlpSink = sink(
        otlp,
        {"name": "o", "type": "otlp", "url": fake_otlp.url, "signals": ["otlp_logs"], "headers": {"X-Tenant": "a"}},
    )
    messages = [otlp_logs_message(), otlp_logs_message()]

    assert [o.kind for o in loki_sink.deliver(messages)] == [OutcomeKind.DELIVERED] * 2
    assert [o.kind for o in otlp_sink.deliver(messages)] == [OutcomeKind.DELIVERED] * 2

    assert len(fake_loki.lines()) == 4 and fake_loki.headers[0]["authorization"] == "Bearer t0k"
    (export,) = fake_otlp.requests  # one export request for the batch, records as received
    assert export["path"] == "/v1/logs" and len(export["resourceLogs"]) == 2
    assert export["resourceLogs"][0] == messages[0]["payload"]["resourceLogs"][0]
    assert fake_otlp.headers[0]["x-tenant"] == "a"


@pytest.mark.parametrize(
    ("status", "kind"), [(400, OutcomeKind.REJECTED), (429, OutcomeKind.RETRY), (502, OutcomeKind.RETRY)]
)
def test_each_sink_classifies_its_answers(
    servers: tuple[StrictLoki, StrictOtlp], status: int, kind: OutcomeKind
) -> None:
    fake_loki, _ = servers
    fake_loki.down = status
    loki_sink = sink(loki, {"name": "l", "type": "loki", "url": fake_loki.url, "signals": ["log"]})
    (outcome,) = loki_sink.deliver([queue_message(signal="log")])
    assert (outcome.kind, outcome.status) == (kind, status)
    if kind is OutcomeKind.REJECTED:
        assert outcome.reason is Reason.BATCH_REJECTED and outcome.error == "unavailable"


def test_a_sink_that_is_not_listening_is_retried(servers: tuple[StrictLoki, StrictOtlp]) -> None:
    _, fake_otlp = servers
    otlp_sink = sink(otlp, {"name": "o", "type": "otlp", "url": fake_otlp.url, "signals": ["otlp"]})
    fake_otlp.stop()
    (outcome,) = otlp_sink.deliver([queue_message({"resourceSpans": []}, signal="otlp")])
    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, Reason.CONNECTION)
