"""The Lambda SQS event's records, each with its queue message decoded back to an envelope.

Plain dict reads rather than Powertools' `SQSRecord`: importing its data-classes package
costs ~22 ms of every cold start for the six fields read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.contract.envelope import decode_payload
from chalicelib.forward.sinks.base import Envelope


@dataclass(frozen=True)
class Record:
    """One SQS record; `envelope` is None when the body is not a queue message (poison)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    attributes: dict[str, dict[str, Any]]  # Lambda's shape: {"stringValue", "dataType"}
    envelope: Envelope | None
    source_queue: str | None = None

    @property
    def event_id(self) -> str | None:
        return self.envelope.get("event_id") if self.envelope else None

    @property
    def signal(self) -> str | None:
        return self.envelope.get("signal") if self.envelope else None


def parse_records(event: dict[str, Any]) -> list[Record]:
    """Every record of the event, in order; an unusable body is kept and marked (envelope None)."""
    return [
        Record(
            message_id=raw["messageId"],
            receipt_handle=raw["receiptHandle"],
            body=raw["body"],
            receive_count=int((raw.get("attributes") or {}).get("ApproximateReceiveCount", 1)),
            attributes=raw.get("messageAttributes") or {},
            envelope=decode_envelope(raw["body"]),
            source_queue=queue_name_from_arn(raw.get("eventSourceARN")),
        )
        for raw in event.get("Records", [])
    ]


def decode_envelope(body: str) -> Envelope | None:
    """The queue message with its payload back as JSON, or None for a poison message."""
    try:
        message = json.loads(body)
        if not isinstance(message, dict) or not isinstance(message.get("event_id"), str):
            return None
        return decode_payload(message)
    except (ValueError, TypeError, KeyError, OSError, EOFError):
        # ValueError covers bad JSON, bad base64 and bad gzip (BadGzipFile is an OSError).
        return None


def queue_name_from_arn(arn: str | None) -> str | None:
    return arn.rsplit(":", 1)[-1] if arn else None
