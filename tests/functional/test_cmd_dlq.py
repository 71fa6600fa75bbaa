"""`dlq status | redrive | peek` against moto, with messages dead-lettered the way the forwarder does."""

from __future__ import annotations

import json
from collections import Counter

import boto3
import pytest

from chalicelib.contract.envelope import encode_message
from edgectl.cli import main
from edgectl.resources import StackNames
from tests.conftest import drain_queue
from tests.fake_lookout import REGION, queue_counts, queue_message


def dead_letter(
    dlq_url: str, count: int, reason: str | None = "rejected", status: str | None = "200", sinks: str | None = None
) -> list[dict]:
    """Messages as the forwarder (reason attributes) or the redrive policy (none) leave them."""
    sqs = boto3.client("sqs", region_name=REGION)
    messages = [queue_message({"secret_looking": "payload-content"}) for _ in range(count)]
    for message in messages:
        attributes = {"signal": {"DataType": "String", "StringValue": "error"}}
        if reason:
            attributes["dlq_reason"] = {"DataType": "String", "StringValue": reason}
        if status:
            attributes["dlq_status"] = {"DataType": "Number", "StringValue": status}
        if sinks:
            attributes["dlq_sinks"] = {"DataType": "String", "StringValue": sinks}
        sqs.send_message(QueueUrl=dlq_url, MessageBody=encode_message(message), MessageAttributes=attributes)
    return messages


def test_status_counts_by_reason_and_leaves_messages_visible(aws: StackNames, capsys: pytest.CaptureFixture) -> None:
    dead_letter(aws.dlq_url, 3)
    dead_letter(aws.dlq_url, 2, reason="batch_rejected", status="413")
    dead_letter(aws.dlq_url, 1, reason=None, status=None)
    dead_letter(aws.dlq_url, 1, reason="batch_rejected", status="400", sinks="loki")

    assert main(["dlq", "status"]) == 0

    out = capsys.readouterr().out
    assert "depth 7 (in flight 0)" in out
    assert "oldest 0m0" in out
    lines = {" ".join(line.split()[:-1]): line.split()[-1] for line in out.splitlines() if line.startswith("    ")}
    assert lines == {
        "rejected (200)": "3",
        "batch_rejected (413)": "2",
        "max_receives": "1",
        "batch_rejected (400) by loki": "1",
    }
    assert queue_counts(aws.dlq_url) == (7, 0)  # released after reading


def test_peek_shows_envelopes_without_payload(aws: StackNames, capsys: pytest.CaptureFixture) -> None:
    messages = dead_letter(aws.dlq_url, 4)

    assert main(["dlq", "peek", "2", "--dlq-url", aws.dlq_url]) == 0

    out = capsys.readouterr().out
    shown = [json.loads(line) for line in out.splitlines()]
    assert len(shown) == 2
    assert {s["envelope"]["event_id"] for s in shown} <= {m["event_id"] for m in messages}
    assert all(s["reason"] == "rejected (200)" and "payload" not in s["envelope"] for s in shown)
    assert "payload-content" not in out
    assert queue_counts(aws.dlq_url) == (4, 0)


def test_redrive_moves_every_message_back_exactly_once(aws: StackNames, capsys: pytest.CaptureFixture) -> None:
    messages = dead_letter(aws.dlq_url, 23)

    assert main(["dlq", "redrive"]) == 0

    assert "moved 23 message(s)" in capsys.readouterr().out
    assert queue_counts(aws.dlq_url) == (0, 0)
    back = drain_queue(aws.queue_url)
    assert Counter(m["event_id"] for m in back) == Counter(m["event_id"] for m in messages)
    assert all(m["_attributes"] == {"signal": "error"} for m in back)  # reason attributes removed
    assert back[0]["payload"] == {"secret_looking": "payload-content"}


def test_redrive_limit_and_progress(aws: StackNames, capsys: pytest.CaptureFixture) -> None:
    dead_letter(aws.dlq_url, 15)

    assert main(["dlq", "redrive", "--limit", "12"]) == 0

    captured = capsys.readouterr()
    assert "redrive: 10/12 moved" in captured.err and "redrive: 12/12 moved" in captured.err
    assert queue_counts(aws.queue_url) == (12, 0)
    assert queue_counts(aws.dlq_url) == (3, 0)


def test_redrive_dry_run_moves_nothing(aws: StackNames, capsys: pytest.CaptureFixture) -> None:
    dead_letter(aws.dlq_url, 5)

    assert main(["dlq", "redrive", "--dry-run"]) == 0

    assert "would move 5 message(s)" in capsys.readouterr().out
    assert queue_counts(aws.queue_url) == (0, 0)
    assert queue_counts(aws.dlq_url) == (5, 0)


def test_redrive_that_cannot_send_keeps_messages_in_the_dlq(aws: StackNames, capsys: pytest.CaptureFixture) -> None:
    dead_letter(aws.dlq_url, 3)

    assert main(["dlq", "redrive", "--queue-url", aws.queue_url + "-missing"]) == 1

    assert "3 failed" in capsys.readouterr().out
    assert queue_counts(aws.dlq_url) == (3, 0)


def test_missing_queue_url_is_named(capsys: pytest.CaptureFixture) -> None:
    assert main(["dlq", "status"]) == 2
    assert "LOOKOUT_EDGE_DLQ_URL" in capsys.readouterr().err
