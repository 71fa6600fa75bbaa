"""`GET /api/config`: the SDK's remote config, proxied to Lookout and cached in the container.

The SDK caches whatever JSON it gets as its config for minutes, so a stale good
answer always beats an error: fresh answers live 60 s per (key, overrides)
(LOOKOUT_EDGE_CONFIG_FRESH_SECONDS, for tests), and
while Lookout fails the last good one is served for up to 24 h. After Lookout failed (no answer,
or a 5xx) the container stops asking it for a while (`ConfigCache.upstream`, runtime/backoff.py):
the last good copy, or the 503, is answered at once instead of after a stalled call. The ingest path
only reads `cached_version()`; it never fetches. Each key's share of the cache is bounded
(see OVERRIDES_PER_KEY), so no key's overrides can push out another key's copy.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.keys_item import hash_key
from chalicelib.edge import auth
from chalicelib.runtime.backoff import BackingOff, Backoff
from chalicelib.runtime.container import per_container
from chalicelib.runtime.ttl_cache import Lru, TtlCache

FRESH_SECONDS = 60.0
STALE_SECONDS = 24 * 3600.0
# Bounds (#15 item 7): one key holds at most OVERRIDES_PER_KEY overrides values (least recently
# used goes first, within that key only) and lets at most that many new values reach Lookout per
# fresh window; the whole cache holds at most MAX_ENTRIES answers, dropping least recently used
# keys whole. So 5,000 distinct overrides on one key cost 16 fetches a minute, not 5,000, and
# never push out another key's last good copy.
OVERRIDES_PER_KEY = 16
MAX_ENTRIES = 5_000
CONFIG_PATH = "/api/config"
# Connect and read timeout (each) of the one GET to Lookout, less when the request's deadline is
# nearer (runtime/deadline.py); a stalled Lookout costs the request at most twice this.
UPSTREAM_TIMEOUT_SECONDS = 1.0
# After a failed call, Lookout's config is not asked again for 1 s, doubling while the probes fail,
# at most 30 s (the SDK's retry of a 503 waits its Retry-After: 30 s).
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_LONGEST_SECONDS = 30.0


@dataclass(frozen=True)
class BackendConfig:
    """What Lookout answered: status and raw body (None status = no answer at all)."""

    status: int | None
    body: bytes = b""


@dataclass(frozen=True)
class ConfigAnswer:
    status: int
    body: bytes
    stale: bool = False


Fetch = Callable[[str, str | None], BackendConfig]


class _NotCached(Exception):
    """The fetch gave nothing worth caching; `answer` is None when it was not even tried."""

    def __init__(self, answer: BackendConfig | None):
        super().__init__("no good config answer")
        self.answer = answer


class _LookoutDown(Exception):
    """Lookout gave no answer or a 5xx: what opens the upstream back-off."""

    def __init__(self, answer: BackendConfig):
        super().__init__("Lookout did not answer with a config")
        self.answer = answer


@dataclass
class _KeyConfigs:
    """One key's good answers by overrides value, its newest version, and its recent new-value fetches."""

    answers: TtlCache[str, bytes]
    version: str | None = None
    new_value_fetches: deque[float] = field(default_factory=deque)

    def may_fetch_new_value(self, now: float, window: float) -> bool:
        """At most OVERRIDES_PER_KEY not-yet-held overrides values go to Lookout per window."""
        while self.new_value_fetches and now - self.new_value_fetches[0] >= window:
            self.new_value_fetches.popleft()
        if len(self.new_value_fetches) >= OVERRIDES_PER_KEY:
            return False
        self.new_value_fetches.append(now)
        return True


class ConfigCache:
    """Per (key hash, overrides) cache of good config documents, and each key's latest version."""

    def __init__(
        self,
        fetch: Fetch,
        clock: Callable[[], float] = time.monotonic,
        fresh_seconds: float = FRESH_SECONDS,
        max_entries: int = MAX_ENTRIES,
    ):
        self._fetch = fetch
        self._clock = clock
        self._fresh_seconds = fresh_seconds
        self._max_entries = max_entries
        self._keys: Lru[str, _KeyConfigs] = Lru(max_entries)
        self._lock = threading.Lock()
        self.upstream = Backoff("Lookout's remote config", BACKOFF_FIRST_SECONDS, BACKOFF_LONGEST_SECONDS, clock)

    def get(self, key_hash: str, raw_key: str, overrides: str | None) -> ConfigAnswer:
        """The config for this key and overrides: cached, fetched, or the last good one."""
        configs = self._configs(key_hash)
        slot = overrides or ""

        def fetch() -> bytes:
            if not configs.answers.holds(slot):
                with self._lock:
                    allowed = configs.may_fetch_new_value(self._clock(), self._fresh_seconds)
                if not allowed:
                    raise _NotCached(None)
            answer = self._ask_lookout(raw_key, overrides)
            document = _config_document(answer)
            if document is None:
                raise _NotCached(answer)
            if document.get("version") is not None:
                configs.version = str(document["version"])
            return answer.body

        try:
            found = configs.answers.get(slot, fetch, self.upstream.refuse_while_holding_off)
        except BackingOff:
            return ConfigAnswer(503, _unavailable())
        except _NotCached as failed:
            answer = failed.answer
            if answer is not None and answer.status is not None and 400 <= answer.status < 500:
                return ConfigAnswer(answer.status, answer.body)  # Lookout's own word on this key
            return ConfigAnswer(503, _unavailable())
        self._bound_entries()
        return ConfigAnswer(200, found.value, stale=found.stale)

    def _ask_lookout(self, raw_key: str, overrides: str | None) -> BackendConfig:
        """One fetch through the back-off: BackingOff, without a call, while it holds off."""
        try:
            with self.upstream.attempt((_LookoutDown,)):
                answer = self._fetch(raw_key, overrides)
                if answer.status is None or answer.status >= 500:
                    raise _LookoutDown(answer)
        except _LookoutDown as down:
            return down.answer
        return answer

    def cached_version(self, key_hash: str) -> str | None:
        """The `version` of the newest config held for this key, if any (no I/O)."""
        with self._lock:
            configs = self._keys.get(key_hash)
        return configs.version if configs is not None else None

    def _configs(self, key_hash: str) -> _KeyConfigs:
        with self._lock:
            configs = self._keys.get(key_hash)
            if configs is None:
                answers: TtlCache[str, bytes] = TtlCache(
                    fresh_for=lambda _body: self._fresh_seconds,
                    stale_seconds=STALE_SECONDS,
                    max_size=OVERRIDES_PER_KEY,
                    clock=self._clock,
                )
                configs = _KeyConfigs(answers)
                self._keys.put(key_hash, configs)
            return configs

    def _bound_entries(self) -> None:
        """Drop least recently used keys whole until at most `max_entries` answers are held
        (the key just used is the most recent one: it stays)."""
        with self._lock:
            held = sum(len(configs.answers) for configs in self._keys.values())
            while held > self._max_entries and len(self._keys) > 1:
                _, dropped = self._keys.pop_oldest()
                held -= len(dropped.answers)


def _config_document(answer: BackendConfig) -> dict[str, Any] | None:
    """The parsed document of a good answer (200 with a JSON object), else None."""
    if answer.status != 200:
        return None
    try:
        document = json.loads(answer.body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _unavailable() -> bytes:
    message = "the remote config is unavailable and no earlier copy is cached; retry shortly"
    return json.dumps({"error": "config_unavailable", "message": message}).encode()


def fetch_from_lookout(raw_key: str, overrides: str | None) -> BackendConfig:
    """GET {backend}/api/config with the SDK's key and overrides, on the shared keep-alive pool,
    one attempt within the request's deadline (no answer at all when no call fits in it)."""
    import urllib3

    from chalicelib.runtime import deadline, http_pool
    from chalicelib.runtime.config import settings

    base = settings().backend_url
    if not base:
        return BackendConfig(None)
    headers = {"X-Api-Key": raw_key, "Accept": "application/json"}
    if overrides is not None:
        headers["X-Lookout-Env-Overrides"] = overrides
    try:
        timeout = deadline.current().call_timeout(UPSTREAM_TIMEOUT_SECONDS)
    except deadline.OutOfTime:
        return BackendConfig(None)
    try:
        response = http_pool.pool(timeout, timeout).request(
            "GET", base + CONFIG_PATH, headers=headers, redirect=False, retries=False
        )
    except (urllib3.exceptions.HTTPError, OSError):
        return BackendConfig(None)
    return BackendConfig(response.status, response.data)


@per_container
def config_cache() -> ConfigCache:
    """The container's config cache, built on the first `GET /api/config`."""
    from chalicelib.runtime.config import settings

    return ConfigCache(fetch_from_lookout, fresh_seconds=settings().config_fresh_seconds)


def cached_version(key_hash: str) -> str | None:
    """For the ingest path: never builds the cache, never fetches."""
    cache = config_cache.peek()
    return cache.cached_version(key_hash) if cache is not None else None


def answer_request(headers: Mapping[str, str]) -> tuple[int, bytes, dict[str, str]]:
    """`GET /api/config`: 401 for unknown keys without asking Lookout, else the cached proxy.

    (status, JSON body, extra headers). When the key store cannot say, a key whose config
    was served before is still answered from the cache.
    """
    raw_key = auth.extract_api_key(headers, None)
    if raw_key is None:
        return _error(auth.missing_key("X-Api-Key"))
    key_hash = hash_key(raw_key)
    try:
        auth.known_key(key_hash)
    except EdgeError as error:
        if error.status != 503 or cached_version(key_hash) is None:
            return _error(error)
    answer = config_cache().get(key_hash, raw_key, headers.get("x-lookout-env-overrides"))
    extra = {"Retry-After": "30"} if answer.status == 503 else {}
    if answer.stale:
        extra["X-Lookout-Config-Stale"] = "1"
    return answer.status, answer.body, extra


def _error(error: EdgeError) -> tuple[int, bytes, dict[str, str]]:
    return error.status, json.dumps(error.body()).encode(), error.headers()
