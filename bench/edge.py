"""1. Warm edge request: the real handler in-process ÷ a bare botocore SendMessage of the same body."""

from __future__ import annotations

import time
from typing import Any

from bench.events import ingest_event, invoke_edge
from bench.stack import Stack, env_int, median, percentile, quiet_stdout, reset_chalicelib, say

TARGET = 1.10


def run(stack: Stack) -> dict[str, Any]:
    import botocore.session

    iterations = env_int("BENCH_EDGE_N", 1000)
    reset_chalicelib()
    from app import app

    event = ingest_event()
    with quiet_stdout():
        invoke_edge(app, event)  # warms the key cache and the clients
    sqs = botocore.session.get_session().create_client("sqs")
    queued = sqs.receive_message(QueueUrl=stack.names.queue_url, MaxNumberOfMessages=1)["Messages"][0]["Body"]
    sqs.send_message(QueueUrl=stack.names.queue_url, MessageBody=queued)
    say(f"warm edge: {iterations} interleaved pairs (edge request, bare SendMessage of its {len(queued)}-byte body)")
    edge_s: list[float] = []
    bare_s: list[float] = []
    with quiet_stdout():
        for _ in range(iterations):
            started = time.perf_counter()
            invoke_edge(app, event)
            edge_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            sqs.send_message(QueueUrl=stack.names.queue_url, MessageBody=queued)
            bare_s.append(time.perf_counter() - started)
    edge_ms, bare_ms = median(edge_s) * 1000, median(bare_s) * 1000
    return {
        "iterations": iterations,
        "message_bytes": len(queued),
        "edge_ms_median": round(edge_ms, 3),
        "edge_ms_p99": round(percentile(edge_s, 0.99) * 1000, 3),
        "bare_send_ms_median": round(bare_ms, 3),
        "overhead_ms": round(edge_ms - bare_ms, 3),
        "ratio": round(edge_ms / bare_ms, 3),
        "target": TARGET,
    }
