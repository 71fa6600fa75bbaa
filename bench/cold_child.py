"""One cold start, run as a fresh process: `python -m bench.cold_child edge|otlp|bare`.

Prints one JSON line on stderr: seconds from the child's first line of code to its first
accepted event (stdout carries the handler's log lines and is discarded by the parent).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def edge() -> None:
    """Import the app and serve one event, as a new Lambda container does."""
    from bench.events import ingest_event, invoke_edge

    event = ingest_event()
    from app import app

    invoke_edge(app, event)


def otlp() -> None:
    """Import the app and serve one protobuf `/v1/traces` request (its body made by the parent)."""
    from bench.events import BODY_FILE_ENV, invoke_otlp, otlp_event

    with open(os.environ[BODY_FILE_ENV], "rb") as body:
        event = otlp_event(body.read())
    from app import app

    invoke_otlp(app, event)


def bare() -> None:
    """The least a container that checks a key and enqueues could do: boto3, two clients, one
    GetItem, one SendMessage."""
    import hashlib

    import boto3

    from bench.events import BENCH_KEY

    dynamodb = boto3.client("dynamodb")
    sqs = boto3.client("sqs")
    key_hash = hashlib.sha256(BENCH_KEY.encode()).hexdigest()
    dynamodb.get_item(TableName=os.environ["LOOKOUT_EDGE_KEYS_TABLE"], Key={"key_hash": {"S": key_hash}})
    sqs.send_message(QueueUrl=os.environ["LOOKOUT_EDGE_QUEUE_URL"], MessageBody='{"message": "cold"}')


if __name__ == "__main__":
    {"edge": edge, "otlp": otlp, "bare": bare}[sys.argv[1]]()
    print(json.dumps({"seconds": time.perf_counter() - STARTED}), file=sys.stderr)
