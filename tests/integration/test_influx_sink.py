"""The influx sink: line protocol mapping and escaping, and real writes to VictoriaMetrics
(v2 and v1 paths) and InfluxDB 1.x, read back through their query APIs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chalicelib.forward.sinks.influx import line_protocol, lines
from chalicelib.runtime import container
from chalicelib.runtime.config import settings
from edgectl.resources import StackNames
from tests.fake_lookout import FakeLookout, enqueue, forward_like_lambda, queue_counts, queue_message, sqs_event
from tests.real_servers import InfluxDB1, VictoriaMetrics

RECEIVED_NS = 1_795_341_600_123_000_000  # 2026-11-22T10:00:00.123Z, the fixtures' received_at


def metric_message(entries: list, **fields) -> dict:
    return queue_message({"entries": entries}, signal="metric", path="/api/ingest/metric", **fields)


def test_escaping_follows_the_line_protocol() -> None:
    line = line_protocol(
        "http requests,total",
        {"project_id": "42", "route name": "GET /a=b,c", "empty": "", "multi\nline": "x"},
        {"value": 1.5, "n": 3, "ok": True, "note": 'say "hi"\\ now\nthen'},
        7,
    )
    assert line == (
        r"http\ requests\,total,multi\ line=x,project_id=42,route\ name=GET\ /a\=b\,c"
        r' n=3i,note="say \"hi\"\\ now then",ok=true,value=1.5 7'
    )
    assert line_protocol("m", {}, {"nested": {"a": 1}, "nan": float("nan")}, 1) is None  # no writable field
    assert line_protocol("#comment", {}, {"v": 1.0}, 1) == "comment v=1.0 1"


def test_metric_entries_become_points_with_their_own_or_distinct_times() -> None:
    message = metric_message(
        [
            {"name": "orders", "value": 3, "tags": {"region": "eu"}, "at": 1764000000},
            {"name": "orders", "value": 4},
            {"name": "orders", "value": 5},
            {"kind": "counter", "n": 1, "tags": []},
            {"unit": "ms"},
        ]
    )
    assert list(lines(message)) == [
        "orders,project_id=42,region=eu,signal=metric value=3.0 1764000000000000000",
        f"orders,project_id=42,signal=metric value=4.0 {RECEIVED_NS + 1}",
        f"orders,project_id=42,signal=metric value=5.0 {RECEIVED_NS + 2}",
        f"counter,project_id=42,signal=metric n=1.0 {RECEIVED_NS + 3}",
        f'lookout_metric,project_id=42,signal=metric unit="ms" {RECEIVED_NS + 4}',
    ]


def test_entries_of_every_shape_map_as_docs_sinks_says() -> None:
    """The per-shape short path of `entry_lines` (keys, names, tags, fields and times looked up
    once per set of keys) gives what the mapping says for each shape, mixed in one event."""
    message = metric_message(
        [
            {"name": " ", "kind": "latency", "ms": 12, "tags": {"route": "/a b", "blank": " ", "list": [1]}},
            {"name": {"not": "a name"}, "metric": 7, "b": True, "a": 'say "hi"\nthen', "c": 2.5},
            {"name": "orders", "value": float("nan"), "other": [1, 2]},  # nothing writable: no line
            {"name": "orders", "value": 1.5, "tags": ["php", "empty", "map"], "time": "2026-11-22T10:00:01Z"},
            {"name": "orders", "value": 2, "ts": "not a time"},
            {"name": "big", "value": 2**70, "neg": -0.0, "inf": float("inf")},
            {"tags": {"only": "tags"}},
            {"metric": False, "x=y z": 1},
        ]
    )
    assert list(lines(message)) == [
        rf"latency,project_id=42,route=/a\ b,signal=metric ms=12.0 {RECEIVED_NS}",
        rf'7,project_id=42,signal=metric a="say \"hi\" then",b=true,c=2.5 {RECEIVED_NS + 1}',
        "orders,project_id=42,signal=metric value=1.5 1795341601000000000",
        f"orders,project_id=42,signal=metric value=2.0 {RECEIVED_NS + 4}",
        f"big,project_id=42,signal=metric neg=-0.0,value=1.1805916207174113e+21 {RECEIVED_NS + 5}",
        f"lookout_metric,only=tags,project_id=42,signal=metric count=1.0 {RECEIVED_NS + 6}",
        rf"False,project_id=42,signal=metric x\=y\ z=1.0 {RECEIVED_NS + 7}",
    ]


def test_otlp_metric_data_points_become_points() -> None:
    payload = {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "http.server.duration",
                                "histogram": {
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": "1764000000000000001",
                                            "count": "3",
                                            "sum": 12.5,
                                            "attributes": [{"key": "route", "value": {"stringValue": "/a"}}],
                                        }
                                    ]
                                },
                            },
                            {"name": "queue.depth", "gauge": {"dataPoints": [{"asInt": "7", "timeUnixNano": "5"}]}},
                        ]
                    }
                ],
            }
        ]
    }
    message = queue_message(payload, signal="otlp_metrics", path="/v1/metrics")
    assert list(lines(message)) == [
        "http.server.duration,project_id=42,route=/a,service_name=api,signal=otlp_metrics count=3.0,sum=12.5 "
        "1764000000000000001",
        "queue.depth,project_id=42,service_name=api,signal=otlp_metrics value=7i 5",
    ]


@pytest.fixture
def lookout(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLookout]:
    fake = FakeLookout().start()
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", fake.url)
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", "tok")
    container.reset()
    yield fake
    fake.stop()
    container.reset()


def use_sinks(monkeypatch: pytest.MonkeyPatch, *sinks: dict) -> None:
    monkeypatch.setenv("LOOKOUT_EDGE_SINKS", json.dumps(list(sinks)))
    settings.cache_clear()


@pytest.fixture(scope="module")
def victoria() -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics()
    yield server
    server.stop()


@pytest.mark.parametrize("version", [2, 1])
def test_metrics_land_in_victoriametrics(
    aws: StackNames, lookout: FakeLookout, victoria: VictoriaMetrics, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    where = {"org": "ops", "bucket": "lookout"} if version == 2 else {"version": 1, "db": "lookout"}
    use_sinks(monkeypatch, {"name": "vm", "type": "influx", "url": victoria.url, "signals": ["metric"], **where})
    project = f"vm{version}"
    message = metric_message([{"name": "checkout", "value": 2.5, "tags": {"step": "pay"}}], project_id=project)
    enqueue(aws.queue_url, [message])

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}

    (series,) = victoria.export(f'{{project_id="{project}"}}')
    assert series["metric"]["__name__"] == "checkout_value"
    assert {k: series["metric"][k] for k in ("project_id", "signal", "step")} == {
        "project_id": project,
        "signal": "metric",
        "step": "pay",
    }
    assert series["values"] == [2.5] and series["timestamps"] == [RECEIVED_NS // 1_000_000]
    assert queue_counts(aws.queue_url) == (0, 0)


def test_metrics_land_in_influxdb_1(aws: StackNames, lookout: FakeLookout, monkeypatch: pytest.MonkeyPatch) -> None:
    server = InfluxDB1("lookout")
    try:
        use_sinks(
            monkeypatch,
            {
                "name": "influx",
                "type": "influx",
                "url": server.url,
                "signals": ["metric"],
                "version": 1,
                "db": "lookout",
            },
        )
        entries = [{"name": "latency ms", "value": v, "route": "GET /a,b"} for v in (10, 20)]
        enqueue(aws.queue_url, [metric_message(entries)])

        assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}

        rows = server.select("latency ms")
        assert [(r["time"], r["value"], r["route"], r["project_id"]) for r in rows] == [
            (RECEIVED_NS, 10.0, "GET /a,b", "42"),
            (RECEIVED_NS + 1, 20.0, "GET /a,b", "42"),
        ]
    finally:
        server.stop()


def test_a_line_the_server_refuses_dead_letters_the_event_only_at_that_sink(
    aws: StackNames, lookout: FakeLookout, victoria: VictoriaMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_sinks(
        monkeypatch,
        {
            "name": "vm",
            "type": "influx",
            "url": victoria.url + "/nowhere",
            "signals": ["metric"],
            "org": "o",
            "bucket": "b",
        },
    )
    enqueue(aws.queue_url, [metric_message([{"name": "m", "value": 1}])])

    assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}  # a 4xx is for good

    assert len(lookout.requests) == 1
    assert queue_counts(aws.dlq_url) == (1, 0)


def test_whole_stack_metric_reaches_victoriametrics(tmp_path) -> None:
    """SDK-shaped request → edge over HTTP → SQS (moto server) → forwarder → VictoriaMetrics, read back
    through its export API; `make dev` runs exactly this when victoria-metrics is installed."""
    import io
    import time

    from edgectl.devstack import DevStack, StackOptions, free_port
    from tests.integration.test_devstack import send
    from tests.real_servers import require_binary, victoria_export

    require_binary("victoria-metrics", "victoria-metrics")
    options = StackOptions(
        edge_port=free_port(),
        receiver_port=free_port(),
        aws_port=free_port(),
        metrics_port=free_port(),
        state_dir=tmp_path,
        poll_wait=1,
    )
    log = io.StringIO()
    with DevStack(options, out=log) as stack:
        entries = [{"name": "cart_total", "value": 12.5, "tags": {"currency": "EUR"}, "at": int(time.time())}]
        status, answer, _ = send(
            f"{stack.edge_url}/api/ingest/metric",
            json.dumps({"entries": entries}).encode(),
            {"X-Api-Key": stack.demo_key, "Content-Type": "application/json"},
        )
        assert status == 202, answer
        deadline = time.monotonic() + 30
        while not (found := victoria_export(stack.metrics_url, '{__name__="cart_total_value",currency="EUR"}')):
            assert time.monotonic() < deadline, f"no point in VictoriaMetrics after 30 s\n{log.getvalue()[-3000:]}"
            time.sleep(0.3)
        (series,) = found
        assert series["values"] == [12.5]
        assert series["metric"]["signal"] == "metric" and series["metric"]["project_id"]
        assert "victoria-metrics" in stack.environment()["LOOKOUT_EDGE_SINKS"]
