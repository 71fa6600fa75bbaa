"""HTTP for every sink: one pooled POST, the answer as data, and the generic reading of a
whole-request answer (2xx taken, 4xx refused for good, 401/403/408/429/5xx and transport
errors retried), as the OpenTelemetry Collector's HTTP exporters classify theirs.

A 413 for several events is split in halves and sent again, so only an event too large on
its own is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from chalicelib.forward.sinks.base import Outcome, Reason, delivered, rejected, retry, short
from chalicelib.runtime import http_pool
from chalicelib.runtime.config import settings

AUTH_STATUSES = frozenset({401, 403})
TRANSIENT_STATUSES = frozenset({408, 429})
TOO_LARGE = 413
T = TypeVar("T")


@dataclass(frozen=True)
class HttpAnswer:
    """A destination's HTTP answer, or `error` ("timeout", "connection") when there was none."""

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str | None = None


def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[HttpAnswer, float]:
    """POST on the container's pool, no redirects, no hidden retries; (answer, elapsed ms)."""
    config = settings()
    pool = http_pool.pool(config.forward_connect_timeout, config.forward_read_timeout)
    import urllib3

    started = time.perf_counter()
    try:
        response = pool.request("POST", url, body=body, headers=dict(headers), redirect=False, retries=False)
        answer = HttpAnswer(response.status, response.data, response.headers.get("Retry-After"))
    except urllib3.exceptions.NewConnectionError:  # refused, DNS: checked first, it subclasses a timeout
        answer = HttpAnswer(None, error="connection")
    except urllib3.exceptions.TimeoutError:
        answer = HttpAnswer(None, error="timeout")
    except (urllib3.exceptions.HTTPError, OSError):
        answer = HttpAnswer(None, error="connection")
    return answer, (time.perf_counter() - started) * 1000


def transport_outcome(answer: HttpAnswer) -> Outcome:
    return retry(Reason.TIMEOUT if answer.error == "timeout" else Reason.CONNECTION)


def transient_outcome(answer: HttpAnswer) -> Outcome:
    """401/403 (credentials can be fixed), 408, 429, 5xx and anything unexpected: try again later."""
    assert answer.status is not None
    reason = Reason.AUTH_FAILED if answer.status in AUTH_STATUSES else Reason.HTTP_STATUS
    return retry(reason, answer.status, error_text(answer.body), http_pool.parse_retry_after(answer.retry_after))


def whole_request_outcome(answer: HttpAnswer) -> Outcome:
    """The outcome of every event of a request whose answer is about all of them at once."""
    status = answer.status
    if status is None:
        return transport_outcome(answer)
    if 200 <= status < 300:
        return delivered(status)
    if 400 <= status < 500 and status not in AUTH_STATUSES | TRANSIENT_STATUSES:
        return rejected(Reason.BATCH_REJECTED, status, error_text(answer.body))
    return transient_outcome(answer)


def split_when_too_large(
    events: Sequence[T], send: Callable[[Sequence[T]], tuple[HttpAnswer, list[Outcome]]]
) -> list[Outcome]:
    """`send` the events; on a 413 for several, send each half again (at most 2n - 1 requests)."""
    answer, outcomes = send(events)
    if answer.status == TOO_LARGE and len(events) > 1:
        half = len(events) // 2
        return split_when_too_large(events[:half], send) + split_when_too_large(events[half:], send)
    return outcomes


def error_text(body: bytes) -> str:
    """A destination's error for logs and DLQ attributes: its JSON `error`/`message`, else raw text."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            text = " ".join(str(parsed[k]) for k in ("error", "message") if parsed.get(k)) or text
    except ValueError:
        pass
    return short(text)
