"""`python -m bench.moto_linear_sqs -H HOST -p PORT`: moto server whose SendMessage stays O(1).

moto 5 reads `queue.attributes.get("ContentBasedDeduplication")` on every SendMessage, and
that property recounts every message of the queue (delayed, not visible) each time: 4,000
messages into one queue cost ~16 million such checks, minutes that real SQS does not spend.
Here the lookup reads the one flag it asks for; every other attribute read is moto's own.
The Firehose bench runs its delivery against this server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

from moto.sqs.models import Queue

_full_attributes = Queue.attributes.fget
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


def main() -> None:
    Queue.attributes = property(LazyAttributes)  # type: ignore[method-assign,assignment]
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
