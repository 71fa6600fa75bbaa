"""Per-project requests per minute: one atomic DynamoDB counter per project and minute.

Only projects with `rate_limit_per_minute` pay for the write.
"""

from __future__ import annotations

import time

from chalicelib.runtime.aws import client


def seconds_to_next_minute(now: float) -> int:
    return max(1, 60 - int(now) % 60)


def over_limit(table: str, project_id: str, limit: int, events: int, now: float | None = None) -> bool:
    """Count `events` against this minute's budget; True when the budget is now exceeded."""
    now = time.time() if now is None else now
    minute = int(now) // 60
    response = client("dynamodb").update_item(
        TableName=table,
        Key={"pk": {"S": f"rate#{project_id}#{minute}"}},
        UpdateExpression="ADD hits :n SET expires_at = if_not_exists(expires_at, :exp)",
        ExpressionAttributeValues={":n": {"N": str(events)}, ":exp": {"N": str((minute + 2) * 60)}},
        ReturnValues="UPDATED_NEW",
    )
    return int(response["Attributes"]["hits"]["N"]) > limit
