"""Project API keys: hashing, the DynamoDB item (CONTRACT §4), and the container cache."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.runtime.container import per_container
from chalicelib.runtime.ttl_cache import TtlCache


def hash_key(raw_key: str) -> str:
    """Lowercase hex SHA-256 of the raw key: the table's partition key."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


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
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_item(cls, item: dict[str, dict[str, Any]]) -> KeyRecord:
        """Read a low-level DynamoDB item (`{"S": ...}` attribute values)."""

        def text(name: str) -> str | None:
            value = item.get(name)
            if value is None:
                return None
            return value.get("S", value.get("N"))

        def flag(name: str, default: bool) -> bool:
            value = item.get(name)
            return default if value is None or "BOOL" not in value else bool(value["BOOL"])

        allowlist = tuple(v["S"] for v in item.get("ip_allowlist", {}).get("L", []) if "S" in v)
        limit = item.get("rate_limit_per_minute", {}).get("N")
        return cls(
            key_hash=item["key_hash"]["S"],
            project_id=text("project_id") or "",
            organization_id=text("organization_id") or "",
            billing_ok=flag("billing_ok", True),
            key_id=text("key_id"),
            ip_allowlist=allowlist,
            trace_enabled=flag("trace_enabled", True),
            rum_enabled=flag("rum_enabled", True),
            rate_limit_per_minute=int(float(limit)) if limit is not None else None,
        )


class KeyStoreUnavailable(Exception):
    """The key store failed and no cached answer can stand in for it."""


class KeyCache:
    """Key lookups in a bounded LRU with a TTL, and stale answers while the store is down.

    Positive answers live `ttl` seconds, unknown keys `negative_ttl`; when the
    store fails, an entry younger than `stale_ttl` is served instead of a 503.
    """

    def __init__(
        self,
        fetch: Callable[[str], KeyRecord | None],
        ttl: float = 60.0,
        negative_ttl: float = 10.0,
        stale_ttl: float = 3600.0,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_stale: Callable[[str, Exception], None] | None = None,
    ):
        self._fetch = fetch
        self._on_stale = on_stale
        self._entries: TtlCache[str, KeyRecord | None] = TtlCache(
            fresh_for=lambda record: ttl if record is not None else negative_ttl,
            stale_seconds=stale_ttl,
            max_size=max_size,
            clock=clock,
        )

    def get(self, key_hash: str) -> KeyRecord | None:
        """The record for a key hash, None when the key is unknown."""
        try:
            found = self._entries.get(key_hash, lambda: self._fetch(key_hash))
        except Exception as exc:
            raise KeyStoreUnavailable(str(exc)) from exc
        if found.stale and self._on_stale is not None and found.error is not None:
            self._on_stale(key_hash, found.error)
        return found.value


def fetch_key_item(table: str, key_hash: str) -> KeyRecord | None:
    """One consistent-enough GetItem on the keys table (eventual consistency is fine)."""
    from chalicelib.runtime.aws import client

    response = client("dynamodb").get_item(TableName=table, Key={"key_hash": {"S": key_hash}})
    item = response.get("Item")
    return KeyRecord.from_item(item) if item else None


@per_container
def key_cache() -> KeyCache:
    """The container's key cache, built on first use from the settings."""
    from chalicelib.runtime.config import settings

    conf = settings()
    return KeyCache(
        fetch=lambda key_hash: fetch_key_item(conf.keys_table, key_hash),
        ttl=conf.key_cache_ttl,
        negative_ttl=conf.key_negative_ttl,
        stale_ttl=conf.key_stale_ttl,
        max_size=conf.key_cache_size,
        on_stale=_warn_stale,
    )


def _warn_stale(key_hash: str, exc: Exception) -> None:
    from chalicelib.runtime.observability import logger

    logger().warning(
        "key store unavailable; serving cached key",
        extra={"key_hash_prefix": key_hash[:8], "reason": type(exc).__name__},
    )
