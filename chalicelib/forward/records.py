"""The Lambda SQS event's records, each with its queue message decoded back to an envelope.

Plain dict reads rather than Powertools' `SQSRecord`: importing its data-classes package
costs ~22 ms of every cold start for the six fields read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib.contract.envelope import decode_payload
from chalicelib.forward.sinks.base import Envelope, Outcome, OutcomeKind, Reason

# Progress of a message across destinations, carried as message attributes (CONTRACT §11):
# the destinations that took it (kept through a DLQ redrive, so they are not sent it again),
# and those that refused it for good (a `dlq_` attribute: a redrive strips it, so they are).
DELIVERED_TO = "delivered_to"
REFUSALS = "dlq_refusals"
REFUSAL_REASONS = frozenset({Reason.REJECTED.value, Reason.BATCH_REJECTED.value, Reason.SINK_ERROR.value})


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
    delivered_to: frozenset[str] = frozenset()
    refusals: dict[str, Outcome] = field(default_factory=dict)

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
            delivered_to=_delivered_to(raw.get("messageAttributes") or {}),
            refusals=_refusals(raw.get("messageAttributes") or {}),
        )
        for raw in event.get("Records", [])
    ]


def _string_attribute(attributes: dict[str, dict[str, Any]], name: str) -> str:
    value = attributes.get(name) or {}
    return str(value.get("stringValue", value.get("StringValue")) or "")


def _delivered_to(attributes: dict[str, dict[str, Any]]) -> frozenset[str]:
    return frozenset(name for name in _string_attribute(attributes, DELIVERED_TO).split(",") if name)


def _refusals(attributes: dict[str, dict[str, Any]]) -> dict[str, Outcome]:
    """Refusals recorded on an earlier try; unreadable ones are ignored (the destination gets it again)."""
    text = _string_attribute(attributes, REFUSALS)
    if not text:  # the usual message: nobody refused it yet
        return {}
    try:
        recorded = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    refusals = {}
    for name, detail in recorded.items():
        if isinstance(detail, dict):
            reason = detail.get("reason")
            refusals[name] = Outcome(
                OutcomeKind.REJECTED,
                Reason(reason) if reason in REFUSAL_REASONS else Reason.REJECTED,
                detail.get("status") if isinstance(detail.get("status"), int) else None,
                detail.get("error") if isinstance(detail.get("error"), str) else None,
            )
    return refusals


def decode_envelope(body: str) -> Envelope | None:
    """The queue message with its payload back as JSON, or None for a poison message."""
    try:
        message = json.loads(body)
        if not isinstance(message, dict) or not isinstance(message.get("event_id"), str):
            return None
        decoded = decode_payload(message)
        return Envelope(decoded, source=body if decoded is message else None)
    except (ValueError, TypeError, KeyError, OSError, EOFError):
        # ValueError covers bad JSON, bad base64 and bad gzip (BadGzipFile is an OSError).
        return None


def queue_name_from_arn(arn: str | None) -> str | None:
    return arn.rsplit(":", 1)[-1] if arn else None
