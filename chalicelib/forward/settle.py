"""What the forwarder decides, without doing any I/O (CONTRACT §6).

Read the SQS records, build the one backend request per batch, and turn the
backend's answer into an action per message: delete it, dead-letter it, or
leave it on the queue for a later retry. The I/O lives in chalicelib.forward.sinks.lookout
(HTTP) and chalicelib.runtime.sqs_batch (SQS); chalicelib.forward.handler wires them.
"""

from __future__ import annotations

import base64
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from chalicelib.contract.envelope import decode_payload, dumps

# A whole batch the backend refuses for good (CONTRACT §6): retrying cannot help.
PERMANENT_STATUSES = frozenset({400, 404, 413, 422})
AUTH_STATUSES = frozenset({401, 403})
# Message attributes the forwarder adds on the dead-letter queue; redrive strips them again.
DLQ_ATTRIBUTE_PREFIX = "dlq_"
MAX_ERROR_TEXT = 256
# SQS refuses a visibility timeout above 12 hours.
MAX_VISIBILITY_SECONDS = 12 * 3600


class Action(Enum):
    DELETE = "delete"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"


@dataclass(frozen=True)
class Outcome:
    """What happens to one message, and why (the why goes to logs, metrics and DLQ attributes)."""

    action: Action
    reason: str
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Record:
    """One SQS record of the Lambda event; `message` is None when the body is unusable."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    attributes: dict[str, dict[str, Any]]
    message: dict[str, Any] | None
    source_queue: str | None = None

    @property
    def event_id(self) -> str | None:
        return self.message.get("event_id") if self.message else None


@dataclass(frozen=True)
class BackendAnswer:
    """The backend's HTTP answer, or `error` ("timeout", "connection") when there was none."""

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Tally:
    """Per-invocation counts; the handler turns them into metrics."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, value: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value


def parse_records(event: dict[str, Any]) -> list[Record]:
    """The Lambda SQS event's records; a body that is not a queue message is kept, marked unusable."""
    records = []
    for raw in event.get("Records", []):
        records.append(
            Record(
                message_id=raw["messageId"],
                receipt_handle=raw["receiptHandle"],
                body=raw["body"],
                receive_count=int((raw.get("attributes") or {}).get("ApproximateReceiveCount", 1)),
                attributes=raw.get("messageAttributes") or {},
                message=_decode_body(raw["body"]),
                source_queue=queue_name_from_arn(raw.get("eventSourceARN")),
            )
        )
    return records


def _decode_body(body: str) -> dict[str, Any] | None:
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


def request_body(records: Sequence[Record]) -> bytes:
    """`{"events": [...]}` for the usable records, payloads decoded back to JSON."""
    return dumps({"events": [r.message for r in records if r.message is not None]}).encode()


def classify(records: Sequence[Record], answer: BackendAnswer | None) -> list[Outcome]:
    """One outcome per record, in order. `answer` is None when nothing was posted."""
    outcomes: list[Outcome | None] = [
        None if r.message is not None else Outcome(Action.DEAD_LETTER, "malformed", error="not a queue message")
        for r in records
    ]
    if answer is not None:
        usable = [i for i, o in enumerate(outcomes) if o is None]
        answered = _classify_answer(answer, [records[i].event_id or "" for i in usable])
        for i, outcome in zip(usable, answered, strict=True):
            outcomes[i] = outcome
    return [o or Outcome(Action.RETRY, "not_sent") for o in outcomes]


def _classify_answer(answer: BackendAnswer, event_ids: list[str]) -> list[Outcome]:
    status = answer.status
    if status is None:
        return [Outcome(Action.RETRY, answer.error or "connection")] * len(event_ids)
    if 200 <= status < 300:
        results = _results_by_event_id(answer.body)
        if results is None:
            return [Outcome(Action.RETRY, "unreadable_answer", status)] * len(event_ids)
        return [_event_outcome(results.get(event_id), status) for event_id in event_ids]
    if status in PERMANENT_STATUSES:
        return [Outcome(Action.DEAD_LETTER, "batch_rejected", status, _error_text(answer.body))] * len(event_ids)
    reason = "auth_failed" if status in AUTH_STATUSES else f"http_{status}"
    # 401/403/408/429/5xx are transient by contract; any other unexpected status is too, so
    # nothing the backend did not clearly take or refuse is ever dropped.
    return [Outcome(Action.RETRY, reason, status, _error_text(answer.body))] * len(event_ids)


def _results_by_event_id(body: bytes) -> dict[str, dict[str, Any]] | None:
    try:
        results = json.loads(body)["results"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(results, list):
        return None
    return {r["event_id"]: r for r in results if isinstance(r, dict) and isinstance(r.get("event_id"), str)}


def _event_outcome(result: dict[str, Any] | None, status: int) -> Outcome:
    if result is None:
        # Not in the results: the backend did not say it took it, so it is not deleted.
        return Outcome(Action.RETRY, "missing_result", status)
    verdict = result.get("status")
    if verdict in ("accepted", "duplicate"):
        return Outcome(Action.DELETE, verdict, status)
    if verdict == "rejected":
        return Outcome(Action.DEAD_LETTER, "rejected", status, _short(str(result.get("error") or "")))
    return Outcome(Action.RETRY, "unknown_result", status)


def _error_text(body: bytes) -> str:
    """The backend's error for logs and DLQ attributes: its JSON `error`/`message`, else raw text."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            text = " ".join(str(parsed[k]) for k in ("error", "message") if parsed.get(k)) or text
    except ValueError:
        pass
    return _short(text)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def redact(text: str | None, secret: str | None) -> str | None:
    """Backend text may echo what it was sent; the token never leaves the forwarder."""
    if text and secret:
        return text.replace(secret, "[redacted]")
    return text


def retry_visibility(
    receive_count: int,
    retry_after: float | None,
    base_seconds: int,
    max_seconds: int,
    rand: Callable[[], float] = random.random,
) -> int:
    """Seconds until a message comes back: exponential in its receive count, with jitter.

    Equal jitter (half fixed, half random) spreads a backlog without ever retrying at
    once. `Retry-After` is a floor. The cap keeps a message retrying every few minutes
    at most, so a fixed backend is picked up quickly.
    """
    cap = min(max_seconds, MAX_VISIBILITY_SECONDS)
    delay = min(cap, base_seconds * 2 ** max(0, receive_count - 1))
    jittered = delay / 2 + rand() * delay / 2
    return math.ceil(min(cap, max(jittered, retry_after or 0.0)))


def dead_letter_attributes(record: Record, outcome: Outcome, secret: str | None) -> dict[str, dict[str, Any]]:
    """SQS (boto3-style) attributes for the DLQ copy: the original ones plus the reason."""
    attributes = without_dlq_attributes(boto_attributes(record.attributes))
    attributes["dlq_reason"] = {"DataType": "String", "StringValue": outcome.reason}
    if outcome.status is not None:
        attributes["dlq_status"] = {"DataType": "Number", "StringValue": str(outcome.status)}
    error = redact(outcome.error, secret)
    if error:
        attributes["dlq_error"] = {"DataType": "String", "StringValue": error}
    return attributes


def boto_attributes(lambda_attributes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Lambda's record attributes (`stringValue`, `dataType`) in the shape SendMessage takes."""
    converted = {}
    for name, value in lambda_attributes.items():
        data_type = value.get("dataType") or value.get("DataType") or "String"
        if "stringValue" in value or "StringValue" in value:
            converted[name] = {"DataType": data_type, "StringValue": value.get("stringValue", value.get("StringValue"))}
        elif "binaryValue" in value or "BinaryValue" in value:
            binary = value.get("binaryValue", value.get("BinaryValue"))
            if isinstance(binary, str):
                binary = base64.b64decode(binary)
            converted[name] = {"DataType": data_type, "BinaryValue": binary}
    return converted


def without_dlq_attributes(attributes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Attributes for a redriven message: the original ones, the dead-letter reason removed."""
    return {name: value for name, value in attributes.items() if not name.startswith(DLQ_ATTRIBUTE_PREFIX)}
