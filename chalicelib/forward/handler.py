"""One forwarder invocation: post the SQS batch to Lookout and settle every message (CONTRACT §6).

Partial batch failure, and why the handler settles messages itself
-------------------------------------------------------------------
Chalice's `on_sqs_message` does not turn on `ReportBatchItemFailures`, and without it
Lambda deletes the WHOLE batch when the handler returns, whatever it returns. So the
handler never relies on Lambda to delete anything:

1. it deletes (DeleteMessageBatch) exactly the messages the backend took
   (accepted/duplicate) and those it has safely copied to the dead-letter queue;
2. it hides each transient failure for a backoff period (ChangeMessageVisibility);
3. if any message is left on the queue, it RAISES, so Lambda deletes nothing.

With `ReportBatchItemFailures` on, raising marks the whole batch failed, which is the
same thing: the only messages still on the queue are the ones left for retry.
"""

from __future__ import annotations

from typing import Any

from chalicelib.forward.settle import (
    AUTH_STATUSES,
    Action,
    BackendAnswer,
    Outcome,
    Record,
    Tally,
    classify,
    dead_letter_attributes,
    parse_records,
    redact,
    request_body,
    retry_visibility,
)
from chalicelib.forward.sinks import lookout as lookout_sink
from chalicelib.runtime import sqs_batch
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.runtime.http import parse_retry_after
from chalicelib.runtime.observability import count, flush, logger

SERVICE = "forwarder"


class BatchIncomplete(RuntimeError):
    """Raised so Lambda deletes nothing: some messages stay queued for a later try."""


def forward(event: dict[str, Any]) -> dict[str, Any]:
    """Deliver one SQS batch; raises BatchIncomplete when any message must be retried."""
    tally = Tally()
    try:
        return _forward(event, tally)
    finally:
        for name, value in tally.counts.items():
            count(name, value, SERVICE, unit="Milliseconds" if name == "backend_latency" else "Count")
        flush(SERVICE)


def _forward(event: dict[str, Any], tally: Tally) -> dict[str, Any]:
    config = settings()
    queue_url, dlq_url = config.require("queue_url"), config.require("dlq_url")
    config.require("backend_url")
    records = parse_records(event)
    if not records:
        return {"batchItemFailures": []}
    _check_source_queue(records, queue_url)
    log = logger(SERVICE)
    log.set_correlation_id(records[0].message_id)

    token, answer = _deliver(records, tally)
    outcomes = classify(records, answer)

    dead = {
        r.message_id: sqs_batch.Outgoing(r.body, dead_letter_attributes(r, o, token))
        for r, o in zip(records, outcomes, strict=True)
        if o.action is Action.DEAD_LETTER
    }
    # A rejected event is only removed from the queue once its DLQ copy exists.
    not_dead_lettered = sqs_batch.send_messages(dlq_url, dead) if dead else set()
    done = {
        r.message_id: r.receipt_handle
        for r, o in zip(records, outcomes, strict=True)
        if o.action is Action.DELETE or (o.action is Action.DEAD_LETTER and r.message_id not in not_dead_lettered)
    }
    not_deleted = sqs_batch.delete_messages(queue_url, done) if done else set()

    retry_after = parse_retry_after(answer.retry_after) if answer else None
    retry = {
        r.message_id: (
            r.receipt_handle,
            retry_visibility(r.receive_count, retry_after, config.retry_base_seconds, config.retry_max_seconds),
        )
        for r, o in zip(records, outcomes, strict=True)
        if o.action is Action.RETRY or r.message_id in not_dead_lettered
    }
    if retry:
        sqs_batch.change_visibility(queue_url, retry)

    _tally(tally, outcomes, dead.keys() - not_dead_lettered, len(retry))
    left = retry.keys() | not_deleted
    if left or any(o.action is not Action.DELETE for o in outcomes):
        _log_failure(records, outcomes, answer, token, left, not_dead_lettered)
    if left:
        raise BatchIncomplete(f"{len(left)} of {len(records)} messages left on the queue for retry")
    # Everything is settled; with ReportBatchItemFailures on, this reads as "no failures".
    return {"batchItemFailures": []}


def _check_source_queue(records: list[Record], queue_url: str) -> None:
    """Deleting with another queue's URL would fail after the backend took the events: stop first."""
    configured = queue_url.rstrip("/").rsplit("/", 1)[-1]
    for record in records:
        if record.source_queue and record.source_queue != configured:
            raise ConfigError(
                f"records come from queue {record.source_queue} but LOOKOUT_EDGE_QUEUE_URL names {configured}"
            )


def _deliver(records: list[Record], tally: Tally) -> tuple[str | None, BackendAnswer | None]:
    """Post the usable records; (token, answer), answer None when there was nothing to post."""
    if not any(r.message is not None for r in records):
        return None, None
    try:
        token = lookout_sink.edge_token()
    except lookout_sink.TokenUnavailable as exc:
        logger(SERVICE).error("edge token unavailable", extra={"reason": str(exc)})
        return None, BackendAnswer(None, error="token_unavailable")
    answer, elapsed_ms = lookout_sink.post_events(request_body(records), token)
    tally.add("backend_latency", round(elapsed_ms))
    if answer.status in AUTH_STATUSES:
        tally.add("auth_failed")
    return token, answer


def _tally(tally: Tally, outcomes: list[Outcome], dead_lettered: set[str], retried: int) -> None:
    for outcome in outcomes:
        if outcome.action is Action.DELETE:
            tally.add("forwarded" if outcome.reason == "accepted" else "duplicate")
        elif outcome.reason == "rejected":
            tally.add("rejected")
    if dead_lettered:
        tally.add("dead_lettered", len(dead_lettered))
    if retried:
        tally.add("retried", retried)


def _log_failure(
    records: list[Record],
    outcomes: list[Outcome],
    answer: BackendAnswer | None,
    token: str | None,
    left: set[str],
    not_dead_lettered: set[str],
) -> None:
    """One line per failed batch: status and reasons, never the token."""
    reasons = sorted({o.reason for o in outcomes if o.action is not Action.DELETE})
    errors = sorted({redact(o.error, token) for o in outcomes if o.error})
    logger(SERVICE).warning(
        "forward batch not fully delivered",
        extra={
            "status": answer.status if answer else None,
            "transport_error": answer.error if answer else None,
            "reasons": reasons,
            "errors": errors[:3],
            "batch_size": len(records),
            "left_for_retry": len(left),
            "dlq_send_failed": len(not_dead_lettered),
            "message_ids": sorted(left) or [r.message_id for r in records],
        },
    )
