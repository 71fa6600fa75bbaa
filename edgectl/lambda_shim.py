"""Run the real Lambda handlers outside Lambda, with the event shapes AWS sends them.

The local stack and the tests use these: the SQS poller behaves like Lambda's
event source mapping (with ReportBatchItemFailures, as the deploy configures):
after the handler returns, every record it did not report as failed is deleted;
when it raises, nothing is deleted and the batch reappears after the visibility
timeout.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

REGION = "us-east-1"
ACCOUNT = "123456789012"


class LambdaContext:
    """The attributes of a Lambda context object that Powertools and Chalice read."""

    def __init__(self, function_name: str, timeout_seconds: float = 60, memory_mb: int = 256):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def api_gateway_event(
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    source_ip: str = "203.0.113.9",
    base64_body: bool = False,
    resource: str | None = None,
    method: str = "POST",
    query: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event (payload 1.0) as Lambda hands it to Chalice.

    `resource` is the route template API Gateway matched (`/api/ingest/{signal}`); path
    parameters are read off `path` by it.
    """
    template = resource or path
    parameters = {
        part[1:-1]: value
        for part, value in zip(template.split("/"), path.split("/"), strict=False)
        if part.startswith("{")
    }
    return {
        "resource": template,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": template,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("user-agent")},
        },
        "body": _encoded_body(body, base64_body),
        "isBase64Encoded": base64_body and body is not None,
    }


# Content types the 2.0 doors hand over as text; anything else, or any Content-Encoding, arrives base64.
_TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/xml", "application/javascript")


def http_api_event(
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    source_ip: str = "203.0.113.9",
    method: str = "POST",
    stage: str = "$default",
    query: str = "",
    base64_body: bool | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, `$default` route.

    As AWS sends it: header names lowercase, repeated headers comma-joined (pass them
    joined), cookies taken out of the headers into `cookies`, a named stage in front of
    `rawPath`, bodies of binary or encoded content base64.
    """
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    api = "a1b2c3d4e5"
    door = {
        "accountId": ACCOUNT,
        "apiId": api,
        "domainName": f"{api}.execute-api.{REGION}.amazonaws.com",
        "stage": stage,
    }
    return _v2_event(raw_path, body, headers, source_ip, method, query, base64_body, door, keep_cookie_header=False)


def function_url_event(
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    source_ip: str = "203.0.113.9",
    method: str = "POST",
    query: str = "",
    base64_body: bool | None = None,
) -> dict[str, Any]:
    """A Lambda function URL event (payload 2.0, auth NONE): routeKey and stage `$default`,
    the `cookie` header kept beside `cookies`."""
    url_id = "abcdefghijklmnopqrstuvwxyz012345"
    door = {"accountId": "anonymous", "apiId": url_id, "domainName": f"{url_id}.lambda-url.{REGION}.on.aws"}
    return _v2_event(path, body, headers, source_ip, method, query, base64_body, door, keep_cookie_header=True)


def _v2_event(
    raw_path: str,
    body: bytes | None,
    headers: dict[str, str],
    source_ip: str,
    method: str,
    query: str,
    base64_body: bool | None,
    door: dict[str, str],
    keep_cookie_header: bool,
) -> dict[str, Any]:
    """Payload 2.0 as both doors send it; `door` holds the requestContext fields that tell them apart."""
    from urllib.parse import parse_qs

    headers = {k.lower(): v for k, v in headers.items()}
    cookie = headers.get("cookie") if keep_cookie_header else headers.pop("cookie", None)
    if base64_body is None:
        content_type = headers.get("content-type", "")
        base64_body = "content-encoding" in headers or not content_type.startswith(_TEXT_TYPES) or not _utf8(body)
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": {"x-forwarded-for": source_ip, "x-forwarded-proto": "https", "x-forwarded-port": "443", **headers},
        "requestContext": {
            "stage": "$default",
            **door,
            "domainPrefix": door["domainName"].split(".", 1)[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": bool(base64_body) and body is not None,
    }
    if cookie:
        event["cookies"] = [c.strip() for c in cookie.split(";")]
    if query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in parse_qs(query, keep_blank_values=True).items()}
    if body is not None:
        event["body"] = _encoded_body(body, bool(base64_body))
    return event


def _utf8(body: bytes | None) -> bool:
    """False for a body a JSON event cannot carry as text (a JSON string holds Unicode only)."""
    try:
        (body or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _encoded_body(body: bytes | None, base64_body: bool) -> str | None:
    import base64

    if body is None:
        return None
    return base64.b64encode(body).decode() if base64_body else body.decode()


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One SQS message as a Lambda SQS event record."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.get("DataType", "String"),
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def scheduled_event(rule_name: str) -> dict[str, Any]:
    """The EventBridge event a `rate(...)` schedule delivers."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule_name}"],
        "detail": {},
    }


# Lambda's synchronous invocation payload: the event source stops filling a batch before it.
MAX_BATCH_BYTES = 6 * 1024 * 1024 - 256 * 1024


def receive_batch(
    sqs: Any, queue_url: str, wait_seconds: int = 5, batch_size: int = 10, window_seconds: float = 0.0
) -> list[dict[str, Any]]:
    """Messages for one invocation, gathered as the event source mapping does: ReceiveMessage
    (10 at most each) until `batch_size` messages, the batching window or the 6 MB payload."""

    def receive(count: int, wait: int) -> list[dict[str, Any]]:
        return sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, count),
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    messages = receive(batch_size, wait_seconds)
    closes = time.monotonic() + window_seconds
    while messages and len(messages) < batch_size and time.monotonic() < closes:
        if sum(len(m["Body"]) for m in messages) >= MAX_BATCH_BYTES:
            break
        try:
            more = receive(batch_size - len(messages), 0)
        except (BotoCoreError, ClientError):
            break  # invoke with what was gathered: those messages are in flight already
        messages.extend(more)
        if not more:
            time.sleep(min(0.1, max(0.0, closes - time.monotonic())))
    return messages


def poll_once(
    sqs: Any,
    queue_url: str,
    queue_arn: str,
    handler: Callable[[dict, Any], Any],
    wait_seconds: int = 5,
    batch_size: int = 10,
    window_seconds: float = 0.0,
) -> tuple[int, bool]:
    """Receive one batch and invoke the handler. Returns (records, handler_succeeded)."""
    messages = receive_batch(sqs, queue_url, wait_seconds, batch_size, window_seconds)
    if not messages:
        return 0, True
    records = [sqs_record(m, queue_arn) for m in messages]
    try:
        result = handler({"Records": records}, LambdaContext("forward_events"))
    except Exception:
        return len(records), False
    delete_returned_batch(sqs, queue_url, records, result)
    return len(records), True


def delete_returned_batch(sqs: Any, queue_url: str | None, records: list[dict[str, Any]], result: Any) -> None:
    """What Lambda's SQS event source mapping does when the handler returns: delete the batch,
    except the messages a `batchItemFailures` answer names. Without `queue_url`, the queue is
    the one the records name."""
    if records and queue_url is None:
        queue_url = sqs.get_queue_url(QueueName=records[0]["eventSourceARN"].rsplit(":", 1)[-1])["QueueUrl"]
    failed = (
        {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        if isinstance(result, dict)
        else set()
    )
    done = [r for r in records if r["messageId"] not in failed]
    for start in range(0, len(done), 10):
        chunk = done[start : start + 10]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)],
        )
