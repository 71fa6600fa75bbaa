"""The edge's key lookups: the container's cache over the keys table (the item: contract/keys_item.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chalicelib.contract.keys_item import KeyRecord, fetch_key_item
from chalicelib.runtime.container import per_container
from chalicelib.runtime.ttl_cache import TtlCache

if TYPE_CHECKING:
    from chalicelib.runtime.deadline import Deadline

# Connect and read timeout (each) of one GetItem on the local keys table, less when the request's
# deadline is nearer (runtime/deadline.py). An in-region GetItem takes milliseconds; a stalled table
# costs a request at most 1 s before its stale answer or its 503.
LOCAL_LOOKUP_TIMEOUT_SECONDS = 0.5
# The home-region lookup of a locally missing key: one attempt, this connect and read timeout
# (≤ 1.6 s against a home region that accepts and never answers), less when the deadline is nearer.
HOME_LOOKUP_TIMEOUT_SECONDS = 0.8


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


def fetch_key(table: str, key_hash: str, home_region: str | None = None) -> KeyRecord | None:
    """The local table first; in a multi-region edge, a miss is asked once more in the home
    region, whose table the sync writes: a key created seconds ago may not have replicated here
    yet (docs/multi-region.md). A failed home lookup counts as a miss: the local replica is this
    region's truth, and a home outage must not turn every unknown key into a 503.

    Every call is one attempt within the request's deadline (`deadline.current()`); OutOfTime
    (no time left for a call) is a failure like any other: the local one is a 503 or a stale answer.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.runtime import deadline
    from chalicelib.runtime.aws import client
    from chalicelib.runtime.observability import count, logger

    limit = deadline.current()
    record = _fetch_local(table, key_hash, limit)
    if record is not None or not home_region or home_region == client("dynamodb").meta.region_name:
        return record
    try:
        record = fetch_key_item(table, key_hash, home_region, limit.call_timeout(HOME_LOOKUP_TIMEOUT_SECONDS))
    except (BotoCoreError, ClientError, deadline.OutOfTime) as exc:
        count("key_home_lookup_failed")
        logger().warning(
            "home region key lookup failed; answering from the local replica",
            extra={"home_region": home_region, "reason": type(exc).__name__},
        )
        return None
    if record is not None:
        count("key_found_in_home_region")  # not replicated here yet: a steady count means lag
    return record


def _fetch_local(table: str, key_hash: str, limit: Deadline) -> KeyRecord | None:
    """One GetItem on the local table; once more after a quick failure (an error answer, a refused
    connection) while the deadline allows, never after a timeout: a stalled table would stall again."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

    try:
        return fetch_key_item(table, key_hash, None, limit.call_timeout(LOCAL_LOOKUP_TIMEOUT_SECONDS))
    except (ConnectTimeoutError, ReadTimeoutError):
        raise
    except (BotoCoreError, ClientError):
        if not limit.allows(LOCAL_LOOKUP_TIMEOUT_SECONDS):
            raise
    return fetch_key_item(table, key_hash, None, limit.call_timeout(LOCAL_LOOKUP_TIMEOUT_SECONDS))


@per_container
def key_cache() -> KeyCache:
    """The container's key cache, built on first use from the settings."""
    from chalicelib.runtime.config import settings

    conf = settings()
    return KeyCache(
        fetch=lambda key_hash: fetch_key(conf.keys_table, key_hash, conf.home_region),
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
