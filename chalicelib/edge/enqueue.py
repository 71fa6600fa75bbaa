"""Durable enqueue to SQS: SendMessageBatch calls split by count and bytes, sent concurrently.

A call returns only when every message is in SQS. Until the caller's deadline it
retries what did not get in, always with the same message body (same event id: the
backend stores an event id once, so a send that may have landed can be repeated).
Otherwise it raises `EnqueueFailed` saying which messages SQS confirmed, and which
others may have landed anyway (a timeout after the request left: SQS may hold it).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as NotConnected

from chalicelib.runtime.aws import client
from chalicelib.runtime.container import per_container

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
# SendMessageBatch calls in flight at once: 1,000 events are 100 calls. One botocore client
# is thread-safe; its pool holds 25 connections.
CONCURRENT_BATCHES = 10
# Pause before resending what did not get in: doubles per round, never past the deadline.
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 0.4


@dataclass(frozen=True)
class OutgoingMessage:
    body: str
    signal: str
    project_id: str

    def size(self) -> int:
        return len(self.body) + len(self.signal) + len(self.project_id) + 64

    def attributes(self) -> dict[str, dict[str, str]]:
        return {
            "signal": {"DataType": "String", "StringValue": self.signal},
            "project_id": {"DataType": "String", "StringValue": self.project_id},
        }


class EnqueueFailed(Exception):
    """Some messages are not confirmed in SQS.

    `sent`: the indices SQS confirmed. `unconfirmed`: indices whose last send ended
    without an answer (timeout, connection closed): SQS may hold them all the same.
    """

    def __init__(self, reason: str, sent: set[int], unconfirmed: set[int] | None = None):
        super().__init__(reason)
        self.sent = sent
        self.unconfirmed = unconfirmed or set()


def plan_batches(messages: list[OutgoingMessage], indices: list[int]) -> list[list[int]]:
    """Group message indices into SendMessageBatch calls within the count and byte limits."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index in indices:
        item = messages[index].size()
        if current and (len(current) == MAX_BATCH_ENTRIES or size + item > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(index)
        size += item
    if current:
        batches.append(current)
    return batches


@dataclass
class _Round:
    """What one round of batch calls did with each index."""

    sent: set[int] = field(default_factory=set)
    retry: set[int] = field(default_factory=set)  # not in SQS; worth another try
    unconfirmed: set[int] = field(default_factory=set)  # no answer: maybe in SQS; resend the same body
    permanent: set[int] = field(default_factory=set)  # SQS refused them for good (sender fault)
    reason: str = ""


@per_container
def _senders() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=CONCURRENT_BATCHES, thread_name_prefix="enqueue")


def send_messages(
    queue_url: str, messages: list[OutgoingMessage], deadline: float, skip: frozenset[int] = frozenset()
) -> None:
    """Put every message (except indices in `skip`) in the queue by `deadline` (time.monotonic()),
    or raise EnqueueFailed. What did not get in is resent, same body, while time is left."""
    sqs = client("sqs", single_attempt=True)  # this loop is the retry, bounded by the deadline
    pending = sorted(set(range(len(messages))) - skip)
    sent: set[int] = set(skip)
    unconfirmed: set[int] = set()
    backoff = FIRST_BACKOFF_SECONDS
    while True:
        outcome = _send_round(sqs, queue_url, messages, pending)
        sent |= outcome.sent
        unconfirmed = (unconfirmed | outcome.unconfirmed) - sent
        pending = sorted(outcome.retry | outcome.unconfirmed)
        if not pending and not outcome.permanent:
            return
        if outcome.permanent or time.monotonic() + backoff >= deadline:
            raise EnqueueFailed(outcome.reason, sent, unconfirmed)
        time.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def _send_round(sqs: Any, queue_url: str, messages: list[OutgoingMessage], pending: list[int]) -> _Round:
    batches = plan_batches(messages, pending)
    if len(batches) == 1:
        results = [_send_batch(sqs, queue_url, messages, batches[0])]
    else:
        results = list(_senders().map(lambda batch: _send_batch(sqs, queue_url, messages, batch), batches))
    total = _Round()
    for result in results:
        total.sent |= result.sent
        total.retry |= result.retry
        total.unconfirmed |= result.unconfirmed
        total.permanent |= result.permanent
        total.reason = result.reason or total.reason
    return total


def _send_batch(sqs: Any, queue_url: str, messages: list[OutgoingMessage], batch: list[int]) -> _Round:
    entries = [
        {"Id": str(i), "MessageBody": messages[i].body, "MessageAttributes": messages[i].attributes()} for i in batch
    ]
    try:
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except ClientError as exc:  # SQS answered: nothing of the batch is in
        code = reason(exc)
        refused = _Round(reason=code)
        if _sender_fault(exc):
            refused.permanent.update(batch)
        else:
            refused.retry.update(batch)
        return refused
    except NotConnected as exc:  # the request never reached SQS
        return _Round(retry=set(batch), reason=reason(exc))
    except HTTPClientError as exc:  # read timeout, connection closed: sent, answer lost; SQS may hold it
        return _Round(unconfirmed=set(batch), reason=reason(exc))
    except Exception as exc:  # credentials, parameters: no retry within this request will help
        return _Round(permanent=set(batch), reason=reason(exc))
    outcome = _Round(sent={int(entry["Id"]) for entry in response.get("Successful", [])})
    for entry in response.get("Failed", []):
        target = outcome.permanent if entry.get("SenderFault") else outcome.retry
        target.add(int(entry["Id"]))
        outcome.reason = entry.get("Code") or "batch entry failed"
    return outcome


def _sender_fault(exc: ClientError) -> bool:
    """A 4xx other than throttling: the same request would be refused again."""
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 500
    return 400 <= status < 500 and status != 429 and "Throttl" not in reason(exc)


def reason(exc: Exception) -> str:
    """An error name safe to log, never the message body. Botocore's timeouts and closed
    connections have no `response` (it is None), service errors carry the code in it."""
    response = getattr(exc, "response", None) or {}
    return (response.get("Error") or {}).get("Code") or type(exc).__name__
