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

REGION = "us-east-1"
ACCOUNT = "123456789012"


class LambdaContext:
    """The attributes of a Lambda context object that Powertools and Chalice read."""

    def __init__(self, function_name: str, timeout_seconds: int = 60, memory_mb: int = 256):
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
    body: bytes,
    headers: dict[str, str],
    source_ip: str = "203.0.113.9",
    base64_body: bool = False,
    resource: str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event as Lambda hands it to Chalice (POST to `path`)."""
    import base64

    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource or path,
            "httpMethod": "POST",
            "path": path,
            "identity": {"sourceIp": source_ip},
        },
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


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


def poll_once(
    sqs: Any, queue_url: str, queue_arn: str, handler: Callable[[dict, Any], Any], wait_seconds: int = 5
) -> tuple[int, bool]:
    """Receive one batch and invoke the handler. Returns (records, handler_succeeded)."""
    messages = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_seconds,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    if not messages:
        return 0, True
    records = [sqs_record(m, queue_arn) for m in messages]
    try:
        result = handler({"Records": records}, LambdaContext("forward_events"))
    except Exception:
        return len(records), False
    failed = (
        {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        if isinstance(result, dict)
        else set()
    )
    done = [r for r in records if r["messageId"] not in failed]
    for start in range(0, len(done), 10):
        chunk = done[start : start + 10]
        # Already-deleted receipts (the forwarder deletes what it delivered) fail harmlessly.
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)],
        )
    return len(records), True
