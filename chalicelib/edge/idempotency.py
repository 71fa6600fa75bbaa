"""`Idempotency-Key`: per project, 24 h, the same key returns the same 202 body once enqueued.

One item per (project, key): a conditional put claims it before anything is
enqueued, so two concurrent requests enqueue once. The item remembers which
events already got into SQS, so a retry after a partial failure sends only
the rest, under the same event ids. It also keeps the request's fingerprint
(route and body hash): the key used again for a different request is refused
(`FingerprintMismatch`), never answered with the first request's body.

Item size at the 1,000-event cap: the 202 body (1,000 ULIDs, ~29 KB), the sent
indices and a 64-character fingerprint, far under DynamoDB's 400 KB.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from chalicelib.runtime.aws import client

TTL_SECONDS = 24 * 3600
# A claim still pending after this long belongs to a request that died: take it over.
ABANDONED_AFTER = 30
# DynamoDB refuses partition keys over 2048 bytes; longer Idempotency-Keys are stored by their hash.
MAX_PLAIN_KEY_BYTES = 512


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
) -> Claim:
    """Like `claim`, but a request that finds the key in flight waits for that one to finish.

    Enqueueing takes milliseconds, so a concurrent duplicate nearly always gets the first
    request's 202 body; ClaimBusy only when it is still in flight after `wait_seconds`.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return claim(table, project_id, idempotency_key, body, fingerprint)
        except ClaimBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def claim(
    table: str,
    project_id: str,
    idempotency_key: str,
    body: dict[str, Any],
    fingerprint: str,
    now: float | None = None,
) -> Claim:
    """Claim the key for `body`, or return the stored state when it was claimed before.

    Raises FingerprintMismatch when the stored claim is another request's, ClaimBusy
    when the same request is in flight elsewhere.
    """
    now = time.time() if now is None else now
    pk = item_key(project_id, idempotency_key)
    claimed_at = str(int(now))
    dynamodb = client("dynamodb")
    try:
        dynamodb.put_item(
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
    except dynamodb.exceptions.ConditionalCheckFailedException:
        pass
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
    if item is None:  # expired and removed between the two calls: claim again
        return claim(table, project_id, idempotency_key, body, fingerprint, now)
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
    return _take_over(table, stored, item["claimed_at"]["N"], now)


def _take_over(table: str, stored: Claim, claimed_at: str, now: float) -> Claim:
    dynamodb = client("dynamodb")
    try:
        dynamodb.update_item(
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
    except dynamodb.exceptions.ConditionalCheckFailedException:
        raise ClaimBusy from None
    stored.claimed_at = str(int(now))
    return stored


def finish(table: str, claim_: Claim) -> None:
    """Mark the claim done: from now on replays get its body and enqueue nothing."""
    _set_state(table, claim_.pk, "done", None)


def forget(table: str, claim_: Claim) -> None:
    """The request was refused before anything was sent (429): drop a claim this request
    created, so the key stays free; a claim taken over keeps what earlier attempts sent."""
    if not claim_.fresh:
        release(table, claim_, claim_.sent)
        return
    dynamodb = client("dynamodb")
    with contextlib.suppress(dynamodb.exceptions.ConditionalCheckFailedException):  # taken over meanwhile
        dynamodb.delete_item(
            TableName=table,
            Key={"pk": {"S": claim_.pk}},
            ConditionExpression="claimed_at = :mine AND #s = :pending",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":mine": {"N": claim_.claimed_at}, ":pending": {"S": "pending"}},
        )


def release(table: str, claim_: Claim, sent: set[int]) -> None:
    """Enqueue failed: remember what got in, so the client's retry sends only the rest."""
    _set_state(table, claim_.pk, "partial", sent)


def _set_state(table: str, pk: str, state: str, sent: set[int] | None) -> None:
    expression = "SET #s = :state"
    values: dict[str, Any] = {":state": {"S": state}}
    if sent:
        expression += ", sent = :sent"
        values[":sent"] = {"NS": [str(i) for i in sorted(sent)]}
    client("dynamodb").update_item(
        TableName=table,
        Key={"pk": {"S": pk}},
        UpdateExpression=expression,
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues=values,
    )
