"""Pooled HTTP for every outbound call (Lookout, sinks, remote config), and `Retry-After` parsing.

One urllib3 PoolManager per (connect, read) timeout pair and container: keep-alive
connections survive between invocations, which saves a TCP and TLS handshake per batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from chalicelib.runtime.container import per_container


@per_container
def pool(connect_timeout: float, read_timeout: float) -> Any:
    """Keep-alive connections reused across invocations of this container; no hidden retries."""
    import urllib3

    return urllib3.PoolManager(
        num_pools=8,
        maxsize=10,
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        retries=False,
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date; None when absent/garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
