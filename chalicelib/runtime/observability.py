"""Powertools Logger, Metrics (EMF, namespace `LookoutEdge`) and Tracer, built on first use,
and the body of the one middleware every handler runs in (`around_invocation`).

All of them are per-container values (`runtime/container.py`): `container.reset()` is a
new container for them too, so no test clears a metric set by hand.

A request that logs nothing and counts only per interval imports none of Powertools: the edge's
accepted path (its log bill and cold start, docs/performance.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chalicelib.runtime.container import per_container

NAMESPACE = "LookoutEdge"


@dataclass
class _Logging:
    """The container's loggers by service, and the current invocation's Lambda context keys,
    which every logger carries (also those built later in the invocation)."""

    loggers: dict[str, Any] = field(default_factory=dict)
    invocation_keys: dict[str, Any] = field(default_factory=dict)


@per_container
def _logging() -> _Logging:
    return _Logging()


def logger(service: str = "api") -> Any:
    """A JSON logger. Never give it an API key, the edge token or a DB password."""
    state = _logging()
    log = state.loggers.get(service)
    if log is None:
        from aws_lambda_powertools import Logger

        log = state.loggers.setdefault(service, Logger(service=f"lookout-edge-{service}"))
        log.append_keys(**state.invocation_keys)
    return log


def correlate(correlation_id: str | None) -> None:
    """The id the next log lines carry (the event id on the edge); builds no logger."""
    state = _logging()
    state.invocation_keys["correlation_id"] = correlation_id
    for log in list(state.loggers.values()):
        log.set_correlation_id(correlation_id)


@per_container
def metrics(service: str = "api") -> Any:
    """EMF metrics; the caller flushes them once per invocation.

    With its own metric set: Powertools' `Metrics` share one set per process (class
    attributes), which would outlive `container.reset()` and mix the services' metrics.
    """
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    name = f"lookout-edge-{service}"
    provider = AmazonCloudWatchEMFProvider(
        metric_set={}, dimension_set={}, namespace=NAMESPACE, metadata_set={}, service=name, default_dimensions={}
    )
    return Metrics(namespace=NAMESPACE, service=name, provider=provider)


def count(name: str, value: float = 1, service: str = "api", unit: str = "Count") -> None:
    metrics(service).add_metric(name=name, unit=unit, value=value)


# EMF takes at most 100 values of one metric in one line.
MAX_SAMPLES = 100


class IntervalCounts:
    """Counts summed in the container, and millisecond samples, written as one compact EMF line
    at most once per interval: one line per accepted request (or per delivered batch) would cost
    more log than the events themselves.

    The first flush writes at once; a metric reaching MAX_SAMPLES samples writes before its
    interval is over. Counts of a container Lambda retires before its next flush are lost (the
    queue's NumberOfMessagesSent and NumberOfMessagesDeleted are the exact counts).
    """

    def __init__(self, service: str, clock: Callable[[], float] = time.monotonic):
        self.service = service
        self.clock = clock
        self.counts: dict[str, int] = {}
        self.samples: dict[str, list[float]] = {}
        self.written_at: float | None = None

    def add(self, name: str, value: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value

    def add_sample(self, name: str, milliseconds: float) -> None:
        self.samples.setdefault(name, []).append(round(milliseconds))

    def line_if_due(self, interval: float) -> str | None:
        """The EMF line to write now, if any (and the counts start over)."""
        now = self.clock()
        full = any(len(values) >= MAX_SAMPLES for values in self.samples.values())
        if not (self.counts or self.samples) or (
            self.written_at is not None and now - self.written_at < interval and not full
        ):
            return None
        line = emf_line(self.counts, self.service, self.samples)
        self.counts, self.samples, self.written_at = {}, {}, now
        return line


def emf_line(counts: dict[str, int], service: str, samples: dict[str, list[float]] | None = None) -> str:
    """CloudWatch embedded metric format, as short as it can be: integer values, no spaces;
    samples are millisecond values, each list one metric."""
    samples = samples or {}
    definitions: list[dict[str, str]] = [{"Name": n} for n in counts]
    definitions += [{"Name": n, "Unit": "Milliseconds"} for n in samples]
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["service"]], "Metrics": definitions}],
        },
        "service": f"lookout-edge-{service}",
        **counts,
        **samples,
    }
    return json.dumps(document, separators=(",", ":"))


@per_container
def _interval_counts(service: str) -> IntervalCounts:
    return IntervalCounts(service)


def count_per_interval(name: str, value: int = 1, service: str = "api") -> None:
    """Count without a line per request: see IntervalCounts."""
    _interval_counts(service).add(name, value)


def sample_per_interval(name: str, milliseconds: float, service: str = "api") -> None:
    """A duration without a line per invocation: see IntervalCounts."""
    _interval_counts(service).add_sample(name, milliseconds)


def flush(service: str = "api") -> None:
    """Write the collected metrics as one EMF line (nothing when none were added, and nothing
    imported when nothing was counted), and the interval counts when their interval is over."""
    interval_counts = _interval_counts.peek(service)
    if interval_counts is not None:
        from chalicelib.runtime.config import settings

        line = interval_counts.line_if_due(settings().metrics_interval_seconds)
        if line is not None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    built = metrics.peek(service)
    if built is not None and built.provider.metric_set:
        built.flush_metrics()


def tracing_enabled() -> bool:
    """X-Ray is off unless a stage sets POWERTOOLS_TRACE_DISABLED=false (and `xray: true`)."""
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").strip().lower() not in ("1", "true")


@per_container
def tracer(service: str = "api") -> Any:
    """Powertools Tracer (patches botocore, so every AWS call is a subsegment)."""
    from aws_lambda_powertools import Tracer

    return Tracer(service=f"lookout-edge-{service}")


@contextmanager
def traced(name: str, service: str = "api") -> Iterator[None]:
    """An X-Ray subsegment around a handler's work; with tracing off, nothing is imported."""
    if not tracing_enabled():
        yield
        return
    with tracer(service).provider.in_subsegment(f"## {name}"):
        yield


@dataclass
class _Invocations:
    """How many invocations this container has begun: the first one is the cold start."""

    begun: int = 0


@per_container
def _invocations() -> _Invocations:
    return _Invocations()


def around_invocation(event: Any, get_response: Callable[[Any], Any], service: str) -> Any:
    """One invocation of any handler (HTTP route, SQS batch, schedule), as Powertools'
    `inject_lambda_context` + `log_metrics` would wrap it, for Chalice's "all" middleware.

    Every log line carries the Lambda request id, function and cold start; the previous
    invocation's correlation id is dropped; the metrics are flushed once, at the end,
    whether the handler returned or raised.
    """
    _begin(_lambda_context(event))
    try:
        return get_response(event)
    finally:
        flush(service)


def _lambda_context(event: Any) -> Any:
    """Chalice hands HTTP middleware a Request (`.lambda_context`; its `.context` is API
    Gateway's requestContext) and other middleware a Lambda event (`.context`)."""
    if hasattr(event, "lambda_context"):
        return event.lambda_context
    return getattr(event, "context", None)


def _begin(context: Any) -> None:
    invocations = _invocations()
    keys: dict[str, Any] = {"cold_start": invocations.begun == 0}
    invocations.begun += 1
    if context is not None:  # None when a handler is called directly (tests, bench)
        keys.update(
            function_name=getattr(context, "function_name", None),
            function_memory_size=getattr(context, "memory_limit_in_mb", None),
            function_arn=getattr(context, "invoked_function_arn", None),
            function_request_id=getattr(context, "aws_request_id", None),
        )
    state = _logging()
    state.invocation_keys.clear()
    state.invocation_keys.update(keys, correlation_id=None)
    for log in list(state.loggers.values()):
        log.append_keys(**state.invocation_keys)
