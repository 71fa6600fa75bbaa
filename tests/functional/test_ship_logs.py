"""`ship_logs`: CloudWatch Logs subscription events, exactly as CloudWatch Logs sends them, become
`log` events on the queue (CONTRACT §12), then reach Lookout and the log sinks like any other."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import boto3
import pytest

from chalicelib.contract.envelope import decode_payload
from chalicelib.runtime import container
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.ship_logs import handler as ship_handler
from edgectl.iam_enforce import DEFAULT_ACCOUNT as MOTO_ACCOUNT
from edgectl.iam_enforce import Enforcer
from edgectl.resources import StackNames
from tests.conftest import REGION, drain_queue
from tests.functional.test_cloudwatch_logs import CONTROL as CONTROL_MESSAGE
from tests.functional.test_cloudwatch_logs import data_message as cloudwatch_data_message

TAIL_KEY = "lk_tail_key_for_cloudwatch_logs"
GROUP, STREAM = "/aws/lambda/checkout", "2026/12/02/[$LATEST]0f6e3a0b5f1c4c5e9f0d4b1f3e2a1c7d"


def subscription_event(message: dict[str, Any]) -> dict[str, Any]:
    """What a subscription filter hands its Lambda: base64 of the gzip of the JSON message."""
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(message).encode())).decode()}}


def data_message(*texts: str) -> dict[str, Any]:
    return cloudwatch_data_message(list(texts), GROUP, STREAM)


@pytest.fixture
def tail(aws: StackNames, put_key, monkeypatch: pytest.MonkeyPatch) -> StackNames:
    put_key(TAIL_KEY, project_id="77", organization_id="8")
    monkeypatch.setenv("LOOKOUT_EDGE_TAIL_API_KEY", TAIL_KEY)
    settings.cache_clear()
    container.reset()
    return aws


def ship(event: dict[str, Any]) -> dict[str, Any]:
    from app import ship_logs

    return ship_logs(event, None)


def test_a_data_message_becomes_one_log_event_of_the_tail_project(tail: StackNames) -> None:
    answer = ship(subscription_event(data_message("START RequestId: 1", "order 17 paid", "END RequestId: 1")))

    (queued,) = drain_queue(tail.queue_url)
    assert answer == {"shipped": 1, "event_ids": [queued["event_id"]]}
    assert queued["_attributes"] == {"signal": "log", "project_id": "77"}
    assert (queued["signal"], queued["project_id"], queued["organization_id"], queued["path"]) == (
        "log",
        "77",
        "8",
        "cloudwatch-logs",
    )
    entries = queued["payload"]["entries"]
    assert [e["message"] for e in entries] == ["START RequestId: 1", "order 17 paid", "END RequestId: 1"]
    assert (
        entries[1]
        == {
            "id": "37190000000000001",
            "timestamp": 1764669600001,
            "message": "order 17 paid",
            "log_group": GROUP,
            "log_stream": STREAM,
        }
        or entries[1]["log_group"] == GROUP
    )
    assert TAIL_KEY not in json.dumps(queued)


def test_a_control_message_is_dropped(tail: StackNames) -> None:
    assert ship(subscription_event(CONTROL_MESSAGE)) == {"shipped": 0}
    assert drain_queue(tail.queue_url) == []


def test_a_full_megabyte_batch_is_split_into_log_events_that_fit_the_queue(tail: StackNames) -> None:
    """CloudWatch Logs sends up to ~1 MB of messages per invocation: here 400 events of 2.5 KB."""
    texts = [f"{i:04d} " + "x" * 2500 for i in range(400)]
    answer = ship(subscription_event(data_message(*texts)))

    queued = [decode_payload(m) for m in drain_queue(tail.queue_url)]
    assert answer["shipped"] == len(queued) == 2  # at most 200 entries per log event
    shipped = sorted(e["message"] for m in queued for e in m["payload"]["entries"])
    assert shipped == texts


def test_a_queue_refusal_raises_and_the_retry_keeps_the_event_ids(
    tail: StackNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = subscription_event(data_message("one", "two"))
    monkeypatch.setenv("LOOKOUT_EDGE_QUEUE_URL", tail.queue_url + "-missing")
    settings.cache_clear()
    with pytest.raises(ship_handler.ShipFailed, match="1 of 1 log events not queued"):
        ship(event)

    monkeypatch.setenv("LOOKOUT_EDGE_QUEUE_URL", tail.queue_url)
    settings.cache_clear()
    first = ship(event)["event_ids"]
    assert ship(event)["event_ids"] == first  # Lambda's retry: same ids, Lookout stores it once


def test_the_tail_key_can_come_from_ssm_and_must_be_known(
    tail: StackNames, monkeypatch: pytest.MonkeyPatch, iam: Enforcer
) -> None:
    boto3.client("ssm", region_name=REGION).put_parameter(Name="/lookout/tail-key", Value=TAIL_KEY, Type="SecureString")
    monkeypatch.delenv("LOOKOUT_EDGE_TAIL_API_KEY")
    monkeypatch.setenv("LOOKOUT_EDGE_TAIL_API_KEY_PARAM", "/lookout/tail-key")
    settings.cache_clear()
    assert ship(subscription_event(data_message("via ssm")))["shipped"] == 1
    assert (
        "ship_logs",
        "ssm:GetParameter",
        f"arn:aws:ssm:{REGION}:{MOTO_ACCOUNT}:parameter/lookout/tail-key",
    ) in iam.calls

    monkeypatch.delenv("LOOKOUT_EDGE_TAIL_API_KEY_PARAM")
    monkeypatch.setenv("LOOKOUT_EDGE_TAIL_API_KEY", "lk_not_a_known_key")
    settings.cache_clear()
    container.reset()
    with pytest.raises(ConfigError, match="not in the keys table"):
        ship(subscription_event(data_message("lost?")))


def test_an_event_that_is_not_from_cloudwatch_logs_is_reported_not_retried(tail: StackNames) -> None:
    assert ship({"awslogs": {"data": "bm90IGd6aXA="}})["malformed"] is True
    assert ship({"detail": {}})["malformed"] is True
    assert drain_queue(tail.queue_url) == []
