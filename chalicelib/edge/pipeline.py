"""The ingest path, common to every way in: events in, a 202 body out once they are in SQS.

    route (signal decided once) → decoder (body → `Event`s) → accept():
        per-event checks → key → idempotency → rate limit → queue messages → enqueue

`accept(request, signal, events, many=..., api_key=..., idempotency_key=...)` is what
every door calls after its decoder: it returns the 202 body (`event_id` or
`event_ids`, `run_id`/`check_in_id`, `config_version`) or raises `EdgeError`.
`handle(request, signal)` is the SDK door (JSON/NDJSON), `refusal(signal, error)` the
logged contract error every door answers with (a door may reshape its body).

A door that finds the key its own way (Firehose's `X-Amz-Firehose-Access-Key`) passes
`api_key`; otherwise the CONTRACT §3 sources apply (headers, then the first event's
`api_key`). Likewise `idempotency_key` (Firehose: `X-Amz-Firehose-Request-Id`)
replaces the `Idempotency-Key` header.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.contract import envelope
from chalicelib.contract.errors import EdgeError, bad_request, unavailable
from chalicelib.contract.keys_item import KeyRecord, hash_key
from chalicelib.contract.signals import SIGNALS, Signal, check_event, check_event_count
from chalicelib.edge import auth, enqueue, idempotency, ratelimit, remote_config
from chalicelib.edge.decoders import Event, firehose, sdk_json
from chalicelib.edge.keys import KeyStoreUnavailable, key_cache
from chalicelib.runtime.config import settings
from chalicelib.runtime.observability import correlate, count, count_per_interval, logger

# From the start of `accept`, how long the edge keeps resending what SQS did not confirm. The
# PHP SDK gives up after 5 s; this leaves room for the cold start, the key lookup and one more
# SQS call (the client's own timeouts) before the answer.
ENQUEUE_BUDGET_SECONDS = 3.0


@dataclass(frozen=True)
class IngestRequest:
    """What the edge needs of an HTTP request; `headers` keys are lowercase.

    `path` is the route's path as CONTRACT §5 puts it in the message (`/api/ingest/log`).
    """

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


def handle(request: IngestRequest, signal: Signal) -> Reply:
    """An SDK route: JSON or NDJSON body → 202, or the contract's JSON error. Never raises EdgeError."""
    try:
        headers = request.headers
        body = sdk_json.decode(request.body, headers.get("content-type"), headers.get("content-encoding"))
        return Reply(202, accept(request, signal, body.events, many=body.many))
    except EdgeError as error:
        return refusal(signal, error)


def handle_delivery(request: IngestRequest, signal_name: str) -> Reply:
    """`POST /api/firehose/{signal}`: 200 with the spec's body once every event is in SQS,
    else the contract's status with `errorMessage`. Never raises EdgeError.

    The delivery's request id is the log lines' correlation id (the spec asks endpoints to log it).
    """
    headers = request.headers
    request_id = firehose.header_request_id(headers)
    correlate(request_id or None)
    try:
        signal = SIGNALS.get(signal_name) if signal_name in firehose.SIGNALS else None
        if signal is None:
            raise EdgeError(404, "not_found", f"no Firehose route at {request.path}")
        body = firehose.load_request(request.body, headers.get("content-encoding"))
        request_id = firehose.request_id_of(body, headers)
        delivery = firehose.decode_delivery(body, headers, signal.name)
        accept_delivery(
            request,
            signal,
            delivery.events,
            api_key=(headers.get(firehose.ACCESS_KEY_HEADER) or "").strip() or None,
            delivery_id=firehose.header_request_id(headers),
            carried=firehose.carried_headers(headers),
        )
        return Reply(200, firehose.success_body(request_id))
    except EdgeError as error:
        reply = refusal(signal_name, error)
        return Reply(reply.status, firehose.error_body(request_id, error), reply.headers)


def refusal(signal: Signal | str, error: EdgeError) -> Reply:
    """The contract's answer to a refused request, counted and logged once."""
    name = signal if isinstance(signal, str) else signal.name
    count(f"rejected_{error.status}")
    logger().info("ingest refused", extra={"signal": name, "status": error.status, "error": error.code})
    return error_reply(error)


def check_events(signal: Signal, events: list[Event]) -> None:
    """The checks every way in shares: the request cap, then each event's size and shape."""
    if not events:
        raise bad_request("the request holds no events")
    check_event_count(len(events))
    for event in events:
        check_event(signal, event.payload, event.size, event.where)


def accept(
    request: IngestRequest,
    signal: Signal,
    events: list[Event],
    *,
    many: bool,
    api_key: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Check, authenticate and durably enqueue `events`; the 202 body, or EdgeError.

    `many`: the body lists `event_ids` (NDJSON, batches) rather than one `event_id`.
    """
    deadline = time.monotonic() + ENQUEUE_BUDGET_SECONDS
    check_events(signal, events)
    record = authenticate(request, signal, api_key or auth.extract_api_key(request.headers, events[0].payload))
    conf = settings()
    body = plan_reply(signal, events, many)
    correlate(body.get("event_id") or body["event_ids"][0])
    config_version = remote_config.cached_version(record.key_hash)
    if config_version is not None:
        body["config_version"] = config_version
    if idempotency_key is None:
        idempotency_key = (request.headers.get("idempotency-key") or "").strip() or None

    def messages_for(stored: dict[str, Any]) -> list[enqueue.OutgoingMessage]:
        if len(stored.get("event_ids") or [stored.get("event_id")]) != len(events):  # a claim from before fingerprints
            raise EdgeError(422, "idempotency_mismatch", "this Idempotency-Key was used for a different request")
        return build_messages(request, signal, record, events, stored, idempotency_key)

    body = _enqueue_once(conf, request, signal, record, events, idempotency_key, body, messages_for, deadline)
    count_per_interval("accepted", len(events))
    if _sampled(conf.log_accepted_share):
        event_ids = body.get("event_ids") or [body.get("event_id")]
        logger().info(
            "ingest accepted",
            extra={"signal": signal.name, "status": 202, "project_id": record.project_id, "event_ids": event_ids},
        )
    return body


def accept_delivery(
    request: IngestRequest,
    signal: Signal,
    events: list[Event],
    *,
    api_key: str | None,
    delivery_id: str,
    carried: Mapping[str, str],
) -> None:
    """A Firehose delivery (CONTRACT §9): checked and authenticated as `accept` does, then
    every event durably enqueued, or EdgeError.

    Unlike `accept`: up to 10,000 events (the decoder's cap), none at all is fine (a
    delivery of CloudWatch Logs control messages), and the delivery's request id is its
    idempotency key. The record keeps only the first attempt's time and the event count;
    the event ids derive from them (`envelope.stable_ulids`), so a retry after a partial
    enqueue sends what is missing under the same ids, and the record stays a few hundred
    bytes whatever the delivery's size.
    """
    deadline = time.monotonic() + ENQUEUE_BUDGET_SECONDS
    for event in events:
        check_event(signal, event.payload, event.size, event.where)
    first = events[0].payload if events else None
    record = authenticate(request, signal, api_key or auth.extract_api_key(request.headers, first))
    if not events:
        return
    conf = settings()

    def messages_for(stored: dict[str, Any]) -> list[enqueue.OutgoingMessage]:
        if not delivery_id:  # not Firehose itself: fresh ids, nothing to deduplicate by
            return build_messages(request, signal, record, events, stored, None, carried)
        if stored.get("events") != len(events):
            raise EdgeError(422, "idempotency_mismatch", "this request id was used for a different delivery")
        ids = envelope.stable_ulids(delivery_id, stored["first_seen_ms"], len(events))
        return build_messages(request, signal, record, events, {"event_ids": ids}, delivery_id, carried)

    if delivery_id:
        planned: dict[str, Any] = {"first_seen_ms": firehose.now_ms(), "events": len(events)}
    else:
        planned = {"event_ids": [envelope.new_ulid() for _ in events]}
    key = f"firehose:{delivery_id}" if delivery_id else None
    _enqueue_once(conf, request, signal, record, events, key, planned, messages_for, deadline)
    count_per_interval("accepted", len(events))
    if _sampled(conf.log_accepted_share):
        logger().info(
            "firehose delivery accepted",
            extra={"signal": signal.name, "status": 200, "project_id": record.project_id, "events": len(events)},
        )


def _sampled(share: float) -> bool:
    """Whether this accepted request gets its log line (LOOKOUT_EDGE_LOG_ACCEPTED_SHARE, default 0)."""
    if share <= 0:
        return False
    import random

    return share >= 1 or random.random() < share


def authenticate(request: IngestRequest, signal: Signal, raw_key: str | None) -> KeyRecord:
    """401/402/403/503 as the contract says; the raw key goes no further than here."""
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
        raise EdgeError(403, "signal_disabled", f"the {signal.name} signal is disabled for this project")
    return record


def _enforce_rate_limit(table: str, record: KeyRecord, events: int, deadline: float) -> None:
    now = time.time()
    try:
        limit = record.rate_limit_per_minute or 0
        over = ratelimit.over_limit(table, record.project_id, limit, events, now, deadline)
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


def plan_reply(signal: Signal, events: list[Event], many: bool) -> dict[str, Any]:
    """The 202 body with fresh ids: one ULID per event, and the job/cron id a single event needs."""
    event_ids = [envelope.new_ulid() for _ in events]
    if many:
        return {"event_ids": event_ids, "status": "accepted"}
    body: dict[str, Any] = {"event_id": event_ids[0], "status": "accepted"}
    if signal.id_field is not None:
        body[signal.id_field] = signal.given_id(events[0].payload) or envelope.new_ulid()
    return body


def build_messages(
    request: IngestRequest,
    signal: Signal,
    record: KeyRecord,
    events: list[Event],
    reply: dict[str, Any],
    idempotency_key: str | None,
    carried: Mapping[str, str] | None = None,
) -> list[enqueue.OutgoingMessage]:
    """One queue message per event (CONTRACT §5), under the final ids of the 202 body `reply`.

    `headers` holds the request's `X-Lookout-*` headers and the door's `carried` ones.
    """
    headers = request.headers
    received_at = envelope.utc_now_iso()
    sdk_headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-lookout-")}
    sdk_headers.update(carried or {})
    event_ids = reply.get("event_ids") or [reply["event_id"]]
    messages = []
    for event_id, event in zip(event_ids, events, strict=True):
        message: dict[str, Any] = {
            "v": envelope.VERSION,
            "event_id": event_id,
            "signal": signal.name,
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
            "payload": envelope.strip_api_key(event.payload),
        }
        assigned = signal.id_field is not None and signal.id_field in reply
        if assigned and signal.given_id(event.payload) is None:
            message["assigned_ids"] = {signal.id_field: reply[signal.id_field]}
        messages.append(
            enqueue.OutgoingMessage(
                body=envelope.encode_message(message), signal=signal.name, project_id=record.project_id
            )
        )
    return messages


def _enqueue_once(
    conf: Any,
    request: IngestRequest,
    signal: Signal,
    record: KeyRecord,
    events: list[Event],
    idempotency_key: str | None,
    planned: dict[str, Any],
    messages_for: Callable[[dict[str, Any]], list[enqueue.OutgoingMessage]],
    deadline: float,
) -> dict[str, Any]:
    """Replay, rate limit, enqueue: the common end of every door; the body the client gets.

    Under an idempotency key, the claim is taken with the `planned` body first, so a replay
    is answered from its record before the rate limit is spent (a request refused with 429
    leaves the key unused); taking over a partial claim uses the stored body instead.
    `messages_for(body)` builds the messages once, under the ids the body gives.
    """
    claim = None
    if idempotency_key:
        claim = _claim(conf, request, signal, record, events, idempotency_key, planned)
        if claim.done:
            count_per_interval("idempotent_replays")
            return claim.body
        planned = claim.body
    if record.rate_limit_per_minute is not None:
        try:
            _enforce_rate_limit(conf.idempotency_table, record, len(events), deadline)
        except EdgeError:
            if claim is not None:
                _quietly("forget the refused claim", idempotency.forget, conf.idempotency_table, claim)
            raise
    messages = messages_for(planned)
    try:
        _enqueue(conf.queue_url, messages, deadline, frozenset(claim.sent) if claim else frozenset())
    except enqueue.EnqueueFailed as failure:
        if claim is not None:
            _quietly("record the partial enqueue", idempotency.release, conf.idempotency_table, claim, failure.sent)
        raise _queue_down(failure, claim is not None) from None
    if claim is not None:
        # The events are in SQS: the answer is 202 whatever happens here. An unfinished claim is
        # taken over by a replay after ABANDONED_AFTER seconds and resent under the same event
        # ids, which the backend stores once.
        _quietly("mark the idempotency claim done", idempotency.finish, conf.idempotency_table, claim)
    return planned


def _enqueue(
    queue_url: str | None, messages: list[enqueue.OutgoingMessage], deadline: float, skip: frozenset[int]
) -> None:
    if not queue_url:
        logger().error("LOOKOUT_EDGE_QUEUE_URL is not set")
        raise unavailable("the edge has no queue configured")
    try:
        enqueue.send_messages(queue_url, messages, deadline, skip)
    except enqueue.EnqueueFailed:
        raise
    except Exception as exc:  # client construction, credentials
        raise enqueue.EnqueueFailed(type(exc).__name__, set(skip)) from exc


def request_fingerprint(request: IngestRequest, signal: Signal, events: list[Event]) -> str:
    """Route and body hash: what makes two requests under one Idempotency-Key the same request.

    Over the decoded events (without `api_key`), so a retry that compresses differently
    or sends the key another way is still the same request.
    """
    digest = hashlib.sha256(f"{request.path}\n{signal.name}\n".encode())
    for event in events:
        digest.update(envelope.dumps(envelope.strip_api_key(event.payload)).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _claim(
    conf: Any,
    request: IngestRequest,
    signal: Signal,
    record: KeyRecord,
    events: list[Event],
    idempotency_key: str,
    planned: dict[str, Any],
) -> idempotency.Claim:
    """The key's claim for this request (409, 422 or 503 when it cannot be had)."""
    fingerprint = request_fingerprint(request, signal, events)
    try:
        table, project = conf.idempotency_table, record.project_id
        return idempotency.claim_or_wait(table, project, idempotency_key, planned, fingerprint)
    except idempotency.FingerprintMismatch:
        raise EdgeError(
            422, "idempotency_mismatch", "this Idempotency-Key was used for a different request (route or body)"
        ) from None
    except idempotency.ClaimBusy:
        raise EdgeError(
            409, "idempotency_conflict", "a request with this Idempotency-Key is still being processed", retry_after=1
        ) from None
    except Exception as exc:
        logger().warning("idempotency store unavailable", extra={"reason": type(exc).__name__})
        raise unavailable("the idempotency store is unavailable; retry shortly") from None


def _quietly(what: str, step: Callable[..., None], *args: Any) -> None:
    """Bookkeeping whose failure must not change the answer (the claim expires on its own)."""
    try:
        step(*args)
    except Exception as exc:
        logger().warning(f"could not {what}", extra={"reason": type(exc).__name__})


def _queue_down(failure: enqueue.EnqueueFailed, idempotent: bool) -> EdgeError:
    """503, honest about what may be in the queue already."""
    logger().error(
        "enqueue failed",
        extra={"reason": str(failure), "sent": len(failure.sent), "unconfirmed": len(failure.unconfirmed)},
    )
    if not failure.sent and not failure.unconfirmed:
        return unavailable("the event queue is unavailable; nothing was accepted, retry shortly")
    retry = (
        "retry with the same Idempotency-Key: only the rest is sent, under the same event ids"
        if idempotent
        else "a retry may store some events twice; send an Idempotency-Key to avoid that"
    )
    return unavailable(f"the event queue did not confirm every event; some may have been accepted: {retry}")


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
