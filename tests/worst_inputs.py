"""Each door's worst accepted and worst refused request, for the memory bound (issue #24 point 2).

tests/functional/test_memory_bounds.py asserts the peak of each; `make bench` (bench/memory.py) prints it.
"Worst" is for memory: as much decoded data as the door's budget takes, in the shape that
costs most once parsed (many small values), or a refusal that can only be found by decoding.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.edge.bodies import MAX_DECODED_BYTES
from chalicelib.edge.doors.firehose import MAX_DECODED_BYTES as FIREHOSE_DECODED_BYTES
from tests.firehose_producer import Delivery, cloudwatch_logs_record

KEY = "lk_live_memory_bound_1"
MIB = 1024 * 1024


@dataclass(frozen=True)
class WorstCase:
    door: str
    name: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the edge answers


def sdk_accepted() -> WorstCase:
    """1,000 NDJSON lines (the count cap) of small numbers, just under 5 MiB decoded, gzip."""
    frame = len(b'{"message":"m","n":[0]}\n')
    zeros = 1 + (MAX_DECODED_BYTES // 1000 - frame) // 2
    line = json.dumps({"message": "m", "n": [0] * zeros}, separators=(",", ":")).encode()
    lines = b"\n".join([line] * 1000)
    assert MAX_DECODED_BYTES - 64 * 1024 < len(lines) <= MAX_DECODED_BYTES
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip", "X-Api-Key": KEY}
    return WorstCase(
        "sdk", "1,000 NDJSON lines, 5 MiB decoded", "/api/ingest/event", headers, gzip.compress(lines), 202
    )


def sdk_refused() -> WorstCase:
    """A gzip bomb: 64 KiB that would decode to 64 MiB."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "X-Api-Key": KEY}
    return WorstCase("sdk", "gzip bomb, 64 MiB decoded", "/api/ingest/event", headers, _bomb(64 * MIB), 413)


def otlp_accepted() -> WorstCase:
    """Protobuf spans just under 5 MiB decoded: as many small spans as fit (JSON grows ~3 times)."""
    from tests.functional.test_otlp_routes import spans_request

    per_span = len(spans_request(50_001).SerializeToString()) - len(spans_request(50_000).SerializeToString())
    count = (MAX_DECODED_BYTES - 4096) // per_span
    data = spans_request(count).SerializeToString()
    while len(data) > MAX_DECODED_BYTES:
        count -= (len(data) - MAX_DECODED_BYTES) // per_span + 1
        data = spans_request(count).SerializeToString()
    assert MAX_DECODED_BYTES - 64 * 1024 < len(data) <= MAX_DECODED_BYTES
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", "X-Api-Key": KEY}
    return WorstCase("otlp", f"{count:,} spans, 5 MiB protobuf", "/v1/traces", headers, gzip.compress(data), 200)


def otlp_refused() -> WorstCase:
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", "X-Api-Key": KEY}
    return WorstCase("otlp", "gzip bomb, 64 MiB decoded", "/v1/traces", headers, _bomb(64 * MIB), 413)


def firehose_accepted() -> WorstCase:
    """CloudWatch Logs records (gzip inside gzip) whose messages fill the 8 MiB budget."""
    record = cloudwatch_logs_record(["x" * 24] * 4000)
    decoded = len(gzip.decompress(record))
    count = (FIREHOSE_DECODED_BYTES - 512 * 1024) // decoded
    headers, body = Delivery([record] * count, KEY, gzip_body=True).request()
    return WorstCase(
        "firehose", f"{count} CloudWatch Logs records, {count * decoded / MIB:.1f} MiB decoded", "/api/firehose/log",
        headers, body, 200,
    )  # fmt: skip


def firehose_refused() -> WorstCase:
    """Issue #24's: 60 copies of a 17 KiB CloudWatch Logs record that decodes to 6 MiB, gzip body."""
    record = cloudwatch_logs_record(["x" * 65536] * 96)
    headers, body = Delivery([record] * 60, KEY, gzip_body=True).request()
    return WorstCase("firehose", "60 records of 6 MiB CloudWatch Logs", "/api/firehose/log", headers, body, 413)


def firehose_refused_plain() -> WorstCase:
    """9 MiB uncompressed: over the budget without any decompression."""
    records = [json.dumps({"message": "y" * 1000}).encode()] * 7200
    headers, body = Delivery(records, KEY).request()
    assert len(body) > 9 * MIB
    return WorstCase("firehose", "9 MiB uncompressed delivery", "/api/firehose/event", headers, body, 413)


class RecordingSQS:
    """SendMessageBatch that confirms every entry and keeps only the bytes it was sent."""

    def __init__(self) -> None:
        self.queued_bytes = 0
        self.messages = 0

    @classmethod
    def install(cls, monkeypatch: Any) -> RecordingSQS:
        sqs = cls()
        monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda name, **_: sqs)
        return sqs

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.queued_bytes += sum(len(entry["MessageBody"]) for entry in Entries)
        self.messages += len(Entries)
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}


WORST: tuple[Callable[[], WorstCase], ...] = (
    sdk_accepted,
    sdk_refused,
    otlp_accepted,
    otlp_refused,
    firehose_accepted,
    firehose_refused,
    firehose_refused_plain,
)


def _bomb(size: int) -> bytes:
    return gzip.compress(bytes(size), 9)
