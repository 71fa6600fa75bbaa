"""The keys-table item (CONTRACT §4), both halves: the key sync writes it, the edge reads it.

The one place that knows the attribute names and types. Partition key `key_hash`: the
lowercase hex SHA-256 of the raw API key, which is never stored. The edge must work with
an item that carries only `key_hash`, `project_id`, `organization_id` and `billing_ok`:
a missing list means empty, a missing flag means true.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY_HASH = "key_hash"
# The sync's own attributes: what the edge reads hashes to CONTENT_HASH (equal → nothing to
# write), and SYNCED_AT is when the sync that wrote the item ran (epoch seconds).
CONTENT_HASH = "content_hash"
SYNCED_AT = "synced_at"

Item = dict[str, dict[str, Any]]  # low-level DynamoDB form: {"name": {"S": "..."}}


def hash_key(raw_key: str) -> str:
    """Lowercase hex SHA-256 of the raw key: the table's partition key."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def table_key(key_hash: str) -> Item:
    """The item's primary key, for GetItem and DeleteRequest."""
    return {KEY_HASH: {"S": key_hash}}


@dataclass(frozen=True)
class KeyRecord:
    """What the edge knows about a key. Missing list → empty, missing flag → true."""

    key_hash: str
    project_id: str
    organization_id: str
    billing_ok: bool
    key_id: str | None = None
    ip_allowlist: tuple[str, ...] = ()
    trace_enabled: bool = True
    rum_enabled: bool = True
    rate_limit_per_minute: int | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Mapping[str, Any]]) -> KeyRecord:
        """Read a low-level DynamoDB item (`{"S": ...}` attribute values)."""

        def text(name: str) -> str | None:
            value = item.get(name)
            if value is None:
                return None
            found: str | None = value.get("S", value.get("N"))
            return found

        def flag(name: str, default: bool) -> bool:
            value = item.get(name)
            return default if value is None or "BOOL" not in value else bool(value["BOOL"])

        allowlist = tuple(v["S"] for v in item.get("ip_allowlist", {}).get("L", []) if "S" in v)
        limit = item.get("rate_limit_per_minute", {}).get("N")
        return cls(
            key_hash=item[KEY_HASH]["S"],
            project_id=text("project_id") or "",
            organization_id=text("organization_id") or "",
            billing_ok=flag("billing_ok", True),
            key_id=text("key_id"),
            ip_allowlist=allowlist,
            trace_enabled=flag("trace_enabled", True),
            rum_enabled=flag("rum_enabled", True),
            rate_limit_per_minute=int(float(limit)) if limit is not None else None,
        )

    def to_item(self, synced_at: int) -> Item:
        """The item the sync writes: every attribute explicit, plus its content hash and `synced_at`."""
        item: Item = {KEY_HASH: {"S": self.key_hash}}
        if self.key_id is not None:
            item["key_id"] = {"S": self.key_id}
        item.update(
            {
                "project_id": {"S": self.project_id},
                "organization_id": {"S": self.organization_id},
                "billing_ok": {"BOOL": self.billing_ok},
                "ip_allowlist": {"L": [{"S": entry} for entry in self.ip_allowlist]},
                "trace_enabled": {"BOOL": self.trace_enabled},
                "rum_enabled": {"BOOL": self.rum_enabled},
            }
        )
        if self.rate_limit_per_minute is not None:
            item["rate_limit_per_minute"] = {"N": str(self.rate_limit_per_minute)}
        item[CONTENT_HASH] = {"S": content_hash(item)}
        item[SYNCED_AT] = {"N": str(int(synced_at))}
        return item


def content_hash(item: Mapping[str, Any]) -> str:
    """SHA-256 of everything the edge reads: equal hashes mean nothing needs writing."""
    content = {name: value for name, value in item.items() if name not in (CONTENT_HASH, SYNCED_AT)}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fetch_key_item(
    table: str, key_hash: str, region: str | None = None, timeout_seconds: float | None = None
) -> KeyRecord | None:
    """One GetItem on the keys table (eventual consistency is fine); None when the key is unknown.
    `region` None is the container's own (another one: a multi-region edge's home region);
    `timeout_seconds`: one attempt with that connect and read timeout (the edge's lookups, from
    the request's deadline); None: the client's defaults and botocore's retries (log shipping)."""
    from chalicelib.runtime.aws import client

    single = timeout_seconds is not None
    dynamodb = client("dynamodb", region, single_attempt=single, timeout_seconds=timeout_seconds)
    item = dynamodb.get_item(TableName=table, Key=table_key(key_hash)).get("Item")
    return KeyRecord.from_item(item) if item else None
