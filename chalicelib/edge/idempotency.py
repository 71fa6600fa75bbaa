"""`Idempotency-Key`: per project, 24 h, the same key returns the same 202 body once enqueued.

One item per (project, key): a conditional put claims it before anything is
enqueued, so two concurrent requests enqueue once. The item remembers which
events already got into SQS, so a retry after a partial failure sends only
the rest, under the same event ids. It also keeps the request's fingerprint
(route and body hash): the key used again for a different request is refused
(`FingerprintMismatch`), never answered with the first request's body.

Every call is one attempt bounded by the request's deadline (runtime/deadline.py): a claim's
calls get at most CLAIM_TIMEOUT_SECONDS each, the bookkeeping after the enqueue (finish,
release, forget) BOOKKEEPING_TIMEOUT_SECONDS, and no call starts when too little time is left
(OutOfTime). A claim cut short is a 503 and nothing is enqueued; bookkeeping cut short leaves
the claim pending, which a replay takes over after ABANDONED_AFTER seconds (same event ids).

Item size at the 1,000-event cap: the 202 body (1,000 ULIDs, ~29 KB), the sent
indices and a 64-character fingerprint, far under DynamoDB's 400 KB.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.runtime.aws import bounded_client
from chalicelib.runtime.deadline import UNBOUNDED, Deadline, OutOfTime

TTL_SECONDS = 24 * 3600
# A claim still pending after this long belongs to a request that died: take it over.
ABANDONED_AFTER = 30
# DynamoDB refuses partition keys over 2048 bytes; longer Idempotency-Keys are stored by their hash.
MAX_PLAIN_KEY_BYTES = 512
# Connect and read timeout (each) of one call: taking the claim, then marking it done or partial.
CLAIM_TIMEOUT_SECONDS = 0.5
BOOKKEEPING_TIMEOUT_SECONDS = 0.25
# How often a request that found its key in flight asks again.
POLL_SECONDS = 0.05


@dataclass
class Claim:
    """The state of one idempotency key."""

    pk: str
    body: dict[str, Any]
    done: bool
    sent: set[int] = field(default_factory=set)
    claimed_at: str = ""  # epoch seconds as stored: the owner's mark for `forget`
    fresh: bool = False  # created by this request (not taken over from an earlier attempt)


class ClaimBusy(Exception):
    """Another request with the same key is enqueuing right now."""


class FingerprintMismatch(Exception):
    """The key was used for a different request (another route or body)."""


def item_key(project_id: str, idempotency_key: str) -> str:
    """The item's `pk`; a key too long for DynamoDB becomes its SHA-256 (else every retry is a 503)."""
    raw = idempotency_key.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PLAIN_KEY_BYTES:
        idempotency_key = "sha256:" + hashlib.sha256(raw).hexdigest()
    return f"idem#{project_id}#{idempotency_key}"


def claim_or_wait(
    table: str,
    project_id: str,
    idempotency_key: str,
    body: dict[str, Any],
    fingerprint: str,
    wait_seconds: float = 2.0,
    deadline: Deadline = UNBOUNDED,
) -> Claim:
    """Like `claim`, but a request that finds the key in flight waits for that one to finish.

    Enqueueing takes milliseconds, so a concurrent duplicate nearly always gets the first
    request's 202 body; ClaimBusy only when it is still in flight after `wait_seconds` or when
    the request's `deadline` leaves no time for another look.
    """
    wait_until = time.monotonic() + wait_seconds
    busy = False
    while True:
        try:
            return claim(table, project_id, idempotency_key, body, fingerprint, deadline=deadline)
        except ClaimBusy:
            busy = True
            if time.monotonic() + POLL_SECONDS >= wait_until:
                raise
        except OutOfTime:
            if busy:  # still in flight when this request's time ran out
                raise ClaimBusy from None
            raise
        time.sleep(POLL_SECONDS)


def claim(
    table: str,
    project_id: str,
    idempotency_key: str,
    body: dict[str, Any],
    fingerprint: str,
    now: float | None = None,
    deadline: Deadline = UNBOUNDED,
) -> Claim:
    """Claim the key for `body`, or return the stored state when it was claimed before.

    Raises FingerprintMismatch when the stored claim is another request's, ClaimBusy
    when the same request is in flight elsewhere.
    """
    now = time.time() if now is None else now
    pk = item_key(project_id, idempotency_key)
    claimed_at = str(int(now))
    try:
        _dynamodb(deadline, CLAIM_TIMEOUT_SECONDS).put_item(
            TableName=table,
            Item={
                "pk": {"S": pk},
                "body": {"S": json.dumps(body)},
                "fingerprint": {"S": fingerprint},
                "state": {"S": "pending"},
                "claimed_at": {"N": claimed_at},
                "expires_at": {"N": str(int(now) + TTL_SECONDS)},
            },
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": {"N": claimed_at}},
        )
        return Claim(pk=pk, body=body, done=False, claimed_at=claimed_at, fresh=True)
    except ClientError as exc:
        if not _condition_failed(exc):
            raise
    dynamodb = _dynamodb(deadline, CLAIM_TIMEOUT_SECONDS)
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
    if item is None:  # expired and removed between the two calls: claim again
        return claim(table, project_id, idempotency_key, body, fingerprint, now, deadline)
    # Claims written before fingerprints existed have none: they match (they expire within 24 h).
    if item.get("fingerprint", {}).get("S", fingerprint) != fingerprint:
        raise FingerprintMismatch
    stored = Claim(
        pk=pk,
        body=json.loads(item["body"]["S"]),
        done=item["state"]["S"] == "done",
        sent={int(i) for i in item.get("sent", {}).get("NS", [])},
    )
    if stored.done:
        return stored
    if item["state"]["S"] == "pending" and now - float(item["claimed_at"]["N"]) < ABANDONED_AFTER:
        raise ClaimBusy
    return _take_over(table, stored, item["claimed_at"]["N"], now, deadline)


def _take_over(table: str, stored: Claim, claimed_at: str, now: float, deadline: Deadline) -> Claim:
    try:
        _dynamodb(deadline, CLAIM_TIMEOUT_SECONDS).update_item(
            TableName=table,
            Key={"pk": {"S": stored.pk}},
            UpdateExpression="SET #s = :pending, claimed_at = :now",
            ConditionExpression="claimed_at = :seen AND #s <> :done",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":pending": {"S": "pending"},
                ":done": {"S": "done"},
                ":now": {"N": str(int(now))},
                ":seen": {"N": claimed_at},
            },
        )
    except ClientError as exc:
        if not _condition_failed(exc):
            raise
        raise ClaimBusy from None
    stored.claimed_at = str(int(now))
    return stored


def finish(table: str, claim_: Claim, deadline: Deadline = UNBOUNDED) -> None:
    """Mark the claim done: from now on replays get its body and enqueue nothing."""
    _set_state(table, claim_.pk, "done", None, deadline)


def forget(table: str, claim_: Claim, deadline: Deadline = UNBOUNDED) -> None:
    """The request was refused before anything was sent (429): drop a claim this request
    created, so the key stays free; a claim taken over keeps what earlier attempts sent."""
    if not claim_.fresh:
        release(table, claim_, claim_.sent, deadline)
        return
    try:
        _dynamodb(deadline, BOOKKEEPING_TIMEOUT_SECONDS).delete_item(
            TableName=table,
            Key={"pk": {"S": claim_.pk}},
            ConditionExpression="claimed_at = :mine AND #s = :pending",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":mine": {"N": claim_.claimed_at}, ":pending": {"S": "pending"}},
        )
    except ClientError as exc:
        if not _condition_failed(exc):  # else taken over meanwhile: the claim is another request's now
            raise


def release(table: str, claim_: Claim, sent: set[int], deadline: Deadline = UNBOUNDED) -> None:
    """Enqueue failed: remember what got in, so the client's retry sends only the rest."""
    _set_state(table, claim_.pk, "partial", sent, deadline)


def _set_state(table: str, pk: str, state: str, sent: set[int] | None, deadline: Deadline) -> None:
    expression = "SET #s = :state"
    values: dict[str, Any] = {":state": {"S": state}}
    if sent:
        expression += ", sent = :sent"
        values[":sent"] = {"NS": [str(i) for i in sorted(sent)]}
    _dynamodb(deadline, BOOKKEEPING_TIMEOUT_SECONDS).update_item(
        TableName=table,
        Key={"pk": {"S": pk}},
        UpdateExpression=expression,
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues=values,
    )


def _dynamodb(deadline: Deadline, cap: float) -> Any:
    """The container's single-attempt client for one call within `deadline` (OutOfTime if none fits)."""
    return bounded_client("dynamodb", deadline, cap)


def _condition_failed(exc: ClientError) -> bool:
    """DynamoDB refused the call's condition (the item is not in the state the call expected)."""
    return (exc.response.get("Error") or {}).get("Code") == "ConditionalCheckFailedException"
