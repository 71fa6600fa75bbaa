"""The edge's key lookups: the container's cache over the keys table (the item: contract/keys_item.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chalicelib.contract.keys_item import KeyRecord, fetch_key_item
from chalicelib.runtime.backoff import BackingOff, Backoff
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
# After a failed lookup (an error, a timeout) the container does not ask that region's table again
# for BACKOFF_FIRST_SECONDS, then lets one request probe it; each failed probe doubles the wait, up
# to BACKOFF_LONGEST_SECONDS (1, 2, 4, 8, 10, 10, ... s); a success ends it (docs/reliability.md).
# First 1 s: what one lost call (a blip, the table healthy) costs is at most 1 s of 503s for keys
# this container never saw. Longest 10 s, the negative TTL: when the table is back, a key never seen
# waits at most as long for its 202 as a new key does in the negative cache for its first 202; and
# during an outage a container probes at most once per 10 s (one request pays ≤ 1 s when the table
# stalls), not on every request past its key's TTL.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_LONGEST_SECONDS = 10.0


class KeyStoreUnavailable(Exception):
    """The key store failed and no cached answer can stand in for it."""


class KeyCache:
    """Key lookups in a bounded LRU with a TTL, and stale answers while the store is down.

    Positive answers live `ttl` seconds, unknown keys `negative_ttl`; when the store fails (or
    `store_down` raises: it is backing off), an entry younger than `stale_ttl` is served instead
    of a 503, and `on_store_down` hears of every answer given without the store.
    """

    def __init__(
        self,
        fetch: Callable[[str], KeyRecord | None],
        ttl: float = 60.0,
        negative_ttl: float = 10.0,
        stale_ttl: float = 3600.0,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        store_down: Callable[[], None] | None = None,
        on_store_down: Callable[[Exception], None] | None = None,
    ):
        self._fetch = fetch
        self._store_down = store_down
        self._on_store_down = on_store_down
        self._entries: TtlCache[str, KeyRecord | None] = TtlCache(
            fresh_for=lambda record: ttl if record is not None else negative_ttl,
            stale_seconds=stale_ttl,
            max_size=max_size,
            clock=clock,
        )

    def get(self, key_hash: str) -> KeyRecord | None:
        """The record for a key hash, None when the key is unknown."""
        try:
            found = self._entries.get(key_hash, lambda: self._fetch(key_hash), self._store_down)
        except Exception as exc:
            self._heard_store_down(exc)
            raise KeyStoreUnavailable(str(exc)) from exc
        if found.error is not None:
            self._heard_store_down(found.error)
        return found.value

    def _heard_store_down(self, exc: Exception) -> None:
        if self._on_store_down is not None:
            self._on_store_down(exc)


def fetch_key(table: str, key_hash: str, home_region: str | None = None) -> KeyRecord | None:
    """The local table first; in a multi-region edge, a miss is asked once more in the home
    region, whose table the sync writes: a key created seconds ago may not have replicated here
    yet (docs/multi-region.md). A failed home lookup counts as a miss: the local replica is this
    region's truth, and a home outage must not turn every unknown key into a 503.

    Every call is one attempt within the request's deadline (`deadline.current()`); OutOfTime
    (no time left for a call) is a failure like any other: the local one is a 503 or a stale answer.
    Each region's table has its back-off (`table_backoff`): while it holds off, that region is not
    asked (BackingOff from the local one; the home one is a miss).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.runtime import deadline
    from chalicelib.runtime.aws import client
    from chalicelib.runtime.observability import count

    limit = deadline.current()
    with table_backoff(None).attempt((BotoCoreError, ClientError)):
        record = _fetch_local(table, key_hash, limit)
    if record is not None or not home_region or home_region == client("dynamodb").meta.region_name:
        return record
    try:
        with table_backoff(home_region).attempt((BotoCoreError, ClientError)):
            record = fetch_key_item(table, key_hash, home_region, limit.call_timeout(HOME_LOOKUP_TIMEOUT_SECONDS))
    except (BotoCoreError, ClientError, deadline.OutOfTime, BackingOff):
        count("key_home_lookup_failed")  # the home region failed, or is backing off: a miss
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
        store_down=_local_table_down,
        on_store_down=_count_store_down,
    )


@per_container
def table_backoff(region: str | None) -> Backoff:
    """The container's back-off for the keys table of `region` (None: its own region's)."""
    where = f"keys table in {region}" if region else "keys table"
    return Backoff(where, BACKOFF_FIRST_SECONDS, BACKOFF_LONGEST_SECONDS)


def _local_table_down() -> None:
    """BackingOff while the local table's back-off holds off: cached keys answer at once."""
    table_backoff(None).refuse_while_holding_off()


def _count_store_down(_exc: Exception) -> None:
    """A key answered without the table (its cached record past its TTL, or a 503): one count,
    summed per interval (a line per request would be the outage's biggest log bill); the back-off
    logs when it opens and closes."""
    from chalicelib.runtime.observability import count_per_interval

    count_per_interval("keys_table_unavailable")
