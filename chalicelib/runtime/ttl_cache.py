"""LRU + TTL + serve-stale: the one cache type behind the key cache and the remote-config cache.

An entry is fresh for a while (the time may depend on the value: unknown keys live
shorter); after that the next `get` fetches again, and when that fetch fails the old
entry is served as stale for a longer while, because a stale answer beats an error.
Fetches run outside the lock: a slow store never blocks hits on other keys.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

FLIGHT_LOCKS = 64

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A bounded map that forgets its least recently used entries first (values are never None).

    Not locked itself: its owner holds the lock.
    """

    def __init__(self, max_size: int):
        self.max_size = max_size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def pop_oldest(self) -> tuple[K, V]:
        return self._entries.popitem(last=False)

    def values(self) -> Iterator[V]:
        return iter(list(self._entries.values()))

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Cached(Generic[V]):
    """A value from the cache; `stale` when it was served because the fetch failed (`error`)."""

    value: V
    stale: bool = False
    error: Exception | None = None


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    stored_at: float


class TtlCache(Generic[K, V]):
    """Bounded LRU whose entries are fresh for `fresh_for(value)` s and served stale up to `stale_seconds`."""

    def __init__(
        self,
        fresh_for: Callable[[V], float],
        stale_seconds: float,
        max_size: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._fresh_for = fresh_for
        self._stale_seconds = stale_seconds
        self._clock = clock
        self._entries: Lru[K, _Entry[V]] = Lru(max_size)
        self._lock = threading.Lock()
        # Misses of one key fetch one at a time; a fixed set of locks (a key's is hash(key) % n)
        # keeps memory flat whatever keys are tried, at the cost of rare waits between two keys.
        self._flights = [threading.Lock() for _ in range(FLIGHT_LOCKS)]

    def get(self, key: K, fetch: Callable[[], V], store_down: Callable[[], None] | None = None) -> Cached[V]:
        """The fresh entry, else `fetch()` (stored), else — if fetch raised — the stale entry.

        One fetch per key at a time (single-flight): concurrent misses for a key wait for the
        first one's answer rather than each asking the store. The answer is stamped when the
        fetch ends, so a slow fetch does not eat the entry's freshness.
        `store_down` raises when the store is known to be down (a back-off): then the stale
        entry is served at once, without waiting for a fetch in flight.
        Raises what `fetch` (or `store_down`) raised when there is no entry young enough to stand in.
        """
        entry = self._fresh(key)
        if isinstance(entry, Cached):
            return entry
        if store_down is not None:
            try:
                store_down()
            except Exception as exc:
                return self._stale(entry, exc)
        with self._flight(key):
            again = self._fresh(key)
            if isinstance(again, Cached):
                return again
            try:
                value = fetch()
            except Exception as exc:
                return self._stale(again, exc)
            self.put(key, value)
            return Cached(value)

    def _stale(self, entry: _Entry[V] | None, error: Exception) -> Cached[V]:
        """The old entry in place of a failed fetch, or `error` raised when it is too old or absent."""
        if entry is not None and self._clock() - entry.stored_at < self._stale_seconds:
            return Cached(entry.value, stale=True, error=error)
        raise error

    def _fresh(self, key: K) -> Cached[V] | _Entry[V] | None:
        """The fresh value as `Cached`, else the old entry (or None) for stale service."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.stored_at < self._fresh_for(entry.value):
            return Cached(entry.value)
        return entry

    def _flight(self, key: K) -> threading.Lock:
        return self._flights[hash(key) % FLIGHT_LOCKS]

    def holds(self, key: K) -> bool:
        """Whether an entry (fresh or not) is held for `key`; does not count as a use."""
        with self._lock:
            return key in self._entries

    def put(self, key: K, value: V, now: float | None = None) -> None:
        with self._lock:
            self._entries.put(key, _Entry(value, self._clock() if now is None else now))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """The keys held, oldest use first."""
        with self._lock:
            return iter(self._entries)
