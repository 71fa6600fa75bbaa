"""SQS batch operations, in batches of ten: the one send path, deletes, visibility, receive.

`send_messages` is how anything reaches a queue (the edge's events, `ship_logs`, the
forwarder's dead-letter and progress copies, `edgectl dlq redrive`). Its contract, once:

- it never raises for what SQS or the network did; the `SendReport` says which keys SQS
  confirmed (`sent`), which did not get in (`failed`) and, of those, which went out and got
  no answer (`unconfirmed`: a timeout after the request left, SQS may hold them);
- every try sends the same body (same event id: the backend stores an id once, so a send
  that may have landed can be repeated);
- without a `deadline` it makes one round (botocore's own retries apply); with one (the
  request's `Deadline`, runtime/deadline.py), it resends what did not get in until every
  message is in or no call fits in the time left, and stops at once on a refusal for good.
  Each SendMessageBatch is then one attempt whose connect and read timeouts come from the time
  left when it starts, so no call starts, or lasts, past the deadline.

The other operations return the keys of the entries that did NOT succeed, so the caller
leaves those messages where they are: a failed call is never mistaken for a done one.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as NotConnected

from chalicelib.runtime.aws import client
from chalicelib.runtime.container import per_container
from chalicelib.runtime.deadline import Deadline, OutOfTime
from chalicelib.runtime.observability import logger

BATCH = 10
MAX_BATCH_BYTES = 256 * 1024
# SendMessageBatch calls in flight at once: 1,000 events are 100 calls. One botocore client
# is thread-safe; its pool holds 25 connections.
CONCURRENT_BATCHES = 10
# Connect and read timeout of one SendMessageBatch under a deadline (less when the request's time
# is short: runtime/deadline.py). In-region calls take ~10 ms, across regions 70-250 ms.
CALL_SECONDS = 1.0
# Pause before resending what did not get in: doubles per round, never past the deadline.
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 0.4
# What SQS counts besides the body and the attribute names and values, per message.
ATTRIBUTE_OVERHEAD = 64

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Outgoing:
    """A message to send: the exact body, its (boto3-style) attributes, an optional delay (≤ 900 s)."""

    body: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    delay_seconds: int = 0

    def size(self) -> int:
        """Bytes SQS counts against the 256 KiB batch limit (body and attributes, with a margin)."""
        named = sum(len(name) + len(str(value.get("StringValue", ""))) for name, value in self.attributes.items())
        return len(self.body) + named + ATTRIBUTE_OVERHEAD

    def entry(self, entry_id: str) -> dict[str, Any]:
        return {
            "Id": entry_id,
            "MessageBody": self.body,
            **({"MessageAttributes": dict(self.attributes)} if self.attributes else {}),
            **({"DelaySeconds": self.delay_seconds} if self.delay_seconds else {}),
        }


@dataclass
class SendReport(Generic[Key]):
    """What a send did with each key: `failed` are not confirmed in SQS (`unconfirmed` of them
    may be there all the same); `reason` is an error name safe to log, never a body."""

    sent: set[Key] = field(default_factory=set)
    failed: set[Key] = field(default_factory=set)
    unconfirmed: set[Key] = field(default_factory=set)
    reason: str = ""


@dataclass
class _Round(Generic[Key]):
    """What one round of batch calls did with each key."""

    sent: set[Key] = field(default_factory=set)
    retry: set[Key] = field(default_factory=set)  # not in SQS; worth another try
    unconfirmed: set[Key] = field(default_factory=set)  # no answer: maybe in SQS; resend the same body
    permanent: set[Key] = field(default_factory=set)  # SQS refused them for good (sender fault)
    reason: str = ""

    def add(self, other: _Round[Key]) -> None:
        self.sent |= other.sent
        self.retry |= other.retry
        self.unconfirmed |= other.unconfirmed
        self.permanent |= other.permanent
        self.reason = telling(other.reason, self.reason)


@per_container
def _senders() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=CONCURRENT_BATCHES, thread_name_prefix="sqs-send")


def send_messages(
    queue_url: str,
    messages: Mapping[Key, Outgoing],
    deadline: Deadline | None = None,
    skip: frozenset[Key] = frozenset(),
    max_rounds: int | None = None,
    region: str | None = None,
) -> SendReport[Key]:
    """Put every message (but the keys in `skip`, already there) in the queue; see the module docstring.

    `max_rounds` stops resending sooner than the deadline (the edge spills the rest elsewhere);
    `region` is the queue's when it is not the container's own (the edge's fallback queue)."""
    report: SendReport[Key] = SendReport(sent=set(skip))
    pending = [key for key in messages if key not in skip]
    if not pending:
        return report
    target = _Target(queue_url, region, deadline)
    # Entry ids are the messages' positions in the whole send: the same id on every try.
    ids = {key: str(position) for position, key in enumerate(messages)}
    backoff = FIRST_BACKOFF_SECONDS
    rounds = 0
    while True:
        outcome = _send_round(target, messages, ids, pending)
        rounds += 1
        report.sent |= outcome.sent
        report.unconfirmed = (report.unconfirmed | outcome.unconfirmed) - report.sent
        pending = [key for key in messages if key in outcome.retry or key in outcome.unconfirmed]
        report.reason = telling(outcome.reason, report.reason)
        if not pending and not outcome.permanent:
            report.failed = set()
            return report
        out_of_rounds = max_rounds is not None and rounds >= max_rounds
        if deadline is None or outcome.permanent or out_of_rounds or not deadline.sooner(backoff).allows(CALL_SECONDS):
            report.failed = set(pending) | outcome.permanent
            return report
        time.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


@dataclass(frozen=True)
class _Target:
    """Where a send goes, and by when."""

    queue_url: str
    region: str | None
    deadline: Deadline | None

    def sqs(self) -> Any:
        """The client for the next SendMessageBatch. Under a deadline: one attempt (the send's loop
        is the retry; botocore's would overrun the deadline) whose connect and read timeouts fit
        the time left now (`Deadline.call_timeout`), or OutOfTime: no call starts past it."""
        if self.deadline is None:
            return client("sqs", region=self.region)
        timeout = self.deadline.call_timeout(CALL_SECONDS)
        return client("sqs", region=self.region, single_attempt=True, timeout_seconds=timeout)


def plan_batches(messages: Mapping[Key, Outgoing], keys: list[Key]) -> list[list[Key]]:
    """Group keys into SendMessageBatch calls within the count and byte limits."""
    batches: list[list[Key]] = []
    current: list[Key] = []
    size = 0
    for key in keys:
        item = messages[key].size()
        if current and (len(current) == BATCH or size + item > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(key)
        size += item
    if current:
        batches.append(current)
    return batches


def _send_round(
    target: _Target, messages: Mapping[Key, Outgoing], ids: Mapping[Key, str], pending: list[Key]
) -> _Round[Key]:
    batches = plan_batches(messages, pending)
    if len(batches) == 1:
        results = [_send_batch(target, messages, ids, batches[0])]
    else:
        results = list(_senders().map(lambda batch: _send_batch(target, messages, ids, batch), batches))
    total: _Round[Key] = _Round()
    for result in results:
        total.add(result)
    return total


def _send_batch(
    target: _Target, messages: Mapping[Key, Outgoing], ids: Mapping[Key, str], batch: list[Key]
) -> _Round[Key]:
    by_id = {ids[key]: key for key in batch}
    entries = [messages[key].entry(entry_id) for entry_id, key in by_id.items()]
    try:
        sqs = target.sqs()
    except OutOfTime as exc:  # no call fits in what is left of the request: not sent
        return _Round(retry=set(batch), reason=reason(exc))
    except Exception as exc:  # credentials, configuration: nothing was sent
        return _Round(permanent=set(batch), reason=reason(exc))
    try:
        response = sqs.send_message_batch(QueueUrl=target.queue_url, Entries=entries)
    except ClientError as exc:  # SQS answered: nothing of the batch is in
        refused: _Round[Key] = _Round(reason=reason(exc))
        (refused.permanent if _sender_fault(exc) else refused.retry).update(batch)
        return refused
    except NotConnected as exc:  # the request never reached SQS
        return _Round(retry=set(batch), reason=reason(exc))
    except HTTPClientError as exc:  # read timeout, connection closed: sent, answer lost; SQS may hold it
        return _Round(unconfirmed=set(batch), reason=reason(exc))
    except Exception as exc:  # credentials, parameters: no retry within this call will help
        return _Round(permanent=set(batch), reason=reason(exc))
    outcome: _Round[Key] = _Round(sent={by_id[entry["Id"]] for entry in response.get("Successful", [])})
    for entry in response.get("Failed", []):
        (outcome.permanent if entry.get("SenderFault") else outcome.retry).add(by_id[entry["Id"]])
        outcome.reason = entry.get("Code") or "batch entry failed"
    return outcome


def telling(newer: str, older: str) -> str:
    """The reason worth reporting: what SQS or the network did, over running out of time after it."""
    return older if newer == OutOfTime.__name__ and older else newer or older


def _sender_fault(exc: ClientError) -> bool:
    """A 4xx other than throttling: the same request would be refused again."""
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 500
    return 400 <= status < 500 and status != 429 and "Throttl" not in reason(exc)


def reason(exc: Exception) -> str:
    """An error name safe to log, never the message body. Botocore's timeouts and closed
    connections have no `response` (it is None), service errors carry the code in it."""
    response = getattr(exc, "response", None) or {}
    return (response.get("Error") or {}).get("Code") or type(exc).__name__


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), BATCH):
        yield keys[start : start + BATCH]


def _batch_call(operation: str, queue_url: str, entries: dict[str, dict[str, Any]]) -> set[str]:
    """Run a *Batch call per ten entries; SQS batch ids are positions, mapped back to our keys."""
    failed: set[str] = set()
    sqs = client("sqs")
    for keys in _chunks(list(entries)):
        batch = [{"Id": str(i), **entries[key]} for i, key in enumerate(keys)]
        try:
            answer = getattr(sqs, operation)(QueueUrl=queue_url, Entries=batch)
        except (BotoCoreError, ClientError) as exc:
            logger("forwarder").warning("sqs batch call failed", extra={"operation": operation, "error": str(exc)})
            failed.update(keys)
            continue
        for error in answer.get("Failed", []):
            failed.add(keys[int(error["Id"])])
            logger("forwarder").warning(
                "sqs batch entry failed", extra={"operation": operation, "code": error.get("Code")}
            )
    return failed


def delete_messages(queue_url: str, receipt_handles: Mapping[str, str]) -> set[str]:
    """Delete by receipt handle; keys are the caller's (message ids)."""
    entries = {key: {"ReceiptHandle": handle} for key, handle in receipt_handles.items()}
    return _batch_call("delete_message_batch", queue_url, entries)


def change_visibility(queue_url: str, timeouts: Mapping[str, tuple[str, int]]) -> set[str]:
    """Hide each message (key → (receipt handle, seconds)) until its next try."""
    entries = {
        key: {"ReceiptHandle": handle, "VisibilityTimeout": seconds} for key, (handle, seconds) in timeouts.items()
    }
    return _batch_call("change_message_visibility_batch", queue_url, entries)


def receive(queue_url: str, max_messages: int, visibility: int, wait: int = 1) -> list[dict[str, Any]]:
    """Up to ten messages with all attributes, hidden for `visibility` seconds.

    Long polling (wait ≥ 1) asks every SQS server, so an empty answer means empty.
    """
    messages: list[dict[str, Any]] = (
        client("sqs")
        .receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=max(1, min(BATCH, max_messages)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        )
        .get("Messages", [])
    )
    return messages


def depth(queue_url: str, region: str | None = None) -> tuple[int, int]:
    """(visible, in flight) message counts, approximate as SQS reports them."""
    attributes = client("sqs", region).get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])
