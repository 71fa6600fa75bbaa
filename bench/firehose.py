"""6. A large Firehose delivery: 4,000 records, 4 MB, gzip, through the real handler on moto server.

Firehose gives an HTTP endpoint 3 minutes; the target here is 10 s for the whole answer
(decode, checks, 4,000 queue messages, idempotency record). Edge CPU per record is the
handler process's CPU time (moto runs in its own process) over the records.

It runs against a moto server of its own, with an empty queue (edgectl/moto_linear_sqs.py, as
every section: stock moto recounts the whole queue on every SendMessage, so 4,000 messages
into one queue take minutes there).
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.events import BENCH_KEY
from bench.stack import (
    Stack,
    env_int,
    median,
    own_stack,
    quiet_stdout,
    say,
)
from edgectl.lambda_shim import api_gateway_event

TARGET_SECONDS = 10.0
RECORD_BYTES = 1000


def record(number: int) -> bytes:
    """A ~1 KB JSON event record, as a producer would PutRecordBatch it."""
    doc = {"name": "order.shipped", "n": number, "entries": [{"sku": "A-1", "qty": 1}], "pad": ""}
    doc["pad"] = "x" * (RECORD_BYTES - len(json.dumps(doc)))
    return json.dumps(doc).encode()


def delivery_event(records: list[bytes]) -> tuple[dict[str, Any], int]:
    """The API Gateway event of one gzip delivery built as the spec says; and its body size."""
    from tests.firehose_producer import Delivery

    headers, body = Delivery(records, BENCH_KEY, gzip_body=True).request()
    event = api_gateway_event("/api/firehose/event", body, headers, base64_body=True, resource="/api/firehose/{signal}")
    return event, len(body)


def run(_shared: Stack) -> dict[str, Any]:
    with own_stack():
        return _measure()


def _measure() -> dict[str, Any]:
    count = env_int("BENCH_FIREHOSE_RECORDS", 4000)
    rounds = env_int("BENCH_FIREHOSE_ROUNDS", 3)
    records = [record(i) for i in range(count)]
    from app import app

    with quiet_stdout():
        warm, _ = delivery_event(records[:10])
        _check(app(warm, None))
    wall: list[float] = []
    cpu: list[float] = []
    gzip_bytes = 0
    say(f"firehose: {rounds} deliveries of {count} records of {RECORD_BYTES} bytes, gzip")
    for _ in range(rounds):
        event, gzip_bytes = delivery_event(records)
        with quiet_stdout():
            started, started_cpu = time.perf_counter(), time.process_time()
            _check(app(event, None))
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    seconds = median(wall)
    return {
        "records": count,
        "record_bytes": RECORD_BYTES,
        "raw_megabytes": round(count * RECORD_BYTES / 1e6, 2),
        "gzip_body_bytes": gzip_bytes,
        "seconds_median": round(seconds, 3),
        "seconds_max": round(max(wall), 3),
        "edge_cpu_us_per_record": round(median(cpu) / count * 1e6, 1),
        "target_seconds": TARGET_SECONDS,
    }


def _check(response: dict[str, Any]) -> None:
    if response["statusCode"] != 200:
        raise RuntimeError(f"edge answered {response['statusCode']}: {response['body'][:300]}")
