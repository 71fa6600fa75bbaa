"""What every benchmark shares: moto server in its own process, the stack's resources, a key,
medians and percentiles, and a way to keep the handlers' log lines out of the table."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.events import BENCH_KEY, BENCH_PROJECT
from edgectl.devstack import free_port, wait_for_http
from edgectl.resources import StackNames, create_resources

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REGION = "us-east-1"


@dataclass
class Stack:
    """moto server and the stack's tables and queues; `env` is what a handler process needs."""

    process: subprocess.Popen
    aws_url: str
    names: StackNames

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **aws_env(self.aws_url), **self.names.environment()}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def aws_env(aws_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": aws_url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


def start_stack() -> Stack:
    """moto server on a free loopback port (its own process, as AWS is), then the resources;
    this process's environment points at it so chalicelib's clients do too.

    The server is edgectl/moto_linear_sqs.py, moto with a SendMessage that does not recount the
    queue: the sections put tens of thousands of messages in the edge's queue, and stock moto
    would slow each send down with the queue's length (the OTLP section crawled at ~7 requests/s, ~45 minutes),
    timing the mock instead of the edge."""
    import boto3

    port = free_port(HOST)
    process = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "edgectl.moto_linear_sqs", "-H", HOST, "-p", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    aws_url = f"http://{HOST}:{port}"
    try:
        wait_for_http(f"{aws_url}/moto-api/", 30)
        os.environ.update(aws_env(aws_url))
        names = create_resources(boto3.Session(region_name=REGION))
    except BaseException:
        process.kill()
        raise
    os.environ.update(names.environment())
    stack = Stack(process, aws_url, names)
    put_bench_key(stack)
    return stack


@contextlib.contextmanager
def own_stack() -> Iterator[Stack]:
    """A stack of a section's own (a fresh moto server: an empty queue), the bench key in it;
    the process environment points at it meanwhile."""
    saved = dict(os.environ)
    stack = start_stack()
    try:
        reset_chalicelib()
        yield stack
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        reset_chalicelib()


def put_bench_key(stack: Stack) -> None:
    """The key every edge request uses, written as the key sync would write it."""
    import boto3

    from chalicelib.keysync.plan import item_from_row

    row = {"key_id": "9", "api_key": BENCH_KEY, "project_id": BENCH_PROJECT, "organization_id": "7", "billing_ok": 1}
    boto3.client("dynamodb").put_item(TableName=stack.names.keys_table, Item=item_from_row(row, int(time.time())))


def fresh_queue(name: str) -> tuple[str, str]:
    """A new empty queue made the edge's queue (moto allows one PurgeQueue a minute); (url, arn)."""
    import boto3

    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "900"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    os.environ["LOOKOUT_EDGE_QUEUE_URL"] = url
    reset_chalicelib()
    return url, arn


def reset_chalicelib() -> None:
    """Forget cached settings, clients and caches, as a new container would."""
    from chalicelib.runtime import container

    container.reset()


@contextlib.contextmanager
def quiet_stdout(into: str = os.devnull) -> Iterator[None]:
    """Send fd 1 to /dev/null (or the file `into`, to measure it) while handlers run: their JSON
    log and EMF lines are real work (Lambda ships them to CloudWatch), but they must not drown
    the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(into, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (share in 0..1)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))
    return ordered[index]


def say(message: str) -> None:
    """Progress goes to stderr; the table alone goes to stdout."""
    print(f"bench | {message}", file=sys.stderr, flush=True)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)
