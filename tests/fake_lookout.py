"""Test helpers for the forwarder: a real HTTP server standing in for Lookout, and SQS events.

The server runs on 127.0.0.1 on a free port; each test scripts its answer with a
function of the request. SQS events are built from messages really received from
(moto) SQS, in the exact shape Lambda hands to the handler.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chalicelib.contract.envelope import encode_message, new_ulid
from tests.conftest import REGION, aws_client


@dataclass
class Seen:
    """One request the fake backend received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    client_port: int


Answer = tuple[int, dict[str, str], Any]


def accept_all(request: Seen) -> Answer:
    """What a healthy Lookout answers: every event accepted."""
    return 200, {}, {"results": [{"event_id": e["event_id"], "status": "accepted"} for e in request.body["events"]]}


@dataclass
class LoopbackFake:
    """A fake destination on a 127.0.0.1 port (`serve`): its `url` once started, `stop()` to end it."""

    server: ThreadingHTTPServer | None = field(default=None, kw_only=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class FakeLookout(LoopbackFake):
    """`answer(request) -> (status, headers, json body or bytes)`; `delay` seconds before answering."""

    answer: Callable[[Seen], Answer] = accept_all
    delay: float = 0.0
    requests: list[Seen] = field(default_factory=list)

    def start(self) -> FakeLookout:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real backend

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen = Seen(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw), self.client_address[1]
                )
                fake.requests.append(seen)
                if fake.delay:
                    time.sleep(fake.delay)
                status, headers, body = fake.answer(seen)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve(Handler)
        return self


def serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """`handler` on a free 127.0.0.1 port, served from a daemon thread (stop: shutdown + server_close).

    It looks for `shutdown` every 50 ms: at serve_forever's default 0.5 s, stopping a test's
    two or three fakes was a second of every such test's teardown."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def queue_message(payload: Any = None, signal: str = "error", **fields: Any) -> dict[str, Any]:
    """A CONTRACT §5 queue message (payload inline)."""
    message = {
        "v": 1,
        "event_id": new_ulid(),
        "signal": signal,
        "path": "/api/ingest",
        "project_id": "42",
        "organization_id": "7",
        "key_id": "9",
        "received_at": "2026-11-22T10:00:00.123Z",
        "client_ip": "203.0.113.9",
        "user_agent": None,
        "idempotency_key": None,
        "headers": {},
        "payload_encoding": "json",
        "payload": payload if payload is not None else {"message": "boom"},
    }
    message.update(fields)
    return message


def enqueue(queue_url: str, messages: list[dict[str, Any]]) -> list[str]:
    """Put messages on the queue as the edge does (encoded, with signal/project_id attributes)."""
    sqs = aws_client("sqs")
    bodies = []
    for message in messages:
        body = encode_message(message) if isinstance(message, dict) else message
        bodies.append(body)
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageAttributes={
                "signal": {"DataType": "String", "StringValue": "error"},
                "project_id": {"DataType": "String", "StringValue": "42"},
            },
        )
    return bodies


def sqs_event(queue_url: str, max_messages: int = 10, region: str = REGION) -> dict[str, Any]:
    """Receive a batch and shape it exactly like Lambda's SQS event."""
    sqs = aws_client("sqs", region)
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    received = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=max_messages, AttributeNames=["All"], MessageAttributeNames=["All"]
    ).get("Messages", [])
    records = []
    for m in received:
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": {
                    name: {
                        "stringValue": v["StringValue"],
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": v["DataType"],
                    }
                    for name, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def queue_counts(queue_url: str) -> tuple[int, int]:
    """(visible, in flight) as moto reports them (exact)."""
    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def release(queue_url: str, event: dict[str, Any]) -> None:
    """Stand in for time passing: make the event's messages visible again."""
    sqs = aws_client("sqs")
    for record in event["Records"]:
        with contextlib.suppress(sqs.exceptions.ReceiptHandleIsInvalid):  # deleted: nothing to release
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )


def forward_like_lambda(event: dict[str, Any], region: str = REGION) -> Any:
    """Invoke the forwarder as Lambda's SQS trigger does: when it returns, Lambda deletes the batch."""
    from app import forward_events
    from edgectl.lambda_shim import delete_returned_batch

    result = forward_events(event, None)
    delete_returned_batch(aws_client("sqs", region), None, event["Records"], result)
    return result
