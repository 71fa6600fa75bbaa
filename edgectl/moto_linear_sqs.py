"""moto's SQS without its quadratic costs, for the local stack and the bench.

`python -m edgectl.moto_linear_sqs -H HOST -p PORT` serves moto with `install()` applied; the
local stack's `aws` piece (edgectl.local_aws) applies it too.

- SendMessage: moto 5 reads `queue.attributes.get("ContentBasedDeduplication")` on every send,
  and that property recounts every message of the queue (delayed, not visible) each time:
  4,000 messages into one queue cost ~16 million such checks, minutes that real SQS does not
  spend. Here the lookup reads the one flag it asks for; every other attribute read is moto's own.
- DeleteMessageBatch: moto deletes entry by entry, each scanning the whole queue twice (and
  building a list of receipt handles per message per scan): a forwarder draining 10,000
  messages in batches of 10 spent minutes in it. Here one scan per batch, same answers.
- ReceiveMessage: for each message it returns, moto reads the queue's retention period through
  the whole attribute recount, and every visibility check builds two datetimes: ~7 s per
  receive with 2,000 messages queued on a loaded machine. Here the retention period is read
  directly and the clock once per check (the same millisecond clock, without datetimes).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from moto.sqs.models import Message, Queue, SQSBackend

# The property's getter (the property object itself: mypy reads `Queue.attributes` as the getter).
_full_attributes = vars(Queue)["attributes"].fget
_FLAG = "ContentBasedDeduplication"


class LazyAttributes(Mapping):
    """`Queue.attributes`, computed whole only when more than the deduplication flag is read."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._all: dict[str, Any] | None = None

    def _whole(self) -> dict[str, Any]:
        if self._all is None:
            self._all = _full_attributes(self._queue)
        return self._all

    def get(self, key: str, default: Any = None) -> Any:
        if key == _FLAG:  # moto lists it for FIFO queues only, as "true"/"false"
            if not self._queue.fifo_queue:
                return default
            return str(bool(getattr(self._queue, "content_based_deduplication", False))).lower()
        return self._whole().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._whole()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())


def delete_message_batch(
    self: SQSBackend, queue_name: str, receipts: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, str]]]:
    """moto's DeleteMessageBatch answers (a handle already deleted succeeds, an unknown one is
    ReceiptHandleIsInvalid), with one scan of the queue for the whole batch."""
    queue = self.get_queue(queue_name)
    wanted = {entry["ReceiptHandle"] for entry in receipts} - queue.deleted_messages
    found: set[str | None] = set()
    kept = []
    for message in queue._messages:
        handles = {message.receipt_handle, *message._old_receipt_handles}
        if handles & wanted:
            found |= handles & wanted
            queue.pending_messages.discard(message)
            queue.deleted_messages.update(handle for handle in handles if handle)
        else:
            kept.append(message)
    queue._messages = kept
    success, errors = [], []
    for entry in receipts:
        handle = entry["ReceiptHandle"]
        if handle in found or handle in queue.deleted_messages:
            success.append(entry["Id"])
        else:
            text = f'The input receipt handle "{handle}" is not a valid receipt handle.'
            errors.append({"Id": entry["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid", "Message": text})
    return success, errors


def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
    """moto's retention check, reading the one attribute it needs."""
    # moto sets each queue attribute with setattr (undeclared), and a stored message's sent_timestamp.
    retention = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
    return retention + message.sent_timestamp / 1000 > time.time()  # type: ignore[operator]


def install() -> None:
    """Patch moto's SQS in this process (before its server handles a request)."""
    Queue.attributes = property(LazyAttributes)  # type: ignore[method-assign,assignment]
    SQSBackend.delete_message_batch = delete_message_batch  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
    Message.visible = property(lambda message: time.time() * 1000 > message.visible_at)  # type: ignore[method-assign,assignment]
    Message.delayed = property(lambda message: time.time() * 1000 < message.delayed_until)  # type: ignore[method-assign,assignment]


def main() -> None:
    install()
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
