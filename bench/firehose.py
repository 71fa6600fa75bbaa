"""6. A large Firehose delivery: 4,000 records, 4 MB, gzip, through the real handler on moto server.

Firehose gives an HTTP endpoint 3 minutes; the target here is 10 s for the whole answer
(decode, checks, 4,000 queue messages, idempotency record). Edge CPU per record is the
handler process's CPU time (moto runs in its own process) over the records.

It runs against a moto server of its own (bench/moto_linear_sqs.py): stock moto recounts
the whole queue on every SendMessage, so 4,000 messages into one queue take minutes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.events import BENCH_KEY
from bench.stack import (
    HOST,
    ROOT,
    Stack,
    aws_env,
    env_int,
    median,
    put_bench_key,
    quiet_stdout,
    reset_chalicelib,
    say,
)
from edgectl.devstack import free_port, wait_for_http
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


@contextlib.contextmanager
def linear_sqs_stack() -> Iterator[Stack]:
    """The stack's resources and the bench key on a moto server of this benchmark's own;
    the process environment points at it meanwhile."""
    import boto3

    from edgectl.resources import create_resources

    port = free_port(HOST)
    process = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "bench.moto_linear_sqs", "-H", HOST, "-p", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    saved = dict(os.environ)
    aws_url = f"http://{HOST}:{port}"
    stack = Stack(process, aws_url, None)  # type: ignore[arg-type]
    try:
        wait_for_http(f"{aws_url}/moto-api/", 30)
        os.environ.update(aws_env(aws_url))
        stack.names = create_resources(boto3.Session(region_name=os.environ["AWS_DEFAULT_REGION"]))
        os.environ.update(stack.names.environment())
        put_bench_key(stack)
        reset_chalicelib()
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        reset_chalicelib()


def run(_shared: Stack) -> dict[str, Any]:
    with linear_sqs_stack():
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
