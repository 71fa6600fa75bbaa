"""A client's retry of the same request never becomes a second copy under another event id.

The SDKs and OpenTelemetry exporters retry after a 5xx or a timeout without any
`Idempotency-Key` (CONTRACT §3). Each test makes SQS take part of a batch and throttle
the rest (or take a message and lose the answer), so the edge answers 503 having queued
some events; the client retries; every event must then be in the queue under exactly one
event id — copies carry the same id, which Lookout stores once (§6 `duplicate`).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chalicelib.contract import envelope
from chalicelib.edge import pipeline
from chalicelib.runtime import aws as aws_clients
from chalicelib.runtime.deadline import REQUEST_BUDGET_SECONDS
from edgectl.cmd_local import make_edge_server
from tests.conftest import drain_queue, start_the_edge_clock_in_a_new_window

KEY = "lk_live_retry_key_0123456789"


class ThrottlingSQS:
    """Real (moto) SQS that, while armed, takes every other entry of its first call and throttles
    the rest (and everything after); with `lose_answers` it takes everything and answers as if
    nothing was taken."""

    def __init__(self, lose_answers: bool = False):
        self.real = aws_clients.client("sqs")
        self.armed = True
        self.lose_answers = lose_answers
        self.calls = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if not self.armed:
            return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        if self.lose_answers:
            self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
            return {"Successful": [], "Failed": [_throttled(e) for e in Entries]}
        taken, throttled = (Entries[::2], Entries[1::2]) if self.calls == 1 else ([], Entries)
        if not taken:
            return {"Successful": [], "Failed": [_throttled(e) for e in throttled]}
        response = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=taken)
        return {"Successful": response.get("Successful", []), "Failed": [_throttled(e) for e in throttled]}


def _throttled(entry: dict[str, Any]) -> dict[str, Any]:
    return {"Id": entry["Id"], "Code": "ThrottlingException", "SenderFault": False, "Message": "Rate exceeded"}


@pytest.fixture(autouse=True)
def start_in_a_new_retry_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first attempt and its retry must fall in one retry window (docs/retries.md: a retry across
    the boundary gets new ids, by design): each test starts 1 s into one, on the edge's clock."""
    start_the_edge_clock_in_a_new_window(monkeypatch)


@pytest.fixture
def flaky_sqs(aws: Any, put_key: Callable[..., dict], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable]:
    """`flaky_sqs(lose_answers=False)`: the SQS above, disarmed as soon as the edge has answered 503."""
    put_key(KEY)
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", 1.5)
    queue_down = pipeline._queue_down

    def install(lose_answers: bool = False) -> ThrottlingSQS:
        sqs = ThrottlingSQS(lose_answers)
        monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: sqs)

        def answered_503(*args: Any) -> Any:
            sqs.armed = False  # the queue recovers just after the first attempt's answer
            return queue_down(*args)

        monkeypatch.setattr(pipeline, "_queue_down", answered_503)
        return sqs

    yield install


def ids_by_content(messages: list[dict[str, Any]], content: Callable[[dict], list[str]]) -> dict[str, set[str]]:
    """For each piece of content (a span id, an NDJSON line), the event ids it was queued under."""
    found: dict[str, set[str]] = defaultdict(set)
    for message in map(envelope.decode_payload, messages):
        for piece in content(message["payload"]):
            found[piece].add(message["event_id"])
    return found


def test_ndjson_retried_after_a_partial_enqueue_keeps_its_event_ids(http, aws, flaky_sqs):
    sqs = flaky_sqs()
    lines = b"\n".join(json.dumps({"name": "signup", "n": i}).encode() for i in range(25))
    headers = {"content-type": "application/x-ndjson", "x-api-key": KEY}
    first = http.post("/api/ingest/event", body=lines, headers=headers)
    assert first.status_code == 503, first.body
    assert "same event ids" in json.loads(first.body)["message"]
    second = http.post("/api/ingest/event", body=lines, headers=headers)
    assert second.status_code == 202 and not sqs.armed
    messages = drain_queue(aws.queue_url)
    assert len(messages) > 25  # the first attempt's part and the retry's whole
    by_line = ids_by_content(messages, lambda payload: [str(payload["n"])])
    assert sorted(by_line, key=int) == [str(i) for i in range(25)]
    assert all(len(ids) == 1 for ids in by_line.values()), by_line
    assert [by_line[str(i)].pop() for i in range(25)] == second.json_body["event_ids"]


def test_single_event_retried_after_a_lost_answer_keeps_its_event_id(http, aws, flaky_sqs):
    flaky_sqs(lose_answers=True)
    body = json.dumps({"message": "checkout failed", "level": "error"})
    headers = {"content-type": "application/json", "x-api-key": KEY}
    first = http.post("/api/ingest", body=body, headers=headers)
    assert first.status_code == 503, first.body
    second = http.post("/api/ingest", body=body, headers=headers)
    assert second.status_code == 202
    messages = drain_queue(aws.queue_url)
    assert len(messages) >= 2
    assert {m["event_id"] for m in messages} == {second.json_body["event_id"]}


def test_a_job_without_run_id_gets_the_same_assigned_run_id_on_retry(http, aws, put_key):
    put_key(KEY)
    body = json.dumps({"name": "nightly", "status": "success"})
    headers = {"content-type": "application/json", "x-api-key": KEY}
    first, second = (http.post("/api/ingest/job", body=body, headers=headers) for _ in range(2))
    assert first.status_code == second.status_code == 202, first.body
    assert first.json_body == second.json_body and "run_id" in first.json_body
    assert len({m["event_id"] for m in drain_queue(aws.queue_url)}) == 1


def test_different_requests_and_different_keys_are_never_merged(http, aws, put_key):
    put_key(KEY)
    headers = {"content-type": "application/json", "x-api-key": KEY}
    one = http.post("/api/ingest", body=json.dumps({"message": "a"}), headers=headers).json_body["event_id"]
    other = http.post("/api/ingest", body=json.dumps({"message": "b"}), headers=headers).json_body["event_id"]
    keyed = http.post(
        "/api/ingest", body=json.dumps({"message": "a"}), headers={**headers, "idempotency-key": "k1"}
    ).json_body["event_id"]
    log = http.post("/api/ingest/event", body=json.dumps({"message": "a"}), headers=headers).json_body["event_id"]
    assert len({one, other, keyed, log}) == 4
    again = http.post("/api/ingest", body=json.dumps({"message": "a"}), headers=headers).json_body["event_id"]
    assert again == one
    for carried in ({"user-agent": "curl/8.5.0"}, {"x-lookout-env-forced": "1"}):
        sent = http.post("/api/ingest", body=json.dumps({"message": "a"}), headers={**headers, **carried})
        assert sent.json_body["event_id"] != one, carried  # the message would carry other headers
    drain_queue(aws.queue_url)


def test_ids_change_with_the_retry_window(monkeypatch):
    now = [1_800_000_000.0]
    monkeypatch.setattr(pipeline.time, "time", lambda: now[0])
    first = pipeline.retry_ids("h", None, "f", 3)
    now[0] += pipeline.RETRY_WINDOW_SECONDS - 1 - now[0] % pipeline.RETRY_WINDOW_SECONDS
    assert pipeline.retry_ids("h", None, "f", 3) == first
    now[0] += 1
    assert pipeline.retry_ids("h", None, "f", 3) != first
    assert len(set(first)) == 3


@pytest.fixture
def edge_url(aws: Any) -> Iterator[str]:
    server = make_edge_server("127.0.0.1", 0, None)
    threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True).start()
    host, port = server.server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server.server_close()


class WaitsNoted(threading.Event):
    """The exporter's backoff without the wait: notes the seconds it would have waited (the
    edge's Retry-After, 5 s of an otherwise 3 s test)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.seconds.append(timeout or 0.0)
        return False


def test_otel_exporter_retry_after_a_partial_enqueue_queues_each_span_under_one_id(
    aws, edge_url, flaky_sqs, monkeypatch
):
    """1,000 spans of 3 KB: several queue messages; SQS takes half, the exporter retries the 503."""
    sqs = flaky_sqs()
    # The budget counts from the handler's start: decoding 3 MB of spans on a loaded machine needs the real one.
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", REQUEST_BUDGET_SECONDS)
    spans_out = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "retry-test"}))
    provider.add_span_processor(SimpleSpanProcessor(spans_out))
    tracer = provider.get_tracer("retry")
    for i in range(1000):
        with tracer.start_as_current_span(f"span {i}") as span:
            span.set_attribute("blob", "x" * 3000)
    spans = list(spans_out.get_finished_spans())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", edge_url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={KEY}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    exporter = OTLPSpanExporter()
    exporter._client._shutdown_event = waits = WaitsNoted()  # pinned SDK: where its backoff waits
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert not sqs.armed  # the first attempt was answered 503, the exporter retried
    assert waits.seconds == [5.0]  # after the edge's Retry-After
    messages = drain_queue(aws.queue_url)

    def span_ids(payload: dict) -> list[str]:
        return [s["spanId"] for r in payload["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]

    by_span = ids_by_content(messages, span_ids)
    assert len(by_span) == 1000
    assert all(len(ids) == 1 for ids in by_span.values()), sum(len(ids) > 1 for ids in by_span.values())
