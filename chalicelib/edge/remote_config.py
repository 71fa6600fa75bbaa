"""`GET /api/config`: the SDK's remote config, proxied to Lookout and cached in the container.

The SDK caches whatever JSON it gets as its config for minutes, so a stale good
answer always beats an error: fresh answers live 60 s per (key, overrides)
(LOOKOUT_EDGE_CONFIG_FRESH_SECONDS, for tests), and
while Lookout fails the last good one is served for up to 24 h. The ingest path
only reads `cached_version()`; it never fetches.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.runtime.container import per_container

FRESH_SECONDS = 60.0
STALE_SECONDS = 24 * 3600.0
MAX_ENTRIES = 5_000
CONFIG_PATH = "/api/config"


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


@dataclass
class _Entry:
    body: bytes
    fetched_at: float


Fetch = Callable[[str, str | None], BackendConfig]


class ConfigCache:
    """Per (key hash, overrides) cache of good config documents, and each key's latest version."""

    def __init__(self, fetch: Fetch, clock: Callable[[], float] = time.monotonic, fresh_seconds: float = FRESH_SECONDS):
        self._fetch = fetch
        self._clock = clock
        self._fresh_seconds = fresh_seconds
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str, raw_key: str, overrides: str | None) -> ConfigAnswer:
        """The config for this key and overrides: cached, fetched, or the last good one."""
        slot = (key_hash, overrides or "")
        now = self._clock()
        with self._lock:
            entry = self._entries.get(slot)
        if entry is not None and now - entry.fetched_at < self._fresh_seconds:
            return ConfigAnswer(200, entry.body)
        answer = self._fetch(raw_key, overrides)
        document = _config_document(answer)
        if document is not None:
            self._remember(slot, answer.body, document, now)
            return ConfigAnswer(200, answer.body)
        if entry is not None and now - entry.fetched_at < STALE_SECONDS:
            return ConfigAnswer(200, entry.body, stale=True)
        if answer.status is not None and 400 <= answer.status < 500:
            return ConfigAnswer(answer.status, answer.body)  # Lookout's own word on this key
        return ConfigAnswer(503, _unavailable())

    def cached_version(self, key_hash: str) -> str | None:
        """The `version` of the newest config held for this key, if any (no I/O)."""
        return self._versions.get(key_hash)

    def _remember(self, slot: tuple[str, str], body: bytes, document: dict[str, Any], now: float) -> None:
        with self._lock:
            self._entries[slot] = _Entry(body, now)
            self._entries.move_to_end(slot)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
            version = document.get("version")
            if version is not None:
                self._versions[slot[0]] = str(version)


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
    """GET {backend}/api/config with the SDK's key and overrides, on the shared keep-alive pool."""
    import urllib3

    from chalicelib.runtime import http
    from chalicelib.runtime.config import settings

    base = settings().backend_url
    if not base:
        return BackendConfig(None)
    headers = {"X-Api-Key": raw_key, "Accept": "application/json"}
    if overrides is not None:
        headers["X-Lookout-Env-Overrides"] = overrides
    try:
        response = http.pool(1.0, 2.0).request(
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
