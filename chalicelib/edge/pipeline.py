"""The accept path, common to every door: a decoded `Batch` in, its events durably in SQS out.

    door.decode() → accept(request, batch):
        per-event checks → key → idempotency → rate limit → queue messages → enqueue

Everything here runs within the request's deadline (`deadline.of_request()`, set by `serve`;
runtime/deadline.py): the key lookup, the idempotency claim, the rate counter and the enqueue,
which resends what SQS did not confirm until that deadline.

`accept` returns the 202 body (`event_id` or `event_ids`, `run_id`/`check_in_id`,
`config_version`) for the door to answer with, None when the batch held no events
(authenticated all the same), or raises `EdgeError`. Where doors differ it follows the
batch's `AcceptPolicy` (chalicelib/edge/doors/__init__.py): how few and how many events,
whether the client reads a 202 body, fresh or stable event ids.

A door that finds the key its own way (Firehose's `X-Amz-Firehose-Access-Key`) sets
`batch.api_key`; otherwise the CONTRACT §3 sources apply (headers, then the first event's
`api_key`). `batch.idempotency_key` is the client's `Idempotency-Key` or the door's own
(Firehose: `X-Amz-Firehose-Request-Id`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from chalicelib.contract import envelope
from chalicelib.contract.errors import EdgeError, bad_request, too_large, unavailable
from chalicelib.contract.keys_item import KeyRecord
from chalicelib.contract.message import Origin, QueueMessages
from chalicelib.contract.signals import Signal, check_event, check_event_count
from chalicelib.edge import auth, idempotency, ratelimit, remote_config, spill
from chalicelib.edge.doors import SDK_POLICY, AcceptPolicy, Batch, Event, IngestRequest
from chalicelib.runtime import deadline, sqs_batch
from chalicelib.runtime.config import Settings, settings
from chalicelib.runtime.deadline import Deadline
from chalicelib.runtime.observability import correlate, count_per_interval, logger
from chalicelib.runtime.sqs_batch import Outgoing

# What the steps before the enqueue leave it at least: the wait for a concurrent request's claim
# ends, and the rate counter's settle is skipped, rather than leave the enqueue less than this.
ENQUEUE_RESERVE_SECONDS = 1.0
# How long a request waits for another one with its Idempotency-Key to finish (then 409).
CLAIM_WAIT_SECONDS = 2.0
# What the enqueue leaves the claim's bookkeeping after it (one UpdateItem: connect and read).
BOOKKEEPING_RESERVE_SECONDS = 2 * idempotency.BOOKKEEPING_TIMEOUT_SECONDS + deadline.MARGIN_SECONDS
# What one request may queue, as a multiple of its door's decoded cap (`AcceptPolicy.decoded_limit`):
# its events' decoded sizes plus each message's envelope, ≤ 20 MiB (SDK, OTLP) or 32 MiB (Firehose).
# 4, not less: OTLP's JSON is 2-3 times its protobuf. The bodies sent are at most 3 times the
# estimate (`envelope.dumps` escapes non-ASCII: 2 UTF-8 bytes become 6); ASCII events are ~1 time.
QUEUED_MULTIPLE = 4
# A queue message's fixed fields (ids, signal, path, time, project, organization, IP), generously.
MESSAGE_FRAME_BYTES = 512
# An identical request (same key, route, decoded events, Idempotency-Key or none) within the
# same window of this many seconds is one request retried: it gets the same event ids.
RETRY_WINDOW_SECONDS = 300


def check_events(signal: Signal, events: list[Event], policy: AcceptPolicy = SDK_POLICY) -> None:
    """The checks every way in shares: the request's bounds, then each event's size and shape."""
    if len(events) < policy.min_events:
        raise bad_request("the request holds no events")
    check_event_count(len(events), policy.max_events)
    for event in events:
        check_event(signal, event.payload, event.size, event.where)


def check_queued_size(request: IngestRequest, batch: Batch) -> None:
    """413 before anything is serialised when the messages would exceed QUEUED_MULTIPLE times the
    door's decoded cap: events that grew while decoding (a CloudWatch Logs entry gets its group
    and stream) or a header copied into each of many messages."""
    headers = request.headers
    copied = {name: value for name, value in headers.items() if name.lower().startswith("x-lookout-")}
    copied.update(batch.carried)
    copied.update({"user-agent": headers.get("user-agent") or "", "idempotency": batch.idempotency_key or ""})
    frame = MESSAGE_FRAME_BYTES + len(request.path) + sum(len(name) + len(value) + 6 for name, value in copied.items())
    queued = sum(event.size for event in batch.events) + len(batch.events) * frame
    limit = QUEUED_MULTIPLE * batch.policy.decoded_limit
    if queued > limit:
        raise too_large(f"the request would queue {queued} bytes in {len(batch.events)} messages; the limit is {limit}")


def accept(request: IngestRequest, batch: Batch) -> dict[str, Any] | None:
    """Check, authenticate and durably enqueue the batch's events: the 202 body, None for a
    batch without events, or EdgeError."""
    signal, events, policy = batch.signal, batch.events, batch.policy
    check_events(signal, events, policy)
    check_queued_size(request, batch)
    first = events[0].payload if events else None
    record = auth.authenticate(request, signal, batch.api_key or auth.extract_api_key(request.headers, first))
    if not events:
        return None
    acceptance = _Acceptance(settings(), request, batch, record, deadline.of_request())
    body = acceptance.enqueue_once(acceptance.plan())
    count_per_interval("accepted", len(events))
    if _sampled(acceptance.conf.log_accepted_share):
        extra: dict[str, Any] = {"signal": signal.name, "project_id": record.project_id, "events": len(events)}
        if policy.reply_body:
            extra["event_ids"] = body.get("event_ids") or [body.get("event_id")]
        logger().info("ingest accepted", extra=extra)
    return body


@dataclass
class _Acceptance:
    """One batch on its way into the queue, once checked and authenticated."""

    conf: Settings
    request: IngestRequest
    batch: Batch
    record: KeyRecord
    deadline: Deadline

    def plan(self) -> dict[str, Any]:
        """What the idempotency record starts with: the 202 body, or for stable ids the first
        attempt's time and the event count. Ids derive from the request's content
        (`retry_ids`): a client's retry of the same request gets the same ones."""
        batch = self.batch
        if batch.policy.stable_ids and batch.idempotency_key:
            return {"first_seen_ms": int(time.time() * 1000), "events": len(batch.events)}
        same_request = f"{self.fingerprint}\n{carried_headers_identity(self.request.headers)}"
        ids = retry_ids(self.record.key_hash, batch.idempotency_key, same_request, len(batch.events) + 1)
        if batch.policy.reply_body:
            body = plan_reply(batch.signal, batch.events, batch.many, ids)
            correlate(body.get("event_id") or body["event_ids"][0])
            config_version = remote_config.cached_version(self.record.key_hash)
            if config_version is not None:
                body["config_version"] = config_version
            return body
        return {"event_ids": ids[: len(batch.events)]}

    @cached_property
    def fingerprint(self) -> str:
        return request_fingerprint(self.request, self.batch.signal, self.batch.events)

    def messages(self, stored: dict[str, Any]) -> dict[int, Outgoing]:
        """The queue messages, under the ids `stored` (planned, or the claim's) gives."""
        batch = self.batch
        events, key = batch.events, batch.idempotency_key
        if batch.policy.stable_ids and key:
            if stored.get("events") != len(events):
                raise EdgeError(422, "idempotency_mismatch", "this request id was used for a different delivery")
            stored = {"event_ids": envelope.stable_ulids(key, stored["first_seen_ms"], len(events))}
        elif len(stored.get("event_ids") or [stored.get("event_id")]) != len(events):  # a claim older than fingerprints
            raise EdgeError(422, "idempotency_mismatch", "this Idempotency-Key was used for a different request")
        return build_messages(self.request, batch.signal, self.record, events, stored, key, batch.carried)

    def enqueue_once(self, planned: dict[str, Any]) -> dict[str, Any]:
        """Replay, rate limit, enqueue: the body the client gets.

        Under an idempotency key, the claim is taken with the `planned` body first, so a replay
        is answered from its record before the rate limit is spent (a request refused with 429
        leaves the key unused); taking over a partial claim uses the stored body instead.
        """
        conf, record, events = self.conf, self.record, self.batch.events
        claim = None
        if self.batch.idempotency_key:
            claim = self._claim(self.batch.policy.claim_prefix + self.batch.idempotency_key, planned)
            if claim.done:
                count_per_interval("idempotent_replays")
                return claim.body
            planned = claim.body
        if record.rate_limit_per_minute is not None:
            try:
                limit = self.deadline.sooner(ENQUEUE_RESERVE_SECONDS)
                _enforce_rate_limit(conf.idempotency_table, record, len(events), limit)
            except EdgeError:
                if claim is not None:
                    table = conf.idempotency_table
                    _quietly("forget the refused claim", idempotency.forget, table, claim, self.deadline)
                raise
        messages = self.messages(planned)
        # With a claim to mark done or partial afterwards, the enqueue stops early enough for that call.
        enqueue_by = self.deadline.sooner(BOOKKEEPING_RESERVE_SECONDS) if claim is not None else self.deadline
        try:
            _enqueue(conf, messages, enqueue_by, frozenset(claim.sent) if claim else frozenset())
        except QueueIncomplete as failure:
            if claim is not None:
                sent, table = failure.report.sent, conf.idempotency_table
                _quietly("record the partial enqueue", idempotency.release, table, claim, sent, self.deadline)
            raise _queue_down(failure.report, claim is not None) from None
        if claim is not None:
            # The events are in SQS: the answer is 202 whatever happens here. An unfinished claim is
            # taken over by a replay after ABANDONED_AFTER seconds and resent under the same event
            # ids, which the backend stores once.
            table = conf.idempotency_table
            _quietly("mark the idempotency claim done", idempotency.finish, table, claim, self.deadline)
        return planned

    def _claim(self, key: str, planned: dict[str, Any]) -> idempotency.Claim:
        """The key's claim for this request (409, 422 or 503 when it cannot be had)."""
        try:
            table, project = self.conf.idempotency_table, self.record.project_id
            wait = min(CLAIM_WAIT_SECONDS, self.deadline.left() - ENQUEUE_RESERVE_SECONDS)
            return idempotency.claim_or_wait(table, project, key, planned, self.fingerprint, wait, self.deadline)
        except idempotency.FingerprintMismatch:
            raise EdgeError(
                422, "idempotency_mismatch", "this Idempotency-Key was used for a different request (route or body)"
            ) from None
        except idempotency.ClaimBusy:
            raise EdgeError(
                409,
                "idempotency_conflict",
                "a request with this Idempotency-Key is still being processed",
                retry_after=1,
            ) from None
        except Exception as exc:
            logger().warning("idempotency store unavailable", extra={"reason": type(exc).__name__})
            raise unavailable("the idempotency store is unavailable; retry shortly") from None


def _sampled(share: float) -> bool:
    """Whether this accepted request gets its log line (LOOKOUT_EDGE_LOG_ACCEPTED_SHARE, default 0)."""
    if share <= 0:
        return False
    import random

    return share >= 1 or random.random() < share


def _enforce_rate_limit(table: str, record: KeyRecord, events: int, deadline: Deadline) -> None:
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


def plan_reply(signal: Signal, events: list[Event], many: bool, ids: list[str]) -> dict[str, Any]:
    """The 202 body: `ids` holds one id per event, then one for the job/cron id a single
    event needs when it brings none."""
    if many:
        return {"event_ids": ids[: len(events)], "status": "accepted"}
    body: dict[str, Any] = {"event_id": ids[0], "status": "accepted"}
    if signal.id_field is not None:
        body[signal.id_field] = signal.given_id(events[0].payload) or ids[len(events)]
    return body


def retry_ids(key_hash: str, idempotency_key: str | None, fingerprint: str, count: int) -> list[str]:
    """`count` event ids that a retry of the same request gets again: from the key, the
    client's Idempotency-Key (two keys are two requests), the request's fingerprint (route
    and decoded events) and the RETRY_WINDOW_SECONDS window it arrives in.

    No AWS call: the hot path pays one SHA-256 over the events' JSON. Lookout stores an
    event id once (CONTRACT §6 `duplicate`), so a retry after a partial enqueue resends
    every message under the same ids and the copies are dropped there. See docs/retries.md.
    """
    window_ms = RETRY_WINDOW_SECONDS * 1000
    start = int(time.time() * 1000) // window_ms * window_ms
    seed = f"{key_hash}\n{idempotency_key or ''}\n{fingerprint}\n{start}"
    return envelope.stable_ulids(seed, start, count)


def carried_headers_identity(headers: Mapping[str, str]) -> str:
    """What the queue message carries of a request's headers (User-Agent, `X-Lookout-*`): a request
    that differs in them is another request, not a retry, so it must not share the first one's ids."""
    sdk = sorted(f"{name.lower()}:{value}" for name, value in headers.items() if name.lower().startswith("x-lookout-"))
    return "\n".join([headers.get("user-agent") or "", *sdk])


def build_messages(
    request: IngestRequest,
    signal: Signal,
    record: KeyRecord,
    events: list[Event],
    reply: dict[str, Any],
    idempotency_key: str | None,
    carried: Mapping[str, str] | None = None,
) -> dict[int, Outgoing]:
    """One queue message per event (CONTRACT §5), under the final ids of the 202 body `reply`,
    keyed by the event's position.

    `headers` holds the request's `X-Lookout-*` headers and the door's `carried` ones.
    """
    headers = request.headers
    sdk_headers = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-lookout-")}
    sdk_headers.update(carried or {})
    origin = Origin(
        path=request.path,
        client_ip=request.client_ip,
        user_agent=headers.get("user-agent") or None,
        idempotency_key=idempotency_key,
        headers=sdk_headers,
    )
    event_ids = reply.get("event_ids") or [reply["event_id"]]
    assigned = signal.id_field if signal.id_field is not None and signal.id_field in reply else None
    batch = QueueMessages(signal.name, record, origin)
    messages = {}
    for position, (event_id, event) in enumerate(zip(event_ids, events, strict=True)):
        assigned_ids = {assigned: reply[assigned]} if assigned and signal.given_id(event.payload) is None else None
        messages[position] = Outgoing(batch.body(event_id, event.payload_json, assigned_ids), batch.attributes)
    return messages


def _enqueue(conf: Settings, messages: dict[int, Outgoing], limit: Deadline, skip: frozenset[int]) -> None:
    """Every message in SQS by `limit`, in the region's queue or spilled to the fallback queue
    (chalicelib/edge/spill.py), or `QueueIncomplete` with what got in."""
    if not conf.queue_url:
        logger().error("LOOKOUT_EDGE_QUEUE_URL is not set")
        raise unavailable("the edge has no queue configured")
    fallback = spill.fallback_queue(conf, spill.own_region()) if spill.may_spill(conf) else None
    if fallback is None:
        report = sqs_batch.send_messages(conf.queue_url, messages, limit, skip)
    else:
        report = spill.send_or_spill(conf.queue_url, fallback, messages, limit, skip)
    if report.failed:
        raise QueueIncomplete(report)


class QueueIncomplete(Exception):
    """SQS did not confirm every message: the send's report says what got in."""

    def __init__(self, report: sqs_batch.SendReport[int]):
        super().__init__(report.reason)
        self.report = report


def request_fingerprint(request: IngestRequest, signal: Signal, events: list[Event]) -> str:
    """Route and body hash: what makes two requests under one Idempotency-Key the same request.

    Over the decoded events (without `api_key`), so a retry that compresses differently
    or sends the key another way is still the same request.
    """
    digest = hashlib.sha256(f"{request.path}\n{signal.name}\n".encode())
    for event in events:
        digest.update(event.payload_json.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _quietly(what: str, step: Callable[..., None], *args: Any) -> None:
    """Bookkeeping whose failure must not change the answer (the claim expires on its own)."""
    try:
        step(*args)
    except Exception as exc:
        logger().warning(f"could not {what}", extra={"reason": type(exc).__name__})


def _queue_down(report: sqs_batch.SendReport[int], idempotent: bool) -> EdgeError:
    """503, honest about what may be in the queue already."""
    logger().error(
        "enqueue failed",
        extra={"reason": report.reason, "sent": len(report.sent), "unconfirmed": len(report.unconfirmed)},
    )
    if not report.sent and not report.unconfirmed:
        return unavailable("the event queue is unavailable; nothing was accepted, retry shortly")
    retry = (
        "retry with the same Idempotency-Key: only the rest is sent, under the same event ids"
        if idempotent
        else f"a retry of the same request within {RETRY_WINDOW_SECONDS // 60} minutes gets the same event ids"
    )
    return unavailable(f"the event queue did not confirm every event; some may have been accepted: {retry}")
