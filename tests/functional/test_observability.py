"""Logs carry the event id; X-Ray costs nothing when off and traces the handler when on."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from chalicelib.runtime import observability
from edgectl.devstack import ROOT

KEY = "lk_trace_key"
JSON_WITH = {"content-type": "application/json"}


@pytest.fixture(autouse=True)
def log_every_accepted_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted requests are not logged by default (tests/functional/test_log_bill.py); these tests read their lines."""
    monkeypatch.setenv("LOOKOUT_EDGE_LOG_ACCEPTED_SHARE", "1")


@pytest.fixture
def edge_log() -> Iterator[io.StringIO]:
    """The edge's JSON log lines (the cached logger keeps the stream it was built with)."""
    buffer = io.StringIO()
    handlers = [h for h in observability.logger().handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = buffer
    yield buffer
    for handler, stream in zip(handlers, previous, strict=True):
        handler.stream = stream


def lines_of(buffer: io.StringIO) -> list[dict]:
    """The JSON lines written so far, then forget them."""
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    buffer.seek(0)
    buffer.truncate()
    return lines


def test_tracing_is_off_by_default_and_nothing_is_built(http, put_key):
    put_key(KEY)
    response = http.post("/api/ingest", body=b'{"m": 1}', headers={**JSON_WITH, "x-api-key": KEY})
    assert response.status_code == 202
    assert not observability.tracing_enabled()
    assert observability.tracer.peek("api") is None


def test_accepted_log_line_carries_the_event_id_as_correlation_id(http, put_key, edge_log):
    put_key(KEY)
    response = http.post("/api/ingest", body=b'{"m": 1}', headers={**JSON_WITH, "x-api-key": KEY})
    (accepted,) = [line for line in lines_of(edge_log) if line["message"] == "ingest accepted"]
    assert accepted["correlation_id"] == response.json_body["event_id"]
    refused = http.post("/api/ingest", body=b'{"m": 1}', headers={**JSON_WITH, "x-api-key": "nope"})
    assert refused.status_code == 401
    (line,) = [line for line in lines_of(edge_log) if line["message"] == "ingest refused"]
    assert line.get("correlation_id") is None


# X-Ray patches botocore for the whole process: the traced request runs in a fresh interpreter,
# calling the Lambda handler as Lambda does (Chalice's test client would apply the config's
# POWERTOOLS_TRACE_DISABLED=true during the call).
TRACED_REQUEST = textwrap.dedent(
    """
    import json, os
    os.environ.update(POWERTOOLS_TRACE_DISABLED="false", AWS_LAMBDA_FUNCTION_NAME="edge", LAMBDA_TASK_ROOT=".",
                      _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                      AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t", AWS_DEFAULT_REGION="us-east-1")
    import boto3
    from moto import mock_aws
    from aws_xray_sdk.core import xray_recorder
    from app import app
    from edgectl.lambda_shim import api_gateway_event
    from edgectl.resources import create_resources
    from tests.conftest import key_item

    class Recorded:
        sent = []
        def send_entity(self, entity):
            self.sent.append(entity.to_dict())
        def set_daemon_address(self, address):
            pass

    with mock_aws():
        names = create_resources(boto3.Session(region_name="us-east-1"))
        os.environ.update(names.environment())
        boto3.client("dynamodb").put_item(TableName=names.keys_table, Item=key_item("KEY"))
        xray_recorder.configure(emitter=Recorded(), streaming_threshold=0)
        event = api_gateway_event("/api/ingest", b'{"m": 1}', {"x-api-key": "KEY", "content-type": "application/json"})
        response = app(event, None)

    def names(entities):
        for entity in entities:
            yield entity["name"]
            yield from names(entity.get("subsegments", []))

    print(json.dumps({"status": response["statusCode"], "names": sorted(set(names(Recorded.sent)))}))
    """
).replace("KEY", KEY)


def test_tracing_on_records_the_handler_and_its_aws_calls():
    done = subprocess.run([sys.executable, "-c", TRACED_REQUEST], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 202
    assert "## ingest" in result["names"]
    assert {"dynamodb", "sqs"} <= set(result["names"])  # botocore patched: every AWS call traced


def test_every_log_line_carries_the_lambda_context_and_cold_start_only_once(http, put_key, edge_log):
    put_key(KEY)
    first = http.post("/api/ingest", body=b'{"m": 1}', headers={**JSON_WITH, "x-api-key": KEY})
    second = http.post("/api/ingest", body=b'{"m": 2}', headers={**JSON_WITH, "x-api-key": KEY})
    assert first.status_code == second.status_code == 202
    one, two = [line for line in lines_of(edge_log) if line["message"] == "ingest accepted"]
    assert (one["cold_start"], two["cold_start"]) == (True, False)
    assert one["function_request_id"] and one["function_request_id"] != two["function_request_id"]
    assert one["function_name"] and one["function_memory_size"]


def test_the_forwarder_and_the_key_sync_run_in_the_same_middleware(aws, monkeypatch, capsys):
    """One EMF line per invocation under the handler's own service, and its log lines carry the
    request id: for an SQS batch and for the schedule alike, whether the handler returns or raises."""
    from tests.conftest import chalice_client

    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", "t")
    monkeypatch.setenv("LOOKOUT_DB_URL", "mysql://root:@127.0.0.1:1/none")
    sync_log = io.StringIO()
    monkeypatch.setattr(observability.logger("sync").handlers[0], "stream", sync_log)
    with chalice_client() as client:
        observability.count("probe", service="forwarder")
        client.lambda_.invoke("forward_events", {"Records": []})
        schedule = client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        with pytest.raises(Exception, match="Can't connect"):
            client.lambda_.invoke("sync_keys", schedule)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [(line["service"], "probe" in line) for line in emf] == [
        ("lookout-edge-forwarder", True),
        ("lookout-edge-sync", False),
    ]
    (failed,) = [line for line in lines_of(sync_log) if line["message"] == "key sync failed"]
    assert failed["function_request_id"] and failed["cold_start"] is False
    assert failed.get("correlation_id") is None
