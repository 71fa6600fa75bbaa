"""Powertools Logger and Metrics (EMF, namespace `LookoutEdge`), built on first use."""

from __future__ import annotations

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
