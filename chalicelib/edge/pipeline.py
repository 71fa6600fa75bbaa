"""The ingest path: one request in, one answer out (202 only once the events are in SQS).

Pure checks first (path, body, shape), then the key, then the remote calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.contract import envelope
from chalicelib.contract.errors import EdgeError, bad_request, unavailable
from chalicelib.contract.signals import ASSIGNED_ID_FIELDS, check_shape, signal_for_path
from chalicelib.edge import auth, enqueue, idempotency, ratelimit, remote_config
from chalicelib.edge.bodies import parse_body
from chalicelib.edge.keys import KeyRecord, KeyStoreUnavailable, hash_key, key_cache
from chalicelib.runtime.config import settings
from chalicelib.runtime.observability import correlate, count, count_per_interval, logger


@dataclass(frozen=True)
class IngestRequest:
    """What the edge needs of an HTTP request; `headers` keys are lowercase."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    client_ip: str | None


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def error_reply(error: EdgeError) -> Reply:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    return Reply(error.status, error.body(), headers)


def handle(request: IngestRequest) -> Reply:
    """Answer one ingest request; never raises."""
    signal = signal_for_path(request.path)
    if signal is None:
        return Reply(404, {"error": "not_found", "message": f"no ingest route at {request.path}"})
    try:
        return _accept(request, signal)
    except EdgeError as error:
        count(f"rejected_{error.status}")
        logger().info("ingest refused", extra={"signal": signal, "status": error.status, "error": error.code})
        return error_reply(error)


def _accept(request: IngestRequest, signal: str) -> Reply:
    headers = request.headers
    parsed = parse_body(request.body, headers.get("content-type"), headers.get("content-encoding"))
    for number, event in enumerate(parsed.events, start=1):
        if parsed.ndjson and not isinstance(event, dict):
            raise bad_request(f"line {number} must be a JSON object")
        if not parsed.ndjson:
            check_shape(signal, event)

    record = authenticate(request, signal, parsed.events[0])
    conf = settings()
    if record.rate_limit_per_minute is not None:
        _enforce_rate_limit(conf.idempotency_table, record, len(parsed.events))

    body, messages = build_messages(request, signal, record, parsed.events, parsed.ndjson)
    correlate(body.get("event_id") or body["event_ids"][0])
    config_version = remote_config.cached_version(record.key_hash)
    if config_version is not None:
        body["config_version"] = config_version
    idempotency_key = (headers.get("idempotency-key") or "").strip() or None
    if idempotency_key:
        body = _enqueue_once(conf, record, idempotency_key, body, messages)
    else:
        try:
            _enqueue(conf.queue_url, messages)
        except enqueue.EnqueueFailed as failure:
            raise _queue_down(failure) from None
    count_per_interval("accepted", len(messages))
    if _sampled(conf.log_accepted_share):
        event_ids = body.get("event_ids") or [body.get("event_id")]
        logger().info(
            "ingest accepted",
            extra={"signal": signal, "status": 202, "project_id": record.project_id, "event_ids": event_ids},
        )
    return Reply(202, body)


def _sampled(share: float) -> bool:
    """Whether this accepted request gets its log line (LOOKOUT_EDGE_LOG_ACCEPTED_SHARE, default 0)."""
    if share <= 0:
        return False
    import random

    return share >= 1 or random.random() < share


def authenticate(request: IngestRequest, signal: str, first_event: Any) -> KeyRecord:
    """401/402/403/503 as the contract says; the raw key goes no further than here."""
    raw_key = auth.extract_api_key(request.headers, first_event)
    if raw_key is None:
        raise EdgeError(401, "missing_api_key", "no API key: send X-Api-Key, a Bearer token or api_key in the body")
    try:
        record = key_cache().get(hash_key(raw_key))
    except KeyStoreUnavailable:
        raise unavailable("the key store is unavailable; retry shortly") from None
    if record is None:
        raise EdgeError(401, "invalid_api_key", "the API key is not known to this edge")
    if not record.billing_ok:
        raise EdgeError(402, "billing_required", "the organization's billing is not in good standing")
    if not auth.ip_allowed(request.client_ip, record.ip_allowlist):
        raise EdgeError(403, "ip_not_allowed", "the client IP address is not in the organization's ingest allowlist")
    forced = request.headers.get("x-lookout-env-forced", "").strip() == "1"
    if not auth.signal_enabled(record, signal, forced):
        raise EdgeError(403, "signal_disabled", f"the {signal} signal is disabled for this project")
    return record


def _enforce_rate_limit(table: str, record: KeyRecord, events: int) -> None:
    now = time.time()
    try:
        over = ratelimit.over_limit(table, record.project_id, record.rate_limit_per_minute or 0, events, now)
    except Exception:
        logger().warning("rate counter unavailable; letting the request through")
        return
    if over:
        raise EdgeError(
            429,
            "rate_limited",
            f"the project is over its limit of {record.rate_limit_per_minute} events per minute",
            retry_after=ratelimit.seconds_to_next_minute(now),
        )


def build_messages(
    request: IngestRequest, signal: str, record: KeyRecord, events: list[Any], ndjson: bool
) -> tuple[dict[str, Any], list[enqueue.OutgoingMessage]]:
    """The 202 body and one queue message per event (CONTRACT §3 and §5)."""
    headers = request.headers
    received_at = envelope.utc_now_iso()
    sdk_headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-lookout-")}
    idempotency_key = (headers.get("idempotency-key") or "").strip() or None
    event_ids = [envelope.new_ulid() for _ in events]
    body: dict[str, Any] = (
        {"event_ids": event_ids, "status": "accepted"} if ndjson else {"event_id": event_ids[0], "status": "accepted"}
    )
    messages = []
    for event_id, event in zip(event_ids, events, strict=False):
        message: dict[str, Any] = {
            "v": envelope.VERSION,
            "event_id": event_id,
            "signal": signal,
            "path": request.path,
            "project_id": record.project_id,
            "organization_id": record.organization_id,
            "key_id": record.key_id,
            "received_at": received_at,
            "client_ip": request.client_ip,
            "user_agent": headers.get("user-agent") or None,
            "idempotency_key": idempotency_key,
            "headers": sdk_headers,
            "payload_encoding": "json",
            "payload": envelope.strip_api_key(event),
        }
        id_field = ASSIGNED_ID_FIELDS.get(signal)
        if id_field and not ndjson:
            given = event.get(id_field) if isinstance(event, dict) else None
            if isinstance(given, (str, int)) and str(given).strip():
                body[id_field] = str(given)
            else:
                body[id_field] = envelope.new_ulid()
                message["assigned_ids"] = {id_field: body[id_field]}
        messages.append(
            enqueue.OutgoingMessage(body=envelope.encode_message(message), signal=signal, project_id=record.project_id)
        )
    return body, messages


def _enqueue(
    queue_url: str | None, messages: list[enqueue.OutgoingMessage], skip: frozenset[int] = frozenset()
) -> None:
    if not queue_url:
        logger().error("LOOKOUT_EDGE_QUEUE_URL is not set")
        raise unavailable("the edge has no queue configured")
    try:
        enqueue.send_messages(queue_url, messages, skip)
    except enqueue.EnqueueFailed:
        raise
    except Exception as exc:  # client construction, credentials
        raise enqueue.EnqueueFailed(type(exc).__name__, set(skip)) from exc


def _enqueue_once(
    conf: Any, record: KeyRecord, idempotency_key: str, body: dict[str, Any], messages: list
) -> dict[str, Any]:
    """Enqueue under an idempotency key: a replay returns the stored body and sends nothing."""
    try:
        claim = idempotency.claim_or_wait(conf.idempotency_table, record.project_id, idempotency_key, body)
    except idempotency.ClaimBusy:
        raise EdgeError(
            409, "idempotency_conflict", "a request with this Idempotency-Key is still being processed", retry_after=1
        ) from None
    except Exception as exc:
        logger().warning("idempotency store unavailable", extra={"reason": type(exc).__name__})
        raise unavailable("the idempotency store is unavailable; retry shortly") from None
    if claim.done:
        return claim.body
    if claim.body != body:  # taking over a partial claim: resend under the stored event ids
        body, messages = _rebuild_with_ids(claim.body, messages)
    try:
        _enqueue(conf.queue_url, messages, frozenset(claim.sent))
    except enqueue.EnqueueFailed as failure:
        _release_quietly(conf.idempotency_table, claim, failure.sent)
        raise _queue_down(failure) from None
    try:
        idempotency.finish(conf.idempotency_table, claim)
    except Exception as exc:
        # The events are in SQS: the answer is 202. An unfinished claim is taken over by a
        # replay after ABANDONED_AFTER seconds and resent under the same event ids, which
        # the backend stores once.
        logger().warning("could not mark the idempotency claim done", extra={"reason": type(exc).__name__})
    return body


def _rebuild_with_ids(stored: dict[str, Any], messages: list[enqueue.OutgoingMessage]) -> tuple[dict[str, Any], list]:
    ids = stored.get("event_ids") or [stored["event_id"]]
    if len(ids) != len(messages):
        raise EdgeError(422, "idempotency_mismatch", "this Idempotency-Key was used for a different request")
    rebuilt = []
    for event_id, message in zip(ids, messages, strict=False):
        decoded = json.loads(message.body)
        decoded["event_id"] = event_id
        for field_name in ASSIGNED_ID_FIELDS.values():
            if field_name in stored and "assigned_ids" in decoded:
                decoded["assigned_ids"] = {field_name: stored[field_name]}
        rebuilt.append(enqueue.OutgoingMessage(envelope.dumps(decoded), message.signal, message.project_id))
    return stored, rebuilt


def _release_quietly(table: str, claim: idempotency.Claim, sent: set[int]) -> None:
    try:
        idempotency.release(table, claim, sent)
    except Exception:
        logger().warning("could not record the partial enqueue; the claim expires on its own")


def _queue_down(failure: enqueue.EnqueueFailed) -> EdgeError:
    logger().error("enqueue failed", extra={"reason": str(failure), "sent": len(failure.sent)})
    return unavailable("the event queue is unavailable; nothing was accepted, retry shortly")


def config_request(headers: Mapping[str, str]) -> tuple[int, bytes, dict[str, str]]:
    """`GET /api/config`: 401 for unknown keys without asking Lookout, else the cached proxy."""
    raw_key = auth.extract_api_key(headers, None)
    if raw_key is None:
        return _raw_error(EdgeError(401, "missing_api_key", "no API key: send X-Api-Key"))
    key_hash = hash_key(raw_key)
    try:
        record = key_cache().get(key_hash)
    except KeyStoreUnavailable:
        if remote_config.cached_version(key_hash) is None:
            return _raw_error(unavailable("the key store is unavailable; retry shortly"))
        record = None  # seen and served before: the cached config may still answer
    else:
        if record is None:
            return _raw_error(EdgeError(401, "invalid_api_key", "the API key is not known to this edge"))
    answer = remote_config.config_cache().get(key_hash, raw_key, headers.get("x-lookout-env-overrides"))
    extra = {"Retry-After": "30"} if answer.status == 503 else {}
    if answer.stale:
        extra["X-Lookout-Config-Stale"] = "1"
    return answer.status, answer.body, extra


def _raw_error(error: EdgeError) -> tuple[int, bytes, dict[str, str]]:
    reply = error_reply(error)
    return reply.status, json.dumps(reply.body).encode(), reply.headers
