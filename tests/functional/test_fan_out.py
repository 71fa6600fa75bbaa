"""The forwarder with sinks beside Lookout (CONTRACT §11): moto SQS, real HTTP servers as destinations.

A message is settled only when every destination meant for it took it; a destination
that took it is not sent it again because another failed; a dead-lettered message names
who refused it, and `dlq redrive` sends it only to those.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import boto3
import pytest

from chalicelib.runtime import container
from chalicelib.runtime.config import settings
from edgectl.resources import StackNames
from tests.fake_lookout import (
    REGION,
    FakeLookout,
    Seen,
    accept_all,
    enqueue,
    forward_like_lambda,
    queue_counts,
    queue_message,
    sqs_event,
)
from tests.fake_sinks import StrictLoki, StrictOtlp

TOKEN = "edge-token-fan-out"


class Destinations:
    def __init__(self) -> None:
        self.lookout = FakeLookout().start()
        self.loki = StrictLoki().start()
        self.tempo = StrictOtlp().start()

    def stop(self) -> None:
        for server in (self.lookout, self.loki, self.tempo):
            server.stop()

    def sinks(self) -> list[dict]:
        return [
            {"name": "loki", "type": "loki", "url": self.loki.url, "signals": ["log", "otlp_logs"], "tenant": "acme"},
            {"name": "tempo", "type": "otlp", "url": self.tempo.url, "signals": ["otlp"]},
        ]


@pytest.fixture
def dest(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Iterator[Destinations]:
    destinations = Destinations()
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", destinations.lookout.url)
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", TOKEN)
    monkeypatch.setenv("LOOKOUT_EDGE_RETRY_BASE_SECONDS", "1")
    monkeypatch.setenv("LOOKOUT_EDGE_SINKS", json.dumps(destinations.sinks()))
    settings.cache_clear()
    container.reset()
    yield destinations
    destinations.stop()
    container.reset()


def log_message(n: int) -> dict:
    entries = [{"message": f"line {n}.{i}", "level": "WARN", "service": "checkout", "order_id": i} for i in range(2)]
    return queue_message({"entries": entries}, signal="log", path="/api/ingest/log")


def otlp_message() -> dict:
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "GET /"}
    payload = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span]}]}]}
    return queue_message(payload, signal="otlp", path="/api/ingest/trace/otlp")


def lookout_ids(lookout: FakeLookout) -> list[str]:
    return [e["event_id"] for r in lookout.requests for e in r.body["events"]]


def test_every_sink_maps_its_share_before_any_destination_is_sent_a_request(
    aws: StackNames, dest: Destinations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads that encode side by side lengthen each other's network waits (docs/performance.md):
    Loki's mapping is done before Lookout's or Loki's request starts."""
    from chalicelib.forward.sinks import loki, lookout

    steps: list[str] = []

    def recorded(module: object, name: str, step: str) -> None:
        original = getattr(module, name)

        def call(*args: object, **kwargs: object) -> object:
            steps.append(step)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, call)

    recorded(loki, "lines", "map")
    recorded(loki, "post", "request")
    recorded(lookout, "post", "request")
    enqueue(aws.queue_url, [log_message(1), log_message(2)])

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}

    assert steps == ["map", "map", "request", "request"]
    assert len(dest.loki.lines()) == 4


def wait_visible(queue_url: str, count: int) -> None:
    """Until `count` messages are visible again (a re-queued copy's delay is its backoff, ~1 s here)."""
    deadline = time.monotonic() + 10
    while queue_counts(queue_url)[0] < count:
        assert time.monotonic() < deadline, "the re-queued copy did not come back"
        time.sleep(0.1)


def test_each_signal_goes_to_lookout_and_its_sinks(aws: StackNames, dest: Destinations) -> None:
    log, trace, error = log_message(1), otlp_message(), queue_message()
    enqueue(aws.queue_url, [log, trace, error])

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}

    assert sorted(lookout_ids(dest.lookout)) == sorted(m["event_id"] for m in (log, trace, error))
    lines = dest.loki.lines()
    assert [text for _, text in lines] == [
        json.dumps({**entry, "event_id": log["event_id"]}, separators=(",", ":")) for entry in log["payload"]["entries"]
    ]
    labels = lines[0][0]
    assert labels == {"project_id": "42", "signal": "log", "level": "warning", "service_name": "checkout"}
    assert dest.loki.headers[0]["x-scope-orgid"] == "acme"
    (export,) = dest.tempo.requests
    assert export == {"path": "/v1/traces", **trace["payload"]}
    assert queue_counts(aws.queue_url) == (0, 0)
    assert queue_counts(aws.dlq_url) == (0, 0)


def test_a_sink_down_loses_nothing_and_the_others_get_each_event_once(aws: StackNames, dest: Destinations) -> None:
    dest.loki.down = 503
    messages = [log_message(n) for n in range(3)]
    enqueue(aws.queue_url, messages)

    # Lookout took them all; Loki did not: each message is replaced by a copy that says so.
    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}
    assert sorted(lookout_ids(dest.lookout)) == sorted(m["event_id"] for m in messages)
    assert dest.loki.requests == []
    wait_visible(aws.queue_url, 3)
    copies = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=aws.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
    )["Messages"]
    assert {m["MessageAttributes"]["delivered_to"]["StringValue"] for m in copies} == {"lookout"}

    # Still down: the copies are retried in place (nothing new to record), nothing sent to Lookout.
    with pytest.raises(Exception, match="3 of 3 messages left"):
        forward_like_lambda(sqs_event(aws.queue_url))
    assert len(dest.lookout.requests) == 1

    dest.loki.down = None
    wait_visible(aws.queue_url, 3)
    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}
    assert len(dest.lookout.requests) == 1  # never sent again because Loki failed
    assert len(dest.loki.lines()) == 6
    assert queue_counts(aws.queue_url) == (0, 0)


def test_a_refusing_sink_is_named_in_the_dlq_and_redrive_sends_only_to_it(
    aws: StackNames, dest: Destinations, capsys: pytest.CaptureFixture
) -> None:
    from edgectl.cli import main

    dest.loki.down = 400  # "entry too far behind": refused for good
    (message,) = [log_message(7)]
    enqueue(aws.queue_url, [message])

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}
    (dead,) = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=aws.dlq_url, MessageAttributeNames=["All"], VisibilityTimeout=0
    )["Messages"]
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["delivered_to"] == "lookout"
    assert (attributes["dlq_sinks"], attributes["dlq_reason"], attributes["dlq_status"]) == (
        "loki",
        "batch_rejected",
        "400",
    )
    assert json.loads(attributes["dlq_refusals"]) == {
        "loki": {"reason": "batch_rejected", "status": 400, "error": "unavailable"}
    }

    dest.loki.down = None
    assert main(["dlq", "redrive", "--queue-url", aws.queue_url, "--dlq-url", aws.dlq_url]) == 0
    capsys.readouterr()
    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}
    assert lookout_ids(dest.lookout) == [message["event_id"]]  # once, before the DLQ
    assert len(dest.loki.lines()) == 2
    assert queue_counts(aws.queue_url) == (0, 0) and queue_counts(aws.dlq_url) == (0, 0)


def test_destinations_are_called_at_the_same_time(aws: StackNames, dest: Destinations) -> None:
    """Each destination waits until all three are in a request at once: called one after the
    other, the barrier breaks and each answers 500, so nothing would be delivered."""
    barrier = threading.Barrier(3, timeout=5)

    def together(answer):
        def wait_then_answer(*args):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return (500, {}, {"error": "alone"}) if args and isinstance(args[0], Seen) else (500, b"alone")
            return answer(*args)

        return wait_then_answer

    dest.lookout.answer = together(accept_all)
    for server in (dest.loki, dest.tempo):
        server.check = together(server.check)  # type: ignore[method-assign]
    enqueue(aws.queue_url, [log_message(1), otlp_message()])

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}
    assert (len(dest.loki.requests), len(dest.tempo.requests)) == (1, 1)


def test_each_sink_has_its_own_metrics(aws: StackNames, dest: Destinations, capsys: pytest.CaptureFixture) -> None:
    dest.tempo.down = 503
    enqueue(aws.queue_url, [log_message(1), otlp_message()])

    forward_like_lambda(sqs_event(aws.queue_url))

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    by_sink = {line["sink"]: line for line in emf if "sink" in line}
    assert by_sink["loki"]["delivered"] == [1.0] and by_sink["loki"]["latency"][0] >= 0
    assert by_sink["tempo"]["retried"] == [1.0]
    forwarder = {k: v for line in emf if "sink" not in line for k, v in line.items()}
    assert forwarder["forwarded"] == 2 and forwarder["requeued"] == [1.0]
    dimensions = by_sink["tempo"]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert ["sink", "service"] in dimensions


def alarm_metrics(stack: dict, slot: int, sink: str) -> dict[str, tuple[str, dict[str, str]]]:
    """What the stack's alarm for sink slot `slot` reads, with that slot's parameter set to `sink`:
    metric name → (namespace, dimensions)."""
    alarm = stack["Resources"][f"Sink{slot}FailingAlarm"]
    assert alarm["Condition"] == f"AlarmsSink{slot}"
    read = {}
    for query in alarm["Properties"]["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            dimensions = {
                d["Name"]: sink if d["Value"] == {"Ref": f"AlarmSink{slot}"} else d["Value"]
                for d in metric["Dimensions"]
            }
            read[metric["MetricName"]] = (metric["Namespace"], dimensions)
    return read


@pytest.mark.parametrize("slot", [1, 2, 3])
def test_the_stacks_sink_alarms_read_what_a_failing_sink_emits(
    aws: StackNames, dest: Destinations, capsys: pytest.CaptureFixture, slot: int
) -> None:
    """A sink down (tempo, 503) and a sink refusing (loki, 400): their EMF lines carry exactly the
    namespace, metric names and dimensions the stack's per-sink alarm reads."""
    from edgectl.resources import load_template

    dest.tempo.down = 503
    dest.loki.down = 400
    enqueue(aws.queue_url, [log_message(1), otlp_message()])

    forward_like_lambda(sqs_event(aws.queue_url))  # loki's event dead-lettered, tempo's re-queued

    emitted = {}
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' in line and '"sink"' in line:
            emf = json.loads(line)
            (directive,) = emf["_aws"]["CloudWatchMetrics"]
            (dimension_names,) = directive["Dimensions"]
            for metric in directive["Metrics"]:
                emitted[(emf["sink"], metric["Name"])] = (
                    directive["Namespace"],
                    {name: emf[name] for name in dimension_names},
                )
    stack = load_template()
    for sink, metric in (("tempo", "retried"), ("loki", "refused")):
        assert alarm_metrics(stack, slot, sink)[metric] == emitted[(sink, metric)]
    assert set(alarm_metrics(stack, slot, "loki")) == {"retried", "refused"}


# `lines` fails while the sink prepares (before any destination's request), `push_body` while it sends.
@pytest.mark.parametrize("broken", ["lines", "push_body"])
def test_a_sink_that_crashes_parks_its_events_for_itself_alone(
    aws: StackNames, dest: Destinations, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    from chalicelib.forward.sinks import loki

    def broken_mapping(envelopes):
        raise TypeError("unexpected payload shape")

    monkeypatch.setattr(loki, broken, broken_mapping)
    message = log_message(3)
    enqueue(aws.queue_url, [message])

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}

    assert lookout_ids(dest.lookout) == [message["event_id"]]
    (dead,) = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=aws.dlq_url, MessageAttributeNames=["All"]
    )["Messages"]
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert (attributes["dlq_sinks"], attributes["dlq_reason"], attributes["delivered_to"]) == (
        "loki",
        "sink_error",
        "lookout",
    )
    assert attributes["dlq_error"] == "TypeError in sink loki"
