"""From what the destinations said to what happens to each queue message (CONTRACT §6, §11).

Written once for every sink. The no-loss rules:
- a message is deleted only when every destination it was sent to took it;
- a message a destination refused for good is deleted only once its dead-letter copy
  exists (with the reasons as message attributes); if that copy fails it is retried;
- anything else stays on the queue, hidden for an exponential backoff with jitter;
- the caller raises when anything is left, so Lambda deletes nothing itself.

`verdict` and `plan` are pure; `execute` does the SQS calls.
"""

from __future__ import annotations

import base64
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from chalicelib.forward.records import Record
from chalicelib.forward.sinks.base import Outcome, OutcomeKind, Reason
from chalicelib.runtime import sqs_batch

# Message attributes the forwarder adds on the dead-letter queue; redrive strips them again.
DLQ_ATTRIBUTE_PREFIX = "dlq_"
MALFORMED_ERROR = "not a queue message"
# SQS refuses a visibility timeout above 12 hours.
MAX_VISIBILITY_SECONDS = 12 * 3600


class Action(Enum):
    DELETE = "delete"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"


@dataclass(frozen=True)
class Verdict:
    """What happens to one message, and the destinations' outcomes that decided it."""

    action: Action
    refusals: dict[str, Outcome] = field(default_factory=dict)  # destination → refused for good
    retries: dict[str, Outcome] = field(default_factory=dict)  # destination → try again later

    @property
    def reasons(self) -> list[str]:
        if self.action is Action.DEAD_LETTER and not self.refusals:
            return [Reason.MALFORMED.value]
        return [o.label for o in (*self.refusals.values(), *self.retries.values())]


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: int
    max_seconds: int


@dataclass(frozen=True)
class Step:
    """The SQS work for one message: its action, its backoff, its dead-letter copy if any."""

    record: Record
    verdict: Verdict
    visibility: int  # used for a retry, and for a dead-letter copy that could not be sent
    dead_letter: sqs_batch.Outgoing | None = None


@dataclass(frozen=True)
class Settlement:
    """Message ids by what became of them (the caller logs, counts and raises from it)."""

    dead_lettered: set[str]
    left: set[str]  # still on the queue: retried, or a delete/dead-letter copy that failed
    dlq_send_failed: set[str]


def verdict(record: Record, outcomes: Mapping[str, Outcome]) -> Verdict:
    """One message's fate from each destination's outcome; a poison message is dead-lettered."""
    if record.envelope is None:
        return Verdict(Action.DEAD_LETTER)
    retries = {name: o for name, o in outcomes.items() if o.kind is OutcomeKind.RETRY}
    refusals = {name: o for name, o in outcomes.items() if o.kind is OutcomeKind.REJECTED}
    if retries:
        return Verdict(Action.RETRY, refusals, retries)
    if refusals:
        return Verdict(Action.DEAD_LETTER, refusals)
    return Verdict(Action.DELETE)


def plan(
    records: Sequence[Record],
    verdicts: Sequence[Verdict],
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> list[Step]:
    steps = []
    for record, decided in zip(records, verdicts, strict=True):
        floor = max((o.retry_after or 0.0 for o in decided.retries.values()), default=0.0)
        seconds = retry_visibility(record.receive_count, floor, policy.base_seconds, policy.max_seconds, rand)
        outgoing = (
            sqs_batch.Outgoing(record.body, dead_letter_attributes(record, decided))
            if decided.action is Action.DEAD_LETTER
            else None
        )
        steps.append(Step(record, decided, seconds, outgoing))
    return steps


def execute(steps: Sequence[Step], queue_url: str, dlq_url: str) -> Settlement:
    """Dead-letter copies first, then delete what is done, then hide what is left for its backoff."""
    copies = {s.record.message_id: s.dead_letter for s in steps if s.dead_letter is not None}
    dlq_send_failed = sqs_batch.send_messages(dlq_url, copies) if copies else set()
    done = {
        s.record.message_id: s.record.receipt_handle
        for s in steps
        if s.verdict.action is Action.DELETE
        or (s.dead_letter is not None and s.record.message_id not in dlq_send_failed)
    }
    not_deleted = sqs_batch.delete_messages(queue_url, done) if done else set()
    hidden = {
        s.record.message_id: (s.record.receipt_handle, s.visibility)
        for s in steps
        if s.verdict.action is Action.RETRY or s.record.message_id in dlq_send_failed
    }
    if hidden:
        sqs_batch.change_visibility(queue_url, hidden)
    return Settlement(
        dead_lettered=copies.keys() - dlq_send_failed,
        left=hidden.keys() | not_deleted,
        dlq_send_failed=dlq_send_failed,
    )


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
    at most, so a fixed destination is picked up quickly.
    """
    cap = min(max_seconds, MAX_VISIBILITY_SECONDS)
    delay = min(cap, base_seconds * 2 ** max(0, receive_count - 1))
    jittered = delay / 2 + rand() * delay / 2
    return math.ceil(min(cap, max(jittered, retry_after or 0.0)))


def dead_letter_attributes(record: Record, decided: Verdict) -> dict[str, dict[str, Any]]:
    """SendMessage attributes for the DLQ copy: the original ones plus who refused it and why.

    `dlq_reason`/`dlq_status`/`dlq_error` describe the first refusal; `dlq_sinks` names every
    refusing destination, and `dlq_refusals` (JSON) details each when there are several.
    """
    attributes = without_dlq_attributes(boto_attributes(record.attributes))
    if not decided.refusals:
        attributes["dlq_reason"] = _string(Reason.MALFORMED.value)
        attributes["dlq_error"] = _string(MALFORMED_ERROR)
        return attributes
    first = next(iter(decided.refusals.values()))
    attributes["dlq_reason"] = _string(first.label)
    if first.status is not None:
        attributes["dlq_status"] = {"DataType": "Number", "StringValue": str(first.status)}
    if first.error:
        attributes["dlq_error"] = _string(first.error)
    attributes["dlq_sinks"] = _string(",".join(decided.refusals))
    if len(decided.refusals) > 1:
        details = {
            name: {"reason": o.label, "status": o.status, "error": o.error} for name, o in decided.refusals.items()
        }
        attributes["dlq_refusals"] = _string(json.dumps(details, separators=(",", ":")))
    return attributes


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


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
    """Attributes for a redriven message: the original ones, the dead-letter reasons removed."""
    return {name: value for name, value in attributes.items() if not name.startswith(DLQ_ATTRIBUTE_PREFIX)}
