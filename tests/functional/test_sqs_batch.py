"""SQS batch operations on moto: chunking by ten, and failures reported per entry."""

from __future__ import annotations

from chalicelib.runtime import sqs_batch
from edgectl.iam_enforce import Enforcer
from edgectl.resources import StackNames
from tests.fake_lookout import queue_counts


def fill(queue_url: str, count: int) -> list[dict]:
    report = sqs_batch.send_messages(
        queue_url,
        {
            f"k{i}": sqs_batch.Outgoing(f"body {i}", {"n": {"DataType": "Number", "StringValue": str(i)}})
            for i in range(count)
        },
    )
    assert (report.failed, report.sent) == (set(), {f"k{i}" for i in range(count)})
    received = []
    while got := sqs_batch.receive(queue_url, 10, visibility=60, wait=0):
        received.extend(got)
    return received


def test_send_receive_keeps_bodies_and_attributes_beyond_ten(aws: StackNames) -> None:
    received = fill(aws.queue_url, 23)
    assert sorted(m["Body"] for m in received) == sorted(f"body {i}" for i in range(23))
    assert {m["MessageAttributes"]["n"]["StringValue"] for m in received} == {str(i) for i in range(23)}
    assert sqs_batch.depth(aws.queue_url) == (0, 23)


def test_delete_reports_only_the_bad_handles(aws: StackNames) -> None:
    received = fill(aws.queue_url, 12)
    handles = {m["MessageId"]: m["ReceiptHandle"] for m in received}
    handles["bogus"] = "not-a-receipt-handle"
    assert sqs_batch.delete_messages(aws.queue_url, handles) == {"bogus"}
    assert queue_counts(aws.queue_url) == (0, 0)


def test_change_visibility_releases_and_reports_failures(aws: StackNames) -> None:
    received = fill(aws.queue_url, 3)
    timeouts = {m["MessageId"]: (m["ReceiptHandle"], 0) for m in received}
    timeouts["bogus"] = ("not-a-receipt-handle", 0)
    assert sqs_batch.change_visibility(aws.queue_url, timeouts) == {"bogus"}
    assert queue_counts(aws.queue_url) == (3, 0)


def test_a_failed_call_marks_every_entry_failed(aws: StackNames, iam: Enforcer) -> None:
    missing = aws.dlq_url + "-missing"
    report = sqs_batch.send_messages(missing, {"a": sqs_batch.Outgoing("x", {}), "b": sqs_batch.Outgoing("y", {})})
    assert (report.failed, report.sent) == ({"a", "b"}, set()) and report.reason
    # The call failed as it would in AWS: no function may send to a queue of no stack.
    assert [(d.action, d.resource.rsplit(":", 1)[-1]) for d in iam.denials] == [
        ("sqs:SendMessage", missing.rsplit("/")[-1])
    ]
    iam.denials.clear()
    assert queue_counts(aws.dlq_url) == (0, 0)
