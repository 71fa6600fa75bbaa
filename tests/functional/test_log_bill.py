"""The edge's log bill: an accepted event costs ≤ 100 B of log at the default level; refusals are always logged."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from chalicelib.runtime import observability
from chalicelib.runtime.observability import IntervalCounts, emf_line
from edgectl.cmd_render_policies import ROOT
from edgectl.lambda_shim import function_url_event
from tests.conftest import Clock, drain_queue

KEY = "lk_log_bill_key"
HEADERS = {"content-type": "application/json", "x-api-key": KEY}
BODY = b'{"message": "Undefined index: user_id", "level": "error"}'


def serve(event: dict) -> dict:
    from app import app

    answer = app(event, None)
    app.current_request = None
    return answer


@pytest.fixture
def output(capfd: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """What the function writes to stdout since the last call: EMF lines and the cached
    Powertools logger's lines (it keeps the stream it was built with)."""
    buffer = io.StringIO()
    handlers = [h for h in observability.logger().handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = buffer
    capfd.readouterr()

    def lines() -> list[str]:
        text = buffer.getvalue() + capfd.readouterr().out
        buffer.seek(0)
        buffer.truncate()
        return [line for line in text.splitlines() if line.strip()]

    yield lines
    for handler, stream in zip(handlers, previous, strict=True):
        handler.stream = stream


def test_accepted_events_write_one_emf_line_per_interval_and_nothing_else(put_key, aws, output, monkeypatch):
    monkeypatch.setenv("LOOKOUT_EDGE_METRICS_INTERVAL_SECONDS", "3600")
    put_key(KEY)
    output()
    for _ in range(20):
        assert serve(function_url_event("/api/ingest", BODY, HEADERS))["statusCode"] == 202
    lines = output()
    assert sum(len(line) + 1 for line in lines) / 20 <= 100  # bytes of log per accepted event
    (first,) = lines  # the container's first count is written at once, the rest wait for the interval
    document = json.loads(first)
    assert document["accepted"] == 1 and document["service"] == "lookout-edge-api"
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "LookoutEdge"
    assert len(drain_queue(aws.queue_url)) == 20


def test_the_interval_line_carries_every_count_since_the_last(put_key, aws, output, monkeypatch):
    put_key(KEY)
    monkeypatch.setenv("LOOKOUT_EDGE_METRICS_INTERVAL_SECONDS", "3600")
    for _ in range(4):
        serve(function_url_event("/api/ingest", BODY, HEADERS))
    output()
    from chalicelib.runtime.config import settings

    monkeypatch.setenv("LOOKOUT_EDGE_METRICS_INTERVAL_SECONDS", "0")
    settings.cache_clear()
    serve(function_url_event("/api/ingest", BODY, HEADERS))
    (line,) = output()
    assert json.loads(line)["accepted"] == 4  # 3 waiting + this one


def test_refusals_are_always_logged_with_their_metric(put_key, aws, output):
    put_key(KEY)
    output()
    answer = serve(function_url_event("/api/ingest", BODY, {**HEADERS, "x-api-key": "unknown"}))
    assert answer["statusCode"] == 401
    lines = [json.loads(line) for line in output()]
    refused = [line for line in lines if line.get("message") == "ingest refused"]
    assert refused and refused[0]["status"] == 401 and refused[0]["error"] == "invalid_api_key"
    assert any(line.get("rejected_401") == [1.0] or line.get("rejected_401") == 1 for line in lines)
    assert "unknown" not in "\n".join(json.dumps(line) for line in lines)


def test_a_share_of_accepted_requests_can_be_logged(put_key, aws, output, monkeypatch):
    monkeypatch.setenv("LOOKOUT_EDGE_LOG_ACCEPTED_SHARE", "1")
    put_key(KEY)
    output()
    answer = serve(function_url_event("/api/ingest", BODY, HEADERS))
    lines = [json.loads(line) for line in output()]
    (accepted,) = [line for line in lines if line.get("message") == "ingest accepted"]
    assert accepted["event_ids"] == [json.loads(answer["body"])["event_id"]]


def test_interval_counts_wait_for_their_interval():
    clock = Clock(100.0)
    counts = IntervalCounts("api", clock)
    assert counts.line_if_due(60) is None  # nothing counted, nothing written
    counts.add("accepted", 2)
    assert json.loads(counts.line_if_due(60) or "")["accepted"] == 2
    counts.add("accepted")
    clock.now += 59
    assert counts.line_if_due(60) is None
    clock.now += 1
    assert json.loads(counts.line_if_due(60) or "")["accepted"] == 1


def test_interval_samples_are_written_before_their_interval_once_emf_holds_no_more():
    """EMF takes at most 100 values of a metric in one line: the 100th sample writes the line."""
    clock = Clock(100.0)
    counts = IntervalCounts("forwarder", clock)
    counts.add("forwarded", 10)
    counts.add_sample("backend_latency", 52.4)
    first = json.loads(counts.line_if_due(60) or "")  # a container's first counts: at once
    assert (first["forwarded"], first["backend_latency"]) == (10, [52])
    assert {"Name": "backend_latency", "Unit": "Milliseconds"} in first["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    for _ in range(99):
        counts.add_sample("backend_latency", 50)
    assert counts.line_if_due(60) is None  # 99 values, within the interval
    counts.add_sample("backend_latency", 51)
    line = json.loads(counts.line_if_due(60) or "")
    assert len(line["backend_latency"]) == 100 and "forwarded" not in line


def test_emf_line_is_compact():
    line = emf_line({"accepted": 3}, "api")
    assert " " not in line and '"accepted":3' in line and len(line) < 200


def test_the_accepted_path_imports_no_powertools():
    """Nothing logged, nothing counted per request: a cold container's first 202 builds neither
    Logger nor Metrics (tens of ms of imports)."""
    program = textwrap.dedent(
        """
        import json, os, sys
        os.environ.update(AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t", AWS_DEFAULT_REGION="us-east-1")
        from moto import mock_aws
        with mock_aws():
            import boto3
            from edgectl.resources import create_resources
            from tests.conftest import key_item
            names = create_resources(boto3.Session(region_name="us-east-1"))
            os.environ.update(names.environment())
            boto3.client("dynamodb").put_item(TableName=names.keys_table, Item=key_item("k"))
            from app import app
            from edgectl.lambda_shim import function_url_event
            headers = {"content-type": "application/json", "x-api-key": "k"}
            event = function_url_event("/api/ingest", b'{"m": 1}', headers)
            status = app(event, None)["statusCode"]
        loaded = sorted(m for m in sys.modules if m.startswith("aws_lambda_powertools"))
        print(json.dumps({"status": status, "powertools": loaded}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"status": 202, "powertools": []}
