"""`Idempotency-Key`: per project, 24 h, the same key returns the same 202 body once enqueued.

One item per (project, key): a conditional put claims it before anything is
enqueued, so two concurrent requests enqueue once. The item remembers which
events already got into SQS, so a retry after a partial failure sends only
the rest, under the same event ids.
"""

from __future__ import annotations

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
    owned: bool = False  # this request claimed it and must enqueue


class ClaimBusy(Exception):
    """Another request with the same key is enqueuing right now."""


def item_key(project_id: str, idempotency_key: str) -> str:
    """The item's `pk`; a key too long for DynamoDB becomes its SHA-256 (else every retry is a 503)."""
    raw = idempotency_key.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PLAIN_KEY_BYTES:
        idempotency_key = "sha256:" + hashlib.sha256(raw).hexdigest()
    return f"idem#{project_id}#{idempotency_key}"


def claim_or_wait(
    table: str, project_id: str, idempotency_key: str, body: dict[str, Any], wait_seconds: float = 2.0
) -> Claim:
    """Like `claim`, but a request that finds the key in flight waits for that one to finish.

    Enqueueing takes milliseconds, so a concurrent duplicate nearly always gets the first
    request's 202 body; ClaimBusy only when it is still in flight after `wait_seconds`.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return claim(table, project_id, idempotency_key, body)
        except ClaimBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def claim(table: str, project_id: str, idempotency_key: str, body: dict[str, Any], now: float | None = None) -> Claim:
    """Claim the key for `body`, or return the stored state when it was claimed before."""
    now = time.time() if now is None else now
    pk = item_key(project_id, idempotency_key)
    dynamodb = client("dynamodb")
    try:
        dynamodb.put_item(
            TableName=table,
            Item={
                "pk": {"S": pk},
                "body": {"S": json.dumps(body)},
                "state": {"S": "pending"},
                "claimed_at": {"N": str(int(now))},
                "expires_at": {"N": str(int(now) + TTL_SECONDS)},
            },
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": {"N": str(int(now))}},
        )
        return Claim(pk=pk, body=body, done=False, owned=True)
    except dynamodb.exceptions.ConditionalCheckFailedException:
        pass
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
    if item is None:  # expired and removed between the two calls: claim again
        return claim(table, project_id, idempotency_key, body, now)
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
    stored.owned = True
    return stored


def finish(table: str, claim_: Claim) -> None:
    """Mark the claim done: from now on replays get its body and enqueue nothing."""
    _set_state(table, claim_.pk, "done", None)


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
