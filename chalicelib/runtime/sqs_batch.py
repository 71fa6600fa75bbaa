"""Small SQS operations for the forwarder and the DLQ commands, in batches of ten.

Each returns the keys of the entries that did NOT succeed, so the caller can leave
those messages where they are: a failed call is never mistaken for a done one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.runtime.aws import client
from chalicelib.runtime.observability import logger

BATCH = 10


@dataclass(frozen=True)
class Outgoing:
    """A message to send: the exact body, its (boto3-style) attributes, an optional delay (≤ 900 s)."""

    body: str
    attributes: Mapping[str, Any]
    delay_seconds: int = 0


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


def send_messages(queue_url: str, messages: Mapping[str, Outgoing]) -> set[str]:
    """Send bodies unchanged with their attributes (to the DLQ, or back to the queue)."""
    entries = {
        key: {
            "MessageBody": m.body,
            **({"MessageAttributes": dict(m.attributes)} if m.attributes else {}),
            **({"DelaySeconds": m.delay_seconds} if m.delay_seconds else {}),
        }
        for key, m in messages.items()
    }
    return _batch_call("send_message_batch", queue_url, entries)


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
