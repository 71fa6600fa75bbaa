"""A Firehose stand-in: HTTP endpoint deliveries built as the AWS specification says.

moto's Firehose does not send the spec's headers, so tests and the bench build the
requests here ("HTTP Endpoint Delivery Request and Response Specifications"): headers
X-Amz-Firehose-Protocol-Version 1.0, X-Amz-Firehose-Request-Id (the same GUID on every
attempt of a delivery), X-Amz-Firehose-Source-Arn, X-Amz-Firehose-Access-Key,
X-Amz-Firehose-Common-Attributes `{"commonAttributes": {...}}`, Content-Type
application/json, Content-Encoding gzip when the stream compresses; body
`{"requestId": <the header's id>, "timestamp": <ms>, "records": [{"data": <base64>}]}`.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

SOURCE_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/to-lookout"


def record_data(value: Any) -> bytes:
    """What a producer puts in a record: a JSON document as bytes (bytes pass through)."""
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def cloudwatch_logs_record(messages: list[str], group: str = "/aws/lambda/orders", stream: str = "s1") -> bytes:
    """A record as a CloudWatch Logs subscription writes it to Firehose: gzip JSON."""
    message = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": group,
        "logStream": stream,
        "subscriptionFilters": ["to-lookout"],
        "logEvents": [
            {"id": f"{i:056d}", "timestamp": 1764000000000 + i, "message": text} for i, text in enumerate(messages)
        ],
    }
    return gzip.compress(json.dumps(message).encode())


@dataclass
class Delivery:
    """One delivery; `request()` gives the same request id on every attempt, as Firehose does."""

    records: list[bytes]
    access_key: str | None
    gzip_body: bool = False
    common_attributes: dict[str, str] = field(default_factory=lambda: {"env": "test"})
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def body(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "timestamp": int(time.time() * 1000),
            "records": [{"data": base64.b64encode(data).decode()} for data in self.records],
        }

    def request(self) -> tuple[dict[str, str], bytes]:
        """(headers, body bytes) of one attempt."""
        headers = {
            "X-Amz-Firehose-Protocol-Version": "1.0",
            "X-Amz-Firehose-Request-Id": self.request_id,
            "X-Amz-Firehose-Source-Arn": SOURCE_ARN,
            "X-Amz-Firehose-Common-Attributes": json.dumps({"commonAttributes": self.common_attributes}),
            "Content-Type": "application/json",
        }
        if self.access_key is not None:
            headers["X-Amz-Firehose-Access-Key"] = self.access_key
        payload = json.dumps(self.body()).encode()
        if self.gzip_body:
            headers["Content-Encoding"] = "gzip"
            payload = gzip.compress(payload)
        return headers, payload


def delivery(values: list[Any], access_key: str | None, **options: Any) -> Delivery:
    return Delivery([record_data(v) for v in values], access_key, **options)
