"""The Lookout sink: `POST {backend}/api/ingest/edge` with the edge token (CONTRACT §6).

Everything Lookout-specific lives here: the request and answer formats, which statuses
are permanent, the edge token and its redaction. The token comes from
`LOOKOUT_INGEST_EDGE_TOKEN`, or from the SSM SecureString named by
`LOOKOUT_INGEST_EDGE_TOKEN_PARAM` (cached for `token_cache_seconds`, so a rotated token is
live within minutes without a deploy, and re-read at once after Lookout refused it).

A batch goes in requests of at most 100 events and about 1 MiB (sinks/batching.py). A 413
for a combined request is split in halves and retried, so only an event that is too large
on its own is dead-lettered, not the others beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.contract.envelope import dumps
from chalicelib.forward.sinks.base import Envelope, Outcome, Reason, delivered, duplicate, rejected, retry
from chalicelib.forward.sinks.batching import MIB, Limits, deliver_in_requests, sizes_of
from chalicelib.forward.sinks.http_post import (
    AUTH_STATUSES,
    HttpAnswer,
    error_text,
    post,
    transient_outcome,
    transport_outcome,
)
from chalicelib.runtime import ssm
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.runtime.container import per_container
from chalicelib.runtime.observability import logger

INGEST_PATH = "/api/ingest/edge"
# A whole request Lookout refuses for good (CONTRACT §6): retrying it cannot help.
PERMANENT_STATUSES = frozenset({400, 404, 413, 422})
# CONTRACT §6: up to 100 events and about 1 MiB per request (the Cloudflare consumer's batch).
LIMITS = Limits(max_events=100, max_bytes=MIB)


@dataclass
class TokenState:
    """Set when Lookout refused the token: the next batch re-reads SSM instead of its cache."""

    refresh: bool = False


@per_container
def token_state() -> TokenState:
    return TokenState()


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

        events = [encoded(e) for e in envelopes]  # each encoded once (or spliced): its size, then its request's body

        def send(batch: Sequence[int]) -> tuple[HttpAnswer, list[Outcome]]:
            answer, _ = post_events(spliced_body([events[i] for i in batch]), token)
            event_ids = [envelopes[i]["event_id"] for i in batch]
            return answer, [_redacted(o, token) for o in classify(answer, event_ids)]

        return deliver_in_requests(self.name, LIMITS, sizes_of(events), send)


def request_body(envelopes: Sequence[Envelope]) -> bytes:
    """`{"events": [...]}`: the queue messages with their payloads decoded back to JSON."""
    return spliced_body([encoded(e) for e in envelopes])


def encoded(envelope: Envelope) -> str:
    """The message as compact ASCII JSON: its SQS body as received when that body already is
    this JSON (payload inline, `Envelope.source`), else encoded here."""
    return getattr(envelope, "source", None) or dumps(envelope)


def spliced_body(events: Sequence[str]) -> bytes:
    """`{"events": [...]}` from events already encoded (compact ASCII JSON, as `dumps` writes)."""
    return ('{"events":[' + ",".join(events) + "]}").encode()


def classify(answer: HttpAnswer, event_ids: Sequence[str]) -> list[Outcome]:
    """One outcome per event id, in order, from Lookout's answer to the request that held them."""
    status = answer.status
    if status is None:
        return [transport_outcome(answer)] * len(event_ids)
    if 200 <= status < 300:
        results = _results_by_event_id(answer.body)
        if results is None:
            return [retry(Reason.UNREADABLE_ANSWER, status)] * len(event_ids)
        return [_event_outcome(results.get(event_id), status) for event_id in event_ids]
    if status in PERMANENT_STATUSES:
        return [rejected(Reason.BATCH_REJECTED, status, error_text(answer.body))] * len(event_ids)
    # 401/403/408/429/5xx are transient by contract; any other unexpected status is too, so
    # nothing Lookout did not clearly take or refuse is ever dropped.
    return [transient_outcome(answer)] * len(event_ids)


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
    config = settings()
    if config.token:
        return config.token
    if not config.token_param:
        raise ConfigError("set LOOKOUT_INGEST_EDGE_TOKEN or LOOKOUT_INGEST_EDGE_TOKEN_PARAM")
    try:
        token = ssm.secure_parameter(config.token_param, config.token_cache_seconds, force=token_state().refresh)
    except ssm.ParameterUnavailable as exc:
        raise TokenUnavailable(str(exc)) from None
    token_state().refresh = False
    return token


def post_events(body: bytes, token: str) -> tuple[HttpAnswer, float]:
    """POST the batch; the answer (or the transport error) and the time it took, in ms."""
    url = settings().require("backend_url") + INGEST_PATH
    answer, elapsed_ms = post(url, body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    if answer.status in AUTH_STATUSES:
        # The token may have been rotated: read SSM again on the next batch instead of in 5 minutes.
        token_state().refresh = True
    return answer, elapsed_ms
