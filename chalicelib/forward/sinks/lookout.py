"""The Lookout sink: `POST {backend}/api/ingest/edge` with the edge token (CONTRACT §6).

Everything Lookout-specific lives here: the request and answer formats, which statuses
are permanent, the edge token and its redaction. The token comes from
`LOOKOUT_INGEST_EDGE_TOKEN`, or from the SSM SecureString named by
`LOOKOUT_INGEST_EDGE_TOKEN_PARAM` (cached for `token_cache_seconds`, so a rotated token is
live within minutes without a deploy, and re-read at once after Lookout refused it).

A 413 for a combined batch is split in halves and retried, so only an event that is too
large on its own is dead-lettered, not the nine beside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.contract.envelope import dumps
from chalicelib.forward.sinks.base import (
    Envelope,
    Outcome,
    Reason,
    delivered,
    duplicate,
    rejected,
    retry,
    short,
)
from chalicelib.runtime import http, ssm
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.runtime.observability import logger

INGEST_PATH = "/api/ingest/edge"
# A whole request Lookout refuses for good (CONTRACT §6): retrying it cannot help.
PERMANENT_STATUSES = frozenset({400, 404, 413, 422})
AUTH_STATUSES = frozenset({401, 403})
TOO_LARGE = 413
_refresh_token = False


@dataclass(frozen=True)
class BackendAnswer:
    """Lookout's HTTP answer, or `error` ("timeout", "connection") when there was none."""

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str | None = None


class TokenUnavailable(RuntimeError):
    """No token could be read; the message names the setting, never a value."""


class LookoutSink:
    """Every signal, unless LOOKOUT_EDGE_LOOKOUT_SIGNALS narrows it."""

    def __init__(self, name: str = "lookout", signals: frozenset[str] | None = None) -> None:
        self.name = name
        self.signals = signals

    def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        try:
            token = edge_token()
        except TokenUnavailable as exc:
            logger("forwarder").error("edge token unavailable", extra={"reason": str(exc)})
            return [retry(Reason.TOKEN_UNAVAILABLE)] * len(envelopes)
        return self._post(envelopes, token)

    def _post(self, envelopes: Sequence[Envelope], token: str) -> list[Outcome]:
        answer, _ = post_events(request_body(envelopes), token)
        if answer.status == TOO_LARGE and len(envelopes) > 1:
            half = len(envelopes) // 2
            return self._post(envelopes[:half], token) + self._post(envelopes[half:], token)
        outcomes = classify(answer, [e["event_id"] for e in envelopes])
        return [_redacted(outcome, token) for outcome in outcomes]


def request_body(envelopes: Sequence[Envelope]) -> bytes:
    """`{"events": [...]}`: the queue messages with their payloads decoded back to JSON."""
    return dumps({"events": list(envelopes)}).encode()


def classify(answer: BackendAnswer, event_ids: Sequence[str]) -> list[Outcome]:
    """One outcome per event id, in order, from Lookout's answer to the request that held them."""
    status = answer.status
    if status is None:
        reason = Reason.TIMEOUT if answer.error == "timeout" else Reason.CONNECTION
        return [retry(reason)] * len(event_ids)
    if 200 <= status < 300:
        results = _results_by_event_id(answer.body)
        if results is None:
            return [retry(Reason.UNREADABLE_ANSWER, status)] * len(event_ids)
        return [_event_outcome(results.get(event_id), status) for event_id in event_ids]
    if status in PERMANENT_STATUSES:
        return [rejected(Reason.BATCH_REJECTED, status, _error_text(answer.body))] * len(event_ids)
    # 401/403/408/429/5xx are transient by contract; any other unexpected status is too, so
    # nothing Lookout did not clearly take or refuse is ever dropped.
    reason = Reason.AUTH_FAILED if status in AUTH_STATUSES else Reason.HTTP_STATUS
    after = http.parse_retry_after(answer.retry_after)
    return [retry(reason, status, _error_text(answer.body), after)] * len(event_ids)


def _results_by_event_id(body: bytes) -> dict[str, dict[str, Any]] | None:
    try:
        results = json.loads(body)["results"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(results, list):
        return None
    return {r["event_id"]: r for r in results if isinstance(r, dict) and isinstance(r.get("event_id"), str)}


def _event_outcome(result: dict[str, Any] | None, status: int) -> Outcome:
    if result is None:
        # Not in the results: Lookout did not say it took it, so it is not deleted.
        return retry(Reason.MISSING_RESULT, status)
    verdict = result.get("status")
    if verdict == "accepted":
        return delivered(status)
    if verdict == "duplicate":
        return duplicate(status)
    if verdict == "rejected":
        return rejected(Reason.REJECTED, status, str(result.get("error") or ""))
    return retry(Reason.UNKNOWN_RESULT, status)


def _error_text(body: bytes) -> str:
    """Lookout's error for logs and DLQ attributes: its JSON `error`/`message`, else raw text."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            text = " ".join(str(parsed[k]) for k in ("error", "message") if parsed.get(k)) or text
    except ValueError:
        pass
    return short(text)


def redact(text: str | None, secret: str | None) -> str | None:
    """Lookout may echo what it was sent; the token never leaves this sink."""
    if text and secret:
        return text.replace(secret, "[redacted]")
    return text


def _redacted(outcome: Outcome, token: str) -> Outcome:
    if not outcome.error or token not in outcome.error:
        return outcome
    return Outcome(outcome.kind, outcome.reason, outcome.status, redact(outcome.error, token), outcome.retry_after)


def edge_token() -> str:
    """The current edge token: the plain variable, else SSM with a short cache."""
    global _refresh_token
    config = settings()
    if config.token:
        return config.token
    if not config.token_param:
        raise ConfigError("set LOOKOUT_INGEST_EDGE_TOKEN or LOOKOUT_INGEST_EDGE_TOKEN_PARAM")
    try:
        token = ssm.secure_parameter(config.token_param, config.token_cache_seconds, force=_refresh_token)
    except ssm.ParameterUnavailable as exc:
        raise TokenUnavailable(str(exc)) from None
    _refresh_token = False
    return token


def post_events(body: bytes, token: str) -> tuple[BackendAnswer, float]:
    """POST the batch; the answer (or the transport error) and the time it took, in ms."""
    global _refresh_token
    config = settings()
    url = config.require("backend_url") + INGEST_PATH
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pool = http.pool(config.forward_connect_timeout, config.forward_read_timeout)
    import urllib3

    started = time.perf_counter()
    try:
        response = pool.request("POST", url, body=body, headers=headers, redirect=False, retries=False)
        answer = BackendAnswer(response.status, response.data, response.headers.get("Retry-After"))
    except urllib3.exceptions.NewConnectionError:  # refused, DNS: checked first, it subclasses a timeout
        answer = BackendAnswer(None, error="connection")
    except urllib3.exceptions.TimeoutError:
        answer = BackendAnswer(None, error="timeout")
    except (urllib3.exceptions.HTTPError, OSError):
        answer = BackendAnswer(None, error="connection")
    elapsed_ms = (time.perf_counter() - started) * 1000
    if answer.status in AUTH_STATUSES:
        # The token may have been rotated: read SSM again on the next batch instead of in 5 minutes.
        _refresh_token = True
    return answer, elapsed_ms


def reset() -> None:
    """Forget pooled connections and cached providers (what a new container starts from)."""
    global _refresh_token
    _refresh_token = False
    http.reset()
    ssm.reset()
