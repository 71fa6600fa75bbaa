"""From what the destinations said to what happens to each queue message (CONTRACT §6, §11).

Written once for every sink. The no-loss rules:
- a message is deleted only when every destination meant for it took it;
- a message some destination refused for good is deleted only once its dead-letter copy
  exists, with who refused it and why as message attributes; if that copy fails it is retried;
- anything else stays on the queue, hidden for an exponential backoff with jitter;
- when some destinations took (or refused) it and others must try again, a copy that
  records that progress replaces it, so a destination that took it is not sent it again
  because another one failed; if that copy cannot be sent the original is retried as is;
- the caller raises when anything is left, so Lambda deletes nothing itself; when nothing is
  left it returns and Lambda deletes the batch (this module then deletes nothing).

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

from chalicelib.forward.records import DELIVERED_TO, REFUSALS, Record
from chalicelib.forward.sinks.base import Outcome, OutcomeKind, Reason
from chalicelib.runtime import sqs_batch

# Message attributes the forwarder adds on the dead-letter queue; redrive strips them again.
DLQ_ATTRIBUTE_PREFIX = "dlq_"
MALFORMED_ERROR = "not a queue message"
NO_DESTINATION_ERROR = "no configured destination takes this signal"
# SQS refuses a visibility timeout above 12 hours, and a message delay above 15 minutes.
MAX_VISIBILITY_SECONDS = 12 * 3600
MAX_DELAY_SECONDS = 900


class Action(Enum):
    DELETE = "delete"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"  # hide the message for its backoff
    REQUEUE = "requeue"  # replace it by a copy that records which destinations are done


@dataclass(frozen=True)
class Verdict:
    """What happens to one message, and the destinations' outcomes that decided it."""

    action: Action
    refusals: dict[str, Outcome] = field(default_factory=dict)  # destination → refused for good
    retries: dict[str, Outcome] = field(default_factory=dict)  # destination → try again later
    delivered_to: frozenset[str] = frozenset()  # every destination that has taken it so far
    poison: Reason | None = None  # MALFORMED or NO_DESTINATION: refused before any destination

    @property
    def reasons(self) -> list[str]:
        if self.poison:
            return [self.poison.value]
        return [o.label for o in (*self.refusals.values(), *self.retries.values())]


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: int
    max_seconds: int


@dataclass(frozen=True)
class Step:
    """The SQS work for one message: its verdict, its backoff, the copy to send if any."""

    record: Record
    verdict: Verdict
    visibility: int  # hidden this long on retry (also when its copy could not be sent)
    copy: sqs_batch.Outgoing | None = None  # to the DLQ (DEAD_LETTER) or the queue (REQUEUE)


@dataclass(frozen=True)
class Settlement:
    """Message ids by what became of them (the caller logs, counts and raises from it)."""

    dead_lettered: set[str]
    requeued: set[str]
    left: set[str]  # still on the queue: retried, or a delete or copy that failed
    copy_failed: set[str]


def verdict(record: Record, outcomes: Mapping[str, Outcome], meant: bool = True) -> Verdict:
    """One message's fate from this try's outcome at each destination and its earlier progress.

    `meant` is False when no configured destination takes the message's signal.
    """
    if record.envelope is None:
        return Verdict(Action.DEAD_LETTER, poison=Reason.MALFORMED)
    if not meant and not record.delivered_to and not record.refusals:
        return Verdict(Action.DEAD_LETTER, poison=Reason.NO_DESTINATION)
    if not record.refusals and all(o.taken for o in outcomes.values()):  # the usual message: taken everywhere
        return Verdict(Action.DELETE, delivered_to=record.delivered_to.union(outcomes))
    taken = {name for name, o in outcomes.items() if o.taken}
    refused = {name: o for name, o in outcomes.items() if o.kind is OutcomeKind.REJECTED}
    retries = {name: o for name, o in outcomes.items() if o.kind is OutcomeKind.RETRY}
    refusals = {**record.refusals, **refused}
    delivered_to = record.delivered_to | taken
    if retries:
        action = Action.REQUEUE if taken or refused else Action.RETRY
        return Verdict(action, refusals, retries, delivered_to)
    if refusals:
        return Verdict(Action.DEAD_LETTER, refusals, delivered_to=delivered_to)
    return Verdict(Action.DELETE, delivered_to=delivered_to)


def plan(
    records: Sequence[Record],
    verdicts: Sequence[Verdict],
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> list[Step]:
    steps = []
    for record, decided in zip(records, verdicts, strict=True):
        if decided.action is Action.DELETE:  # nothing to send, never hidden
            steps.append(Step(record, decided, 0))
            continue
        floor = max((o.retry_after or 0.0 for o in decided.retries.values()), default=0.0)
        seconds = retry_visibility(record.receive_count, floor, policy.base_seconds, policy.max_seconds, rand)
        copy = None
        if decided.action is Action.DEAD_LETTER:
            copy = sqs_batch.Outgoing(record.body, dead_letter_attributes(record, decided))
        elif decided.action is Action.REQUEUE:
            delay = min(seconds, MAX_DELAY_SECONDS)
            copy = sqs_batch.Outgoing(record.body, progress_attributes(record, decided), delay)
        steps.append(Step(record, decided, seconds, copy))
    return steps


def execute(steps: Sequence[Step], queue_url: str, dlq_url: str) -> Settlement:
    """Copies first (DLQ, then requeue), then delete what is done, then hide what is left.

    When nothing is left, nothing is deleted here: the handler returns normally and Lambda
    deletes the whole batch itself (one DeleteMessageBatch it makes and bills either way).
    Deleting only pays when some messages must stay, because then the handler raises.
    """
    failed: set[str] = set()
    sent: dict[Action, set[str]] = {}
    for action, url in ((Action.DEAD_LETTER, dlq_url), (Action.REQUEUE, queue_url)):
        copies = {s.record.message_id: s.copy for s in steps if s.verdict.action is action and s.copy is not None}
        not_sent = sqs_batch.send_messages(url, copies).failed if copies else set()
        failed |= not_sent
        sent[action] = copies.keys() - not_sent
    hidden = {
        s.record.message_id: (s.record.receipt_handle, s.visibility)
        for s in steps
        if s.verdict.action is Action.RETRY or s.record.message_id in failed
    }
    not_deleted: set[str] = set()
    if hidden:
        done = {s.record.message_id: s.record.receipt_handle for s in steps if s.record.message_id not in hidden}
        not_deleted = sqs_batch.delete_messages(queue_url, done) if done else set()
        sqs_batch.change_visibility(queue_url, hidden)
    return Settlement(
        dead_lettered=sent[Action.DEAD_LETTER],
        requeued=sent[Action.REQUEUE] - not_deleted,
        left=hidden.keys() | not_deleted,
        copy_failed=failed,
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


def progress_attributes(record: Record, decided: Verdict) -> dict[str, dict[str, Any]]:
    """The original attributes plus the progress: who took it (kept), who refused it (a dlq_ one)."""
    attributes = {
        name: value
        for name, value in without_dlq_attributes(boto_attributes(record.attributes)).items()
        if name != DELIVERED_TO
    }
    if decided.delivered_to:
        attributes[DELIVERED_TO] = _string(",".join(sorted(decided.delivered_to)))
    if decided.refusals:
        details = {
            name: {"reason": o.label, "status": o.status, "error": o.error} for name, o in decided.refusals.items()
        }
        attributes[REFUSALS] = _string(json.dumps(details, separators=(",", ":")))
    return attributes


def dead_letter_attributes(record: Record, decided: Verdict) -> dict[str, dict[str, Any]]:
    """SendMessage attributes for the DLQ copy: the original ones, who took it, who refused it and why.

    `dlq_reason`/`dlq_status`/`dlq_error` describe the first refusal, `dlq_sinks` names every
    refusing destination and `dlq_refusals` (JSON) details each. A redrive strips the `dlq_`
    attributes and keeps `delivered_to`, so only the refusing destinations get it again.
    """
    if decided.poison:
        attributes = without_dlq_attributes(boto_attributes(record.attributes))
        attributes["dlq_reason"] = _string(decided.poison.value)
        attributes["dlq_error"] = _string(
            MALFORMED_ERROR if decided.poison is Reason.MALFORMED else NO_DESTINATION_ERROR
        )
        return attributes
    attributes = progress_attributes(record, decided)
    first = next(iter(decided.refusals.values()))
    attributes["dlq_reason"] = _string(first.label)
    if first.status is not None:
        attributes["dlq_status"] = {"DataType": "Number", "StringValue": str(first.status)}
    if first.error:
        attributes["dlq_error"] = _string(first.error)
    attributes["dlq_sinks"] = _string(",".join(decided.refusals))
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
