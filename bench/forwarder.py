"""3. Forwarder: `forward` invocations on batches of 10, 50 and 100 real SQS messages (gathered as
Lambda's event source gathers them), posting to a local backend that answers after 50 ms: events
per forwarder-second at each size, and each batch's time ÷ those 50 ms; a batch of 100 fanned out
to three destinations (Lookout, Loki, InfluxDB), each answering after 50 ms, ÷ the same batch to
Lookout alone; and events/s with 4 concurrent workers at the default batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.stack import HOST, ROOT, Stack, env_int, fresh_queue, median, quiet_stdout, reset_chalicelib, say

TARGET = 1.5
FAN_OUT_TARGET = 1.3
BACKEND_DELAY = 0.050
BATCH = 100  # the stack's ForwarderBatchSize default
BATCH_SIZES = (10, 50, 100)
RATE_TARGET = 1500  # events per forwarder-second at batch 100 (issue #31: 8x the batch of 10)
CONCURRENCY = int(os.environ.get("BENCH_FORWARD_CONCURRENCY") or 4)


class SlowBackend(BaseHTTPRequestHandler):
    """Lookout's /api/ingest/edge, taking every event after BACKEND_DELAY."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the forwarder's pool expects
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["events"]
        time.sleep(BACKEND_DELAY)
        body = json.dumps({"results": [{"event_id": e["event_id"], "status": "accepted"} for e in events]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class SlowSink(BaseHTTPRequestHandler):
    """Loki's push API or InfluxDB's write API: 204 after BACKEND_DELAY."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(BACKEND_DELAY)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def start_backend(handler: type[BaseHTTPRequestHandler] = SlowBackend) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@cache
def bench_sqs() -> Any:
    """The bench's own SQS client for AWS's side (filling, receiving as Lambda's poller): moto
    on a loaded machine can take longer than the functions' 2 s read timeout."""
    import boto3
    from botocore.config import Config

    return boto3.client("sqs", config=Config(read_timeout=60, retries={"max_attempts": 3}))


def fill(queue_url: str, template: str, count: int) -> None:
    """`count` queue messages like the edge writes them, each with its own event id."""
    from chalicelib.contract import envelope

    sqs = bench_sqs()
    message = json.loads(template)
    attributes = {
        "signal": {"DataType": "String", "StringValue": message["signal"]},
        "project_id": {"DataType": "String", "StringValue": message["project_id"]},
    }
    for start in range(0, count, 10):
        entries = []
        for index in range(start, min(count, start + 10)):
            message["event_id"] = envelope.new_ulid()
            entries.append({"Id": str(index), "MessageBody": json.dumps(message), "MessageAttributes": attributes})
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def receive_event(queue_url: str, queue_arn: str, batch_size: int = BATCH, wait: int = 0) -> dict[str, Any]:
    """Up to `batch_size` messages as the SQS event Lambda would hand the forwarder."""
    from edgectl.lambda_shim import receive_batch, sqs_record

    messages = receive_batch(bench_sqs(), queue_url, wait, batch_size, window_seconds=60)  # the queue is full
    return {"Records": [sqs_record(m, queue_arn) for m in messages]}


def delete_like_lambda(event: dict[str, Any], result: Any) -> None:
    """Lambda deletes a batch once its handler returns: AWS's work, outside the billed duration."""
    from chalicelib.runtime.aws import client
    from edgectl.lambda_shim import delete_returned_batch

    delete_returned_batch(client("sqs"), None, event["Records"], result)


def forward_all(batches_file: str) -> int:
    """One forwarder 'container' (`python -m bench.forwarder FILE`): warm up, say "ready", wait
    for "go" on stdin, then invoke the handler on each SQS event in FILE; returns the events
    forwarded. Startup is a cold start, measured elsewhere: not throughput."""
    from app import forward_events
    from chalicelib.forward.sinks import lookout as lookout_sink
    from chalicelib.runtime.aws import client

    with open(batches_file) as source:
        events = json.load(source)
    client("sqs")
    lookout_sink.edge_token()
    print("ready", flush=True)
    sys.stdin.readline()
    with quiet_stdout():
        for event in events:
            result = forward_events(event, None)  # through the middleware: one EMF flush each, as deployed
            delete_like_lambda(event, result)
    return sum(len(event["Records"]) for event in events)


def edge_message(queue_url: str) -> str:
    """One queue message written by the real edge, as the template for the rest."""
    from app import app
    from bench.events import ingest_event, invoke_edge
    from chalicelib.runtime.aws import client

    with quiet_stdout():
        invoke_edge(app, ingest_event())
    return client("sqs").receive_message(QueueUrl=queue_url)["Messages"][0]["Body"]


def received_batches(queue_url: str, queue_arn: str, template: str, events: int) -> list[dict[str, Any]]:
    """`events` messages received in batches of BATCH, as Lambda's pollers would hand them over.
    Filled and received a batch at a time: moto's ReceiveMessage slows down with the queue's
    length, and receiving is AWS's work in Lambda, not the forwarder's."""
    batches = []
    for start in range(0, events, BATCH):
        fill(queue_url, template, min(BATCH, events - start))
        batches.append(receive_event(queue_url, queue_arn))
    return batches


def sustained_rate(batches: list[dict[str, Any]], workdir: Path) -> tuple[int, float]:
    """CONCURRENCY worker processes invoke the handler on the batches; (events, seconds)."""
    workers = []
    for number in range(CONCURRENCY):
        path = workdir / f"forwarder-batches-{number}.json"
        path.write_text(json.dumps(batches[number::CONCURRENCY]))
        workers.append(
            subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "bench.forwarder", str(path)],
                cwd=ROOT,
                env=dict(os.environ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for worker in workers:
        if worker.stdout is None or worker.stdout.readline().strip() != "ready":
            raise RuntimeError("a forwarder worker failed to start")
    started = time.perf_counter()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    forwarded = sum(int(worker.communicate(timeout=300)[0].strip().splitlines()[-1]) for worker in workers)
    return forwarded, time.perf_counter() - started


def run(stack: Stack) -> dict[str, Any]:
    single = env_int("BENCH_FORWARD_BATCHES", 30)
    sustained = env_int("BENCH_FORWARD_EVENTS", 2000)
    backend = start_backend()
    os.environ["LOOKOUT_INGEST_EDGE_BACKEND_URL"] = f"http://{HOST}:{backend.server_address[1]}"
    os.environ["LOOKOUT_INGEST_EDGE_TOKEN"] = "bench-edge-token"  # noqa: S105 - the fake backend's
    edge_queue = os.environ["LOOKOUT_EDGE_QUEUE_URL"]
    try:
        template = edge_message(edge_queue)
        queue_url, queue_arn = fresh_queue("bench-forwarder")
        by_batch = {}
        for size in BATCH_SIZES:
            # At least 10 batches of each size; 30 (BENCH_FORWARD_BATCHES) of 10.
            by_batch[str(size)] = single_batches(queue_url, queue_arn, template, size, max(10, single * 10 // size))
        fan_out, metric_alone = fan_out_batches(queue_url, queue_arn, template, max(10, single * 10 // BATCH))
        say(f"forwarder: {sustained} events in batches of {BATCH}, {CONCURRENCY} worker processes")
        batches = received_batches(queue_url, queue_arn, template, sustained)
        with tempfile.TemporaryDirectory() as workdir:
            forwarded, wall = sustained_rate(batches, Path(workdir))
    finally:
        backend.shutdown()
        os.environ.pop("LOOKOUT_EDGE_SINKS", None)
        os.environ["LOOKOUT_EDGE_QUEUE_URL"] = edge_queue
        reset_chalicelib()
    default = by_batch[str(BATCH)]
    return {
        "batch_size": BATCH,
        **{name: value for name, value in default.items() if name != "durations"},
        "target": TARGET,
        "events_per_s_target": RATE_TARGET,
        "by_batch": {
            size: {k: v for k, v in figures.items() if k != "durations"} for size, figures in by_batch.items()
        },
        "fan_out_ms_median": round(median(fan_out) * 1000, 1),
        "fan_out_lookout_alone_ms_median": round(median(metric_alone) * 1000, 1),
        # ÷ the same metric batch to Lookout alone, interleaved with it (before 2026-12-03 22:30
        # UTC: ÷ the batch of 100 error reports, whose messages are a third of the size).
        "fan_out_ratio": round(median(fan_out) / median(metric_alone), 3),
        "fan_out_target": FAN_OUT_TARGET,
        "sustained_events": forwarded,
        "sustained_events_per_s": round(forwarded / wall, 1),
        "sustained_ideal_events_per_s": CONCURRENCY * BATCH / BACKEND_DELAY,
        "concurrency": CONCURRENCY,
    }


def single_batches(queue_url: str, queue_arn: str, template: str, size: int, batches: int) -> dict[str, Any]:
    """`batches` invocations on `size` messages each, to Lookout alone, one after the other."""
    from app import forward_events

    say(f"forwarder: {batches} single batches of {size} against a {BACKEND_DELAY * 1000:.0f} ms backend")
    durations, cpu = [], []
    log = Path(tempfile.mkdtemp(prefix="bench-forwarder-")) / "stdout"
    with quiet_stdout(into=str(log)):
        for number in range(batches + 1):
            fill(queue_url, template, size)  # a batch at a time: moto receives slower from a longer queue
            event = receive_event(queue_url, queue_arn, size)
            if len(event["Records"]) != size:
                raise RuntimeError(f"received {len(event['Records'])} messages, wanted {size}")
            started, cpu_started = time.perf_counter(), time.thread_time()
            result = forward_events(event, None)  # Lookout alone: posted from this thread
            if number:  # the first opens the backend connection
                durations.append(time.perf_counter() - started)
                cpu.append(time.thread_time() - cpu_started)
            delete_like_lambda(event, result)
    log_bytes = log.stat().st_size
    shutil.rmtree(log.parent)
    batch_ms = median(durations) * 1000
    return {
        "batches": batches,
        "batch_ms_median": round(batch_ms, 1),
        "batch_ms_max": round(max(durations) * 1000, 1),
        "batch_cpu_ms_median": round(median(cpu) * 1000, 2),  # the forwarder's own CPU per batch
        "backend_ms": BACKEND_DELAY * 1000,
        # Everything a healthy forwarder writes, per batch, at this rate (a busy container's;
        # its delivery counts are one line per metrics interval).
        "log_bytes_per_batch": round(log_bytes / (batches + 1), 1),
        "ratio": round(batch_ms / (BACKEND_DELAY * 1000), 3),
        "events_per_s": round(size / median(durations), 1),  # per forwarder (one invocation at a time)
        "durations": durations,
    }


def fan_out_batches(queue_url: str, queue_arn: str, template: str, batches: int) -> tuple[list[float], list[float]]:
    """Seconds per batch of BATCH SDK metric events (100 entries each, as an SDK flushes them)
    delivered to Lookout, Loki and InfluxDB at once, and the same batches to Lookout alone,
    interleaved: (fan-out, Lookout alone)."""
    from chalicelib.forward.handler import forward
    from chalicelib.runtime.config import settings

    loki, influx = start_backend(SlowSink), start_backend(SlowSink)
    sinks = json.dumps(
        [
            {"name": "loki", "type": "loki", "url": f"http://{HOST}:{loki.server_address[1]}", "signals": ["metric"]},
            {
                "name": "influx",
                "type": "influx",
                "url": f"http://{HOST}:{influx.server_address[1]}",
                "signals": ["metric"],
                "org": "bench",
                "bucket": "bench",
            },
        ]
    )
    try:
        metric = dict(json.loads(template), signal="metric", path="/api/ingest/metric")
        metric["payload"] = {"entries": [{"name": "checkout", "value": i} for i in range(100)]}
        say(
            f"forwarder: {batches} batches of {BATCH} metric events to Lookout, Loki and InfluxDB, and as many "
            "to Lookout alone, each answering in 50 ms"
        )
        durations: tuple[list[float], list[float]] = ([], [])
        with quiet_stdout():
            for number in range(2 * (batches + 1)):
                fanned_out = number % 2 == 0
                if fanned_out:
                    os.environ["LOOKOUT_EDGE_SINKS"] = sinks
                else:
                    os.environ.pop("LOOKOUT_EDGE_SINKS", None)
                settings.cache_clear()
                fill(queue_url, json.dumps(metric), BATCH)
                event = receive_event(queue_url, queue_arn)
                started = time.perf_counter()
                result = forward(event)
                if number >= 2:  # the first of each opens its connections
                    durations[0 if fanned_out else 1].append(time.perf_counter() - started)
                delete_like_lambda(event, result)
        return durations
    finally:
        loki.shutdown()
        influx.shutdown()
        os.environ.pop("LOOKOUT_EDGE_SINKS", None)
        settings.cache_clear()


if __name__ == "__main__":
    print(forward_all(sys.argv[1]))
