import json

import pytest

from chalicelib.edge.enqueue import EnqueueFailed, OutgoingMessage, plan_batches, send_messages
from chalicelib.runtime import aws as aws_clients
from tests.conftest import drain_queue


def msg(i: int, size: int = 10) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"i": i, "pad": "x" * size}), signal="log", project_id="42")


def test_batches_respect_count_and_bytes():
    messages = [msg(i) for i in range(25)]
    assert [len(b) for b in plan_batches(messages, list(range(25)))] == [10, 10, 5]
    big = [msg(i, 100 * 1024) for i in range(5)]
    batches = plan_batches(big, list(range(5)))
    assert all(sum(big[i].size() for i in b) <= 256 * 1024 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_send_messages_puts_all_with_attributes(aws):
    send_messages(aws.queue_url, [msg(i) for i in range(23)])
    got = drain_queue(aws.queue_url)
    assert sorted(m["i"] for m in got) == list(range(23))
    assert got[0]["_attributes"] == {"signal": "log", "project_id": "42"}


class FlakySQS:
    """Wraps the real client; fails the chosen entries on the first N batch calls."""

    def __init__(self, real, fail_ids, times):
        self.real, self.fail_ids, self.times, self.calls = real, set(fail_ids), times, []

    def send_message_batch(self, QueueUrl, Entries):
        self.calls.append([e["Id"] for e in Entries])
        if self.times > 0:
            self.times -= 1
            keep = [e for e in Entries if e["Id"] not in self.fail_ids]
            response = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=keep) if keep else {"Successful": []}
            failed = [
                {"Id": e["Id"], "Code": "InternalError", "SenderFault": False}
                for e in Entries
                if e["Id"] in self.fail_ids
            ]
            return {"Successful": response.get("Successful", []), "Failed": failed}
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def test_failed_entries_are_retried_alone(aws, monkeypatch):
    flaky = FlakySQS(aws_clients.client("sqs"), {"3"}, times=1)
    monkeypatch.setattr("chalicelib.edge.enqueue.client", lambda name: flaky)
    send_messages(aws.queue_url, [msg(i) for i in range(5)])
    assert flaky.calls == [["0", "1", "2", "3", "4"], ["3"]]
    assert sorted(m["i"] for m in drain_queue(aws.queue_url)) == [0, 1, 2, 3, 4]


def test_persistent_failure_raises_with_what_got_in(aws, monkeypatch):
    flaky = FlakySQS(aws_clients.client("sqs"), {"1"}, times=10)
    monkeypatch.setattr("chalicelib.edge.enqueue.client", lambda name: flaky)
    with pytest.raises(EnqueueFailed) as info:
        send_messages(aws.queue_url, [msg(i) for i in range(3)])
    assert info.value.sent == {0, 2}
    assert sorted(m["i"] for m in drain_queue(aws.queue_url)) == [0, 2]


def test_missing_queue_raises(aws):
    with pytest.raises(EnqueueFailed):
        send_messages(aws.queue_url + "-missing", [msg(0)])


class MeetingSQS:
    """Each batch call waits until `parties` calls are in flight together: a sequential sender
    never gets past the first one (the barrier breaks, the batch fails)."""

    def __init__(self, real, parties):
        import threading

        self.real, self.barrier, self.calls = real, threading.Barrier(parties, timeout=10), 0

    def send_message_batch(self, QueueUrl, Entries):
        self.calls += 1
        self.barrier.wait()
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def test_batches_are_sent_concurrently(aws, monkeypatch):
    from chalicelib.edge import enqueue

    meeting = MeetingSQS(aws_clients.client("sqs"), parties=enqueue.CONCURRENT_BATCHES)
    monkeypatch.setattr("chalicelib.edge.enqueue.client", lambda name: meeting)
    send_messages(aws.queue_url, [msg(i) for i in range(10 * enqueue.CONCURRENT_BATCHES)])
    assert meeting.calls == enqueue.CONCURRENT_BATCHES
    assert sorted(m["i"] for m in drain_queue(aws.queue_url)) == list(range(10 * enqueue.CONCURRENT_BATCHES))
