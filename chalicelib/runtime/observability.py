"""Powertools Logger, Metrics (EMF, namespace `LookoutEdge`) and Tracer, built on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

NAMESPACE = "LookoutEdge"


@cache
def logger(service: str = "api") -> Any:
    """A JSON logger. Never give it an API key, the edge token or a DB password."""
    from aws_lambda_powertools import Logger

    return Logger(service=f"lookout-edge-{service}")


@cache
def metrics(service: str = "api") -> Any:
    """EMF metrics; the caller flushes them once per invocation."""
    from aws_lambda_powertools import Metrics

    return Metrics(namespace=NAMESPACE, service=f"lookout-edge-{service}")


def count(name: str, value: float = 1, service: str = "api", unit: str = "Count") -> None:
    metrics(service).add_metric(name=name, unit=unit, value=value)


def flush(service: str = "api") -> None:
    """Write the collected metrics as one EMF line (nothing when none were added)."""
    m = metrics(service)
    if m.metric_set:
        m.flush_metrics()


def tracing_enabled() -> bool:
    """X-Ray is off unless a stage sets POWERTOOLS_TRACE_DISABLED=false (and `xray: true`)."""
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").strip().lower() not in ("1", "true")


@cache
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
