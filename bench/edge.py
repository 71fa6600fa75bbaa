"""1. Warm edge request: the real handler in-process ÷ a bare botocore SendMessage of the same body.

Also 1,000 NDJSON lines in one request (the per-request cap): the time to the 202, which the
PHP SDK waits for 5 s at most, beside 100 bare SendMessageBatch calls of the same bodies one
after the other (what the edge did before it sent batches concurrently).
"""

from __future__ import annotations

import time
from typing import Any

from bench.events import ingest_event, invoke_edge, ndjson_event
from bench.stack import Stack, env_int, median, own_stack, percentile, quiet_stdout, reset_chalicelib, say

TARGET = 1.10
NDJSON_LINES = 1000
# Well inside the PHP SDK's 5 s, on a warm container.
NDJSON_TARGET_MS = 1000


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
    edge_cpu_s: list[float] = []
    bare_s: list[float] = []
    bare_cpu_s: list[float] = []
    with quiet_stdout():
        for _ in range(iterations):
            started, cpu_started = time.perf_counter(), time.thread_time()
            invoke_edge(app, event)  # one message: sent from this thread
            edge_s.append(time.perf_counter() - started)
            edge_cpu_s.append(time.thread_time() - cpu_started)
            started, cpu_started = time.perf_counter(), time.thread_time()
            sqs.send_message(QueueUrl=stack.names.queue_url, MessageBody=queued)
            bare_s.append(time.perf_counter() - started)
            bare_cpu_s.append(time.thread_time() - cpu_started)
    edge_ms, bare_ms = median(edge_s) * 1000, median(bare_s) * 1000
    ndjson = ndjson_request(env_int("BENCH_NDJSON_N", 20))
    return {
        "ndjson": ndjson,
        "iterations": iterations,
        "message_bytes": len(queued),
        "edge_ms_median": round(edge_ms, 3),
        "edge_ms_p99": round(percentile(edge_s, 0.99) * 1000, 3),
        # The handler's own CPU, botocore's signing and serializing included: what Lambda's
        # share of a vCPU (memory / 1,769 MB) stretches (edgectl cost).
        "edge_cpu_ms_median": round(median(edge_cpu_s) * 1000, 3),
        "bare_send_cpu_ms_median": round(median(bare_cpu_s) * 1000, 3),
        "bare_send_ms_median": round(bare_ms, 3),
        "overhead_ms": round(edge_ms - bare_ms, 3),
        "ratio": round(edge_ms / bare_ms, 3),
        "target": TARGET,
    }


def ndjson_request(iterations: int) -> dict[str, Any]:
    """NDJSON_LINES events in one request to its 202, and the same count sent batch after batch.

    On a moto server of its own, so the queue starts empty.
    """
    import botocore.session

    with own_stack() as stack:
        from app import app

        event = ndjson_event(NDJSON_LINES)
        sqs = botocore.session.get_session().create_client("sqs")
        with quiet_stdout():
            invoke_edge(app, event)  # warms the key cache, the clients and the sender threads
        queued = sqs.receive_message(QueueUrl=stack.names.queue_url, MaxNumberOfMessages=1)["Messages"][0]["Body"]
        entries = [{"Id": str(i), "MessageBody": queued} for i in range(10)]
        say(f"NDJSON: {iterations} requests of {NDJSON_LINES} lines, and {NDJSON_LINES // 10} sequential batches each")
        edge_s: list[float] = []
        sequential_s: list[float] = []
        with quiet_stdout():
            for _ in range(iterations):
                started = time.perf_counter()
                invoke_edge(app, event)
                edge_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                for _batch in range(NDJSON_LINES // 10):
                    sqs.send_message_batch(QueueUrl=stack.names.queue_url, Entries=entries)
                sequential_s.append(time.perf_counter() - started)
    return {
        "lines": NDJSON_LINES,
        "iterations": iterations,
        "edge_ms_median": round(median(edge_s) * 1000, 1),
        "edge_ms_p99": round(percentile(edge_s, 0.99) * 1000, 1),
        "sequential_batches_ms_median": round(median(sequential_s) * 1000, 1),
        "target_ms": NDJSON_TARGET_MS,
    }
