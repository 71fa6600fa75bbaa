"""One forwarder invocation: SQS records → sinks → settlement plan → SQS calls (CONTRACT §6).

Partial batch failure, and why the handler settles messages itself
-------------------------------------------------------------------
Chalice's `on_sqs_message` does not turn on `ReportBatchItemFailures`, and without it
Lambda deletes the WHOLE batch when the handler returns, whatever it returns. So the
handler never relies on Lambda to delete anything:

1. it deletes (DeleteMessageBatch) exactly the messages every destination took and
   those it has safely copied to the dead-letter queue;
2. it hides each message left for retry for a backoff period (ChangeMessageVisibility);
3. if any message is left on the queue, it RAISES, so Lambda deletes nothing.

With `ReportBatchItemFailures` on, raising marks the whole batch failed, which is the
same thing: the only messages still on the queue are the ones left for retry.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from chalicelib.forward import settle
from chalicelib.forward.records import Record, parse_records
from chalicelib.forward.sinks.base import Outcome, OutcomeKind, Reason, Sink
from chalicelib.forward.sinks.lookout import LookoutSink
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.runtime.observability import count, flush, logger

SERVICE = "forwarder"


class BatchIncomplete(RuntimeError):
    """Raised so Lambda deletes nothing: some messages stay queued for a later try."""


def forward(event: dict[str, Any]) -> dict[str, Any]:
    """Deliver one SQS batch; raises BatchIncomplete when any message must be retried."""
    tally: Counter[str] = Counter()
    try:
        return _forward(event, tally)
    finally:
        for name, value in tally.items():
            count(name, value, SERVICE, unit="Milliseconds" if name.endswith("latency") else "Count")
        flush(SERVICE)


def sinks() -> list[Sink]:
    """The destinations of this container."""
    return [LookoutSink()]


def _forward(event: dict[str, Any], tally: Counter[str]) -> dict[str, Any]:
    config = settings()
    queue_url, dlq_url = config.require("queue_url"), config.require("dlq_url")
    config.require("backend_url")
    records = parse_records(event)
    if not records:
        return {"batchItemFailures": []}
    _check_source_queue(records, queue_url)
    logger(SERVICE).set_correlation_id(records[0].message_id)

    outcomes = deliver(records, sinks(), tally)
    verdicts = [settle.verdict(r, o) for r, o in zip(records, outcomes, strict=True)]
    policy = settle.RetryPolicy(config.retry_base_seconds, config.retry_max_seconds)
    settlement = settle.execute(settle.plan(records, verdicts, policy), queue_url, dlq_url)

    _tally(tally, outcomes, settlement)
    if settlement.left or any(v.action is not settle.Action.DELETE for v in verdicts):
        _log_failure(records, outcomes, verdicts, settlement)
    if settlement.left:
        raise BatchIncomplete(f"{len(settlement.left)} of {len(records)} messages left on the queue for retry")
    # Everything is settled; with ReportBatchItemFailures on, this reads as "no failures".
    return {"batchItemFailures": []}


def deliver(records: Sequence[Record], destinations: Sequence[Sink], tally: Counter[str]) -> list[dict[str, Outcome]]:
    """Each usable record's outcome at each destination meant for its signal."""
    outcomes: list[dict[str, Outcome]] = [{} for _ in records]
    for sink in destinations:
        meant = [i for i, r in enumerate(records) if r.envelope is not None and _wants(sink, r.signal)]
        if not meant:
            continue
        started = time.perf_counter()
        answered = sink.deliver([records[i].envelope for i in meant])  # type: ignore[misc]
        tally["backend_latency"] += round((time.perf_counter() - started) * 1000)
        for i, outcome in zip(meant, answered, strict=True):
            outcomes[i][sink.name] = outcome
    return outcomes


def _wants(sink: Sink, signal: str | None) -> bool:
    return sink.signals is None or signal in sink.signals


def _check_source_queue(records: list[Record], queue_url: str) -> None:
    """Deleting with another queue's URL would fail after the backend took the events: stop first."""
    configured = queue_url.rstrip("/").rsplit("/", 1)[-1]
    for record in records:
        if record.source_queue and record.source_queue != configured:
            raise ConfigError(
                f"records come from queue {record.source_queue} but LOOKOUT_EDGE_QUEUE_URL names {configured}"
            )


def _tally(tally: Counter[str], outcomes: list[dict[str, Outcome]], settlement: settle.Settlement) -> None:
    for by_sink in outcomes:
        for outcome in by_sink.values():
            if outcome.kind is OutcomeKind.DELIVERED:
                tally["forwarded"] += 1
            elif outcome.kind is OutcomeKind.DUPLICATE:
                tally["duplicate"] += 1
            elif outcome.reason is Reason.REJECTED:
                tally["rejected"] += 1
    if any(o.reason is Reason.AUTH_FAILED for by_sink in outcomes for o in by_sink.values()):
        tally["auth_failed"] += 1
    if settlement.dead_lettered:
        tally["dead_lettered"] += len(settlement.dead_lettered)
    retried = len(settlement.left)
    if retried:
        tally["retried"] += retried


def _log_failure(
    records: Sequence[Record],
    outcomes: list[dict[str, Outcome]],
    verdicts: Sequence[settle.Verdict],
    settlement: settle.Settlement,
) -> None:
    """One line per batch not fully delivered: statuses and reasons (sinks redact their secrets)."""
    failed = [o for by_sink in outcomes for o in by_sink.values() if not o.taken]
    logger(SERVICE).warning(
        "forward batch not fully delivered",
        extra={
            "statuses": sorted({o.status for o in failed if o.status is not None}),
            "reasons": sorted({reason for v in verdicts for reason in v.reasons}),
            "errors": sorted({o.error for o in failed if o.error})[:3],
            "batch_size": len(records),
            "left_for_retry": len(settlement.left),
            "dlq_send_failed": len(settlement.dlq_send_failed),
            "message_ids": sorted(settlement.left) or [r.message_id for r in records],
        },
    )
