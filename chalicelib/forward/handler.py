"""One forwarder invocation: SQS records → sinks → settlement plan → SQS calls (CONTRACT §6, §11).

Partial batch failure, and why the handler settles messages itself
-------------------------------------------------------------------
Chalice's `on_sqs_message` does not turn on `ReportBatchItemFailures`, and without it
Lambda deletes the WHOLE batch when the handler returns, whatever it returns. So:

- when every message is settled (every destination took it, or its dead-letter or
  progress copy is safely sent), the handler returns and Lambda deletes the batch: the
  handler makes no DeleteMessageBatch of its own, which Lambda would repeat and SQS bill;
- when some must be retried, it deletes (DeleteMessageBatch) exactly the settled ones,
  hides each one left for a backoff period (ChangeMessageVisibility) and RAISES, so
  Lambda deletes nothing.

With `ReportBatchItemFailures` on, returning no failures and raising mean the same two
things, so the handler is safe with the setting on or off.

Destinations are called concurrently, so a batch costs about the slowest one's round trip;
each one's share goes in requests within its limits, one after the other (sinks/batching.py).
Their CPU work (mapping, encoding) is done first, in this thread, one sink after the other:
threads encoding side by side take turns at the interpreter lock and stretch each other's
network waits (docs/performance.md, fan-out).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from chalicelib.forward import settle
from chalicelib.forward.records import Record, parse_records
from chalicelib.forward.sinks import batching, registry
from chalicelib.forward.sinks.base import Envelope, Outcome, OutcomeKind, PreparedSink, Reason, Send, Sink, rejected
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.runtime.container import per_container
from chalicelib.runtime.observability import NAMESPACE, count, count_per_interval, logger, sample_per_interval

SERVICE = "forwarder"
# Lookout's counts keep the names of the forwarder's first release (alarms, dashboards, cost).
LOOKOUT_METRICS = {
    "forwarded": "delivered",
    "duplicate": "duplicate",
    "rejected": "rejected",
    "backend_latency": "latency",
}

# What a healthy forwarder counts, summed in the container and written once per metrics interval
# (a line per batch would be ~270 B of log per 10 events); every failure is counted at once,
# so alarms see it in the invocation's own line.
SUCCESS_COUNTS = frozenset({"forwarded", "duplicate"})


class BatchIncomplete(RuntimeError):
    """Raised so Lambda deletes nothing: some messages stay queued for a later try."""


def forward(event: dict[str, Any], remaining_ms: int | None = None) -> dict[str, Any]:
    """Deliver one SQS batch; raises BatchIncomplete when any message must be retried.

    `remaining_ms` is the Lambda context's time left: no request starts that could outlast it.
    """
    tally: Counter[str] = Counter()
    per_sink: dict[str, Counter[str]] = {}
    batching.invocation().deadline = None if remaining_ms is None else time.monotonic() + remaining_ms / 1000
    try:
        return _forward(event, tally, per_sink)
    finally:
        for name, value in tally.items():
            if name in SUCCESS_COUNTS:
                count_per_interval(name, value, SERVICE)
            elif name == "backend_latency":
                sample_per_interval(name, value, SERVICE)
            else:
                count(name, value, SERVICE)
        _flush_sink_metrics(per_sink)  # per-sink lines; the middleware flushes the rest once


def _forward(event: dict[str, Any], tally: Counter[str], per_sink: dict[str, Counter[str]]) -> dict[str, Any]:
    config = settings()
    queue_url, dlq_url = config.require("queue_url"), config.require("dlq_url")
    destinations = registry.sinks(config)
    records = parse_records(event)
    if not records:
        return {"batchItemFailures": []}
    _check_source_queue(records, queue_url)
    logger(SERVICE).set_correlation_id(records[0].message_id)

    outcomes = deliver(records, destinations, per_sink)
    verdicts = [
        settle.verdict(r, o, meant=any(_wants(s, r.signal) for s in destinations))
        for r, o in zip(records, outcomes, strict=True)
    ]
    policy = settle.RetryPolicy(config.retry_base_seconds, config.retry_max_seconds)
    settlement = settle.execute(settle.plan(records, verdicts, policy), queue_url, dlq_url)

    _tally(tally, per_sink, settlement)
    if settlement.left or any(v.action is not settle.Action.DELETE for v in verdicts):
        _log_failure(records, outcomes, verdicts, settlement)
    if settlement.left:
        raise BatchIncomplete(f"{len(settlement.left)} of {len(records)} messages left on the queue for retry")
    # Everything is settled; with ReportBatchItemFailures on, this reads as "no failures".
    return {"batchItemFailures": []}


def deliver(
    records: Sequence[Record], destinations: Sequence[Sink], per_sink: dict[str, Counter[str]]
) -> list[dict[str, Outcome]]:
    """Each usable record's outcome at each destination still to take it, all destinations at once."""
    work: list[tuple[Sink, list[int]]] = []
    for sink in destinations:
        pending = [
            i
            for i, r in enumerate(records)
            if r.envelope is not None
            and _wants(sink, r.signal)
            and sink.name not in r.delivered_to
            and sink.name not in r.refusals
        ]
        if pending:
            work.append((sink, pending))
    outcomes: list[dict[str, Outcome]] = [{} for _ in records]
    # Every destination's CPU work first, one after the other in this thread; then the threads
    # only wait on their sockets (threads encoding side by side lengthen each other's waits).
    jobs = [_prepared(sink, [records[i].envelope for i in pending]) for sink, pending in work]  # type: ignore[misc]
    answers = [_timed(*jobs[0])] if len(jobs) == 1 else list(_executor().map(lambda job: _timed(*job), jobs))
    for (sink, pending), (answered, elapsed_ms) in zip(work, answers, strict=True):
        per_sink[sink.name] = Counter({"latency": round(elapsed_ms)})
        for i, outcome in zip(pending, answered, strict=True):
            outcomes[i][sink.name] = outcome
            per_sink[sink.name][_metric_name(outcome)] += 1
            if outcome.reason in (Reason.REJECTED, Reason.AUTH_FAILED):
                per_sink[sink.name][outcome.reason.value] += 1
    return outcomes


def _prepared(sink: Sink, envelopes: list[Envelope]) -> tuple[Sink, Send, int, float]:
    """(sink, its send, how many events, ms spent preparing): a `PreparedSink` does its CPU work
    here; any other sink does all of it in `send`. A `prepare` that raises fails as `_timed` says."""
    if not isinstance(sink, PreparedSink):
        return sink, partial(sink.deliver, envelopes), len(envelopes), 0.0
    started = time.perf_counter()
    try:
        send = sink.prepare(envelopes)
    except Exception as exc:
        send = partial(_raise, exc)
    return sink, send, len(envelopes), (time.perf_counter() - started) * 1000


def _raise(exc: Exception) -> list[Outcome]:
    raise exc


def _timed(sink: Sink, send: Send, events: int, prepared_ms: float) -> tuple[list[Outcome], float]:
    """The sink's outcomes and how long it took (its preparation included). A sink that raises
    (its own bug, say a payload its mapping did not expect) refuses the batch: the events are
    dead-lettered for that sink alone, to be redriven once it is fixed, and the other
    destinations' outcomes still count."""
    started = time.perf_counter()
    try:
        answered = send()
    except Exception as exc:
        logger(SERVICE).exception("sink failed", extra={"sink": sink.name, "error": type(exc).__name__})
        answered = [rejected(Reason.SINK_ERROR, error=f"{type(exc).__name__} in sink {sink.name}")] * events
    return answered, prepared_ms + (time.perf_counter() - started) * 1000


def _metric_name(outcome: Outcome) -> str:
    if outcome.kind is OutcomeKind.REJECTED:
        return "refused"
    return "retried" if outcome.kind is OutcomeKind.RETRY else outcome.kind.value


@per_container
def _executor() -> ThreadPoolExecutor:
    """One pool per container: sinks wait on the network, so threads are enough."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="sink")


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


def _tally(tally: Counter[str], per_sink: dict[str, Counter[str]], settlement: settle.Settlement) -> None:
    """Message-level counts, plus Lookout's under the names its alarms and dashboards know."""
    lookout = per_sink.get(registry.LOOKOUT, Counter())
    for legacy, name in LOOKOUT_METRICS.items():
        if name in lookout:
            tally[legacy] += lookout[name]
    if lookout["auth_failed"]:
        tally["auth_failed"] += 1  # per batch: the token is wrong or unset
    for name, value in (
        ("dead_lettered", len(settlement.dead_lettered)),
        ("requeued", len(settlement.requeued)),
        ("retried", len(settlement.left)),
    ):
        if value:
            tally[name] += value


def _flush_sink_metrics(per_sink: dict[str, Counter[str]]) -> None:
    """One EMF line per sink beside Lookout, with a `sink` dimension (alarm on `refused`/`retried`)."""
    others = {name: counts for name, counts in per_sink.items() if name != registry.LOOKOUT}
    if not others:
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics

    for name, counts in others.items():
        metrics = EphemeralMetrics(namespace=NAMESPACE, service=f"lookout-edge-{SERVICE}")
        metrics.add_dimension(name="sink", value=name)
        for metric, value in counts.items():
            metrics.add_metric(name=metric, unit="Milliseconds" if metric == "latency" else "Count", value=value)
        metrics.flush_metrics()


def _log_failure(
    records: Sequence[Record],
    outcomes: list[dict[str, Outcome]],
    verdicts: Sequence[settle.Verdict],
    settlement: settle.Settlement,
) -> None:
    """One line per batch not fully delivered: statuses and reasons (sinks redact their secrets)."""
    failed = {(name, o) for by_sink in outcomes for name, o in by_sink.items() if not o.taken}
    logger(SERVICE).warning(
        "forward batch not fully delivered",
        extra={
            "statuses": sorted({o.status for _, o in failed if o.status is not None}),
            "reasons": sorted({reason for v in verdicts for reason in v.reasons}),
            "sinks": sorted({name for name, _ in failed}),
            "errors": sorted({o.error for _, o in failed if o.error})[:3],
            "batch_size": len(records),
            "left_for_retry": len(settlement.left),
            "copy_failed": len(settlement.copy_failed),
            "message_ids": sorted(settlement.left) or [r.message_id for r in records],
        },
    )
