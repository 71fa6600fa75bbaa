"""Durable enqueue to SQS: one SendMessage, or batches split by count and bytes, sent concurrently.

A call returns only when every message is in SQS; otherwise it raises
`EnqueueFailed` saying which ones did get in, so a retry can skip them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.runtime.aws import client

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
RETRIES = 2
# SendMessageBatch calls in flight at once (the SQS client pools 25 connections).
CONCURRENT_BATCHES = 8


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
    """Some messages are not in SQS. `sent` holds the indices that are."""

    def __init__(self, reason: str, sent: set[int]):
        super().__init__(reason)
        self.sent = sent


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


def send_messages(queue_url: str, messages: list[OutgoingMessage], skip: frozenset[int] = frozenset()) -> None:
    """Put every message (except indices in `skip`) in the queue, or raise EnqueueFailed."""
    sqs = client("sqs")
    pending = [i for i in range(len(messages)) if i not in skip]
    sent: set[int] = set(skip)
    if len(pending) == 1:
        message = messages[pending[0]]
        try:
            sqs.send_message(QueueUrl=queue_url, MessageBody=message.body, MessageAttributes=message.attributes())
        except Exception as exc:
            raise EnqueueFailed(_reason(exc), sent) from exc
        return
    last_error = "unknown"
    for _attempt in range(RETRIES + 1):
        failed: list[int] = []
        for ok, refused, error in _send_batches(sqs, queue_url, messages, plan_batches(messages, pending)):
            sent.update(ok)
            failed.extend(refused)
            last_error = error or last_error
        if not failed:
            return
        pending = sorted(failed)
    raise EnqueueFailed(last_error, sent)


def _send_batches(
    sqs: Any, queue_url: str, messages: list[OutgoingMessage], batches: list[list[int]]
) -> list[tuple[list[int], list[int], str | None]]:
    """Every SendMessageBatch call, up to CONCURRENT_BATCHES at a time (a 10,000-event
    Firehose delivery is 1,000 calls); one result per batch: (sent, failed, error)."""
    if len(batches) == 1:
        return [_send_batch(sqs, queue_url, messages, batches[0])]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(CONCURRENT_BATCHES, len(batches))) as pool:
        return list(pool.map(lambda batch: _send_batch(sqs, queue_url, messages, batch), batches))


def _send_batch(
    sqs: Any, queue_url: str, messages: list[OutgoingMessage], batch: list[int]
) -> tuple[list[int], list[int], str | None]:
    try:
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": messages[i].body, "MessageAttributes": messages[i].attributes()}
                for i in batch
            ],
        )
    except Exception as exc:
        return [], batch, _reason(exc)
    refused = response.get("Failed", [])
    error = (refused[-1].get("Code") or "batch entry failed") if refused else None
    return [int(entry["Id"]) for entry in response.get("Successful", [])], [int(e["Id"]) for e in refused], error


def _reason(exc: Exception) -> str:
    """An error name safe to log: never the message body."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code or type(exc).__name__
