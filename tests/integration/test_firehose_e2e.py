"""Firehose deliveries end to end over real HTTP: a spec-exact producer → edge → SQS (moto
server) → forwarder → the reference receiver (MariaDB). moto's Firehose does not send the
spec's headers, so tests/firehose_producer.py plays Firehose."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

from tests.firehose_producer import SOURCE_ARN, Delivery, cloudwatch_logs_record, delivery


def post(url: str, shipment: Delivery, signal: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers, body = shipment.request()
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", f"/api/firehose/{signal}", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.headers)
    finally:
        connection.close()


def stored_for(e2e: Any, shipment: Delivery, signal: str, count: int, timeout: float = 60.0) -> list[dict]:
    """The receiver's events of this delivery (by the request id in their headers), once all arrived."""
    deadline = time.monotonic() + timeout
    while True:
        events = [
            e
            for e in e2e.store.events(project_id="101", signal=signal, limit=500)
            if e["headers"].get("x-amz-firehose-request-id") == shipment.request_id
        ]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def test_a_gzip_delivery_reaches_lookout_once_even_when_retried(e2e):
    records = [{"name": "order.shipped", "n": i} for i in range(25)]
    shipment = delivery(records, e2e.keys["main"], gzip_body=True, common_attributes={"team": "shop"})
    status, answer, headers = post(e2e.edge_url, shipment, "security")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert answer["requestId"] == shipment.request_id and isinstance(answer["timestamp"], int)
    retry_status, _, _ = post(e2e.edge_url, shipment, "security")  # Firehose's retry: same request id
    assert retry_status == 200
    stored = stored_for(e2e, shipment, "security", 25)
    assert sorted(e["payload"]["n"] for e in stored) == list(range(25))
    assert all(e["times_seen"] == 1 for e in stored)
    first = stored[0]
    assert first["path"] == "/api/firehose/security"
    assert first["headers"]["x-amz-firehose-source-arn"] == SOURCE_ARN
    assert json.loads(first["headers"]["x-amz-firehose-common-attributes"]) == {"commonAttributes": {"team": "shop"}}
    assert e2e.keys["main"] not in json.dumps(stored)


def test_cloudwatch_logs_through_firehose_become_log_events(e2e):
    record = cloudwatch_logs_record([f"line {i}" for i in range(450)], group="/aws/lambda/checkout", stream="s9")
    shipment = delivery([record], e2e.keys["main"], gzip_body=True)
    status, _, _ = post(e2e.edge_url, shipment, "log")
    assert status == 200
    stored = stored_for(e2e, shipment, "log", 3)
    entries = [entry for e in sorted(stored, key=lambda e: e["event_id"]) for entry in e["payload"]["entries"]]
    assert [len(e["payload"]["entries"]) for e in sorted(stored, key=lambda e: e["event_id"])] == [200, 200, 50]
    assert [entry["message"] for entry in entries] == [f"line {i}" for i in range(450)]
    assert {(entry["log_group"], entry["log_stream"]) for entry in entries} == {("/aws/lambda/checkout", "s9")}


def test_a_refused_delivery_gets_the_spec_error_body(e2e):
    shipment = delivery([{"n": 1}], "lk_not_a_known_key")
    status, answer, _ = post(e2e.edge_url, shipment, "event")
    assert status == 401
    assert answer["requestId"] == shipment.request_id
    assert answer["errorMessage"].startswith("invalid_api_key: ")
