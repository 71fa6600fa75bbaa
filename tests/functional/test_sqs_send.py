import json

from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from chalicelib.runtime import aws as aws_clients
from chalicelib.runtime import sqs_batch
from chalicelib.runtime.deadline import Deadline
from chalicelib.runtime.sqs_batch import Outgoing, SendReport, plan_batches
from tests.conftest import drain_queue


def soon(seconds: float = 5.0) -> Deadline:
    """A send deadline `seconds` from now."""
    return Deadline.after(seconds)


ATTRIBUTES = {
    "signal": {"DataType": "String", "StringValue": "log"},
    "project_id": {"DataType": "String", "StringValue": "42"},
}


def msg(i: int, size: int = 10) -> Outgoing:
    return Outgoing(json.dumps({"i": i, "pad": "x" * size}), ATTRIBUTES)


def send_messages(queue_url: str, messages: list[Outgoing], deadline: Deadline) -> SendReport[int]:
    """The edge's way: keyed by position, with a deadline."""
    return sqs_batch.send_messages(queue_url, dict(enumerate(messages)), deadline)


def test_batches_respect_count_and_bytes():
    messages = dict(enumerate(msg(i) for i in range(25)))
    assert [len(b) for b in plan_batches(messages, list(range(25)))] == [10, 10, 5]
    big = dict(enumerate(msg(i, 100 * 1024) for i in range(5)))
    batches = plan_batches(big, list(range(5)))
    assert all(sum(big[i].size() for i in b) <= 256 * 1024 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_send_messages_puts_all_with_attributes(aws):
    assert send_messages(aws.queue_url, [msg(i) for i in range(23)], soon()).sent == set(range(23))
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
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: flaky)
    send_messages(aws.queue_url, [msg(i) for i in range(5)], soon())
    assert flaky.calls == [["0", "1", "2", "3", "4"], ["3"]]
    assert sorted(m["i"] for m in drain_queue(aws.queue_url)) == [0, 1, 2, 3, 4]


def test_persistent_failure_reports_what_got_in(aws, monkeypatch):
    flaky = FlakySQS(aws_clients.client("sqs"), {"1"}, times=10)
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: flaky)
    report = send_messages(aws.queue_url, [msg(i) for i in range(3)], soon(0.5))
    assert (report.sent, report.failed, report.reason) == ({0, 2}, {1}, "InternalError")
    assert sorted(m["i"] for m in drain_queue(aws.queue_url)) == [0, 2]


def test_missing_queue_fails_every_message_at_once(aws, monkeypatch):
    missing = aws.queue_url + "-missing"
    # The edge's configured queue is gone (its policy names the configured queue: another is AccessDenied).
    monkeypatch.setenv("LOOKOUT_EDGE_QUEUE_URL", missing)
    report = send_messages(missing, [msg(0)], soon())
    assert (report.sent, report.failed, report.unconfirmed) == (set(), {0}, set())


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
    meeting = MeetingSQS(aws_clients.client("sqs"), parties=sqs_batch.CONCURRENT_BATCHES)
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: meeting)
    send_messages(aws.queue_url, [msg(i) for i in range(10 * sqs_batch.CONCURRENT_BATCHES)], soon())
    assert meeting.calls == sqs_batch.CONCURRENT_BATCHES
    assert sorted(m["i"] for m in drain_queue(aws.queue_url)) == list(range(10 * sqs_batch.CONCURRENT_BATCHES))


class LostAnswersSQS:
    """Wraps the real client. Batches holding an index in `lose` reach SQS, but the answer is lost
    (botocore's ReadTimeoutError or ConnectionClosedError: `response` is None) `times` times."""

    def __init__(self, real, lose, error, times):
        self.real, self.lose, self.error, self.times, self.calls = real, set(lose), error, times, []

    def send_message_batch(self, QueueUrl, Entries):
        ids = [e["Id"] for e in Entries]
        self.calls.append(ids)
        answer = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        if self.times > 0 and self.lose & set(ids):
            self.times -= 1
            raise self.error
        return answer


READ_TIMEOUT = ReadTimeoutError(endpoint_url="http://sqs.local")
CLOSED = ConnectionClosedError(endpoint_url="http://sqs.local")


def test_a_lost_answer_is_resent_with_the_same_body(aws, monkeypatch):
    """#15 items 3 and 4: a timeout has no `response`; the batch is resent, same bodies (same event
    ids: the backend stores an id once), and the call succeeds within its deadline."""
    lossy = LostAnswersSQS(aws_clients.client("sqs"), {"0"}, READ_TIMEOUT, times=1)
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: lossy)
    messages = [msg(i) for i in range(3)]
    assert send_messages(aws.queue_url, messages, soon()).failed == set()
    assert lossy.calls == [["0", "1", "2"], ["0", "1", "2"]]
    queued = drain_queue(aws.queue_url)
    assert sorted(m["i"] for m in queued) == [0, 0, 1, 1, 2, 2]  # twice, byte for byte the same message
    assert {json.dumps({k: v for k, v in m.items() if k != "_attributes"}) for m in queued} == {
        json.dumps(json.loads(m.body)) for m in messages
    }


def test_an_unanswered_batch_keeps_the_record_of_what_was_sent(aws, monkeypatch):
    lossy = LostAnswersSQS(aws_clients.client("sqs"), {"12"}, CLOSED, times=1000)
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: lossy)
    report = send_messages(aws.queue_url, [msg(i) for i in range(15)], soon(0.5))
    assert report.sent == set(range(10))
    assert report.unconfirmed == report.failed == set(range(10, 15))  # SQS may hold them: the 503 must say so
    assert report.reason == "ConnectionClosedError"


class RefusingSQS:
    """Answers every batch with a sender-fault error, as SQS does for a message it will never take."""

    def __init__(self):
        self.calls = 0

    def send_message_batch(self, QueueUrl, Entries):
        self.calls += 1
        error = {"Error": {"Code": "InvalidMessageContents"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        raise ClientError(error, "SendMessageBatch")


def test_a_batch_sqs_refuses_for_good_is_not_resent(aws, monkeypatch):
    refusing = RefusingSQS()
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: refusing)
    report = send_messages(aws.queue_url, [msg(0)], soon(30))
    assert (report.reason, report.sent, report.failed, report.unconfirmed) == (
        "InvalidMessageContents",
        set(),
        {0},
        set(),
    )
    assert refusing.calls == 1


def test_a_stalled_send_is_tried_once_per_round_so_the_deadline_holds(aws, silent_aws):
    """The enqueue loop is the retry, bounded by the request's deadline: botocore's own retry
    would repeat a stalled call (connect + read timeout) once more past it."""
    # 0.35 s: room for one call of 0.1 s timeouts (runtime/deadline), not for a second after it.
    report = send_messages(aws.queue_url, [msg(0)], soon(0.35))
    assert report.unconfirmed == report.failed == {0}  # sent, no answer: SQS may hold it
    assert len(silent_aws) == 1
    # Past the deadline no call starts at all.
    assert send_messages(aws.queue_url, [msg(1)], soon(0.1)).failed == {0}
    assert len(silent_aws) == 1
