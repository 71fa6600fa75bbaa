"""Settings read once per container from the environment (names: CONTRACT §2)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.runtime.container import per_container

DEFAULT_KEYS_TABLE = "lookout-edge-keys"
DEFAULT_IDEMPOTENCY_TABLE = "lookout-edge-idempotency"


class ConfigError(RuntimeError):
    """A required setting is missing; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    keys_table: str = DEFAULT_KEYS_TABLE
    idempotency_table: str = DEFAULT_IDEMPOTENCY_TABLE
    queue_url: str | None = None
    dlq_url: str | None = None
    backend_url: str | None = None
    token: str | None = None
    token_param: str | None = None
    db_url: str | None = None
    db_url_param: str | None = None
    # An RDS-managed Secrets Manager secret ({"username", "password"}) whose credentials replace the
    # URL's (docs/deploy.md, private Lookout): rotation-safe, re-read once when MySQL refuses them.
    db_secret_arn: str | None = None
    keys_query: str | None = None
    # Forwarder destinations beside Lookout (CONTRACT §11) and log shipping (§12).
    sinks: str | None = None
    sinks_param: str | None = None
    lookout_signals: str | None = None
    tail_api_key: str | None = None
    tail_api_key_param: str | None = None
    # Internal knobs (not part of the contract; sane defaults for operators).
    key_cache_ttl: float = 60.0
    key_negative_ttl: float = 10.0
    key_stale_ttl: float = 3600.0
    key_cache_size: int = 10_000
    # Seconds a remote config answer (GET /api/config) stays fresh; tests shorten it.
    config_fresh_seconds: float = 60.0
    mass_delete_share: float = 0.10
    # Forwarder knobs: HTTP timeouts well under the Lambda timeout, retry backoff, token cache.
    forward_connect_timeout: float = 3.0
    forward_read_timeout: float = 10.0
    retry_base_seconds: int = 10
    retry_max_seconds: int = 900
    token_cache_seconds: int = 300
    # Edge log bill (docs/performance.md): the share of accepted requests that get an INFO line
    # (refusals and errors are always logged), and seconds between the container's EMF lines
    # of accepted counts (refusals are written at once).
    log_accepted_share: float = 0.0
    metrics_interval_seconds: float = 60.0
    # Multi-region edge (docs/multi-region.md): the region whose keys table the sync writes; a key
    # missing from this region's replica is looked up there before the edge answers 401.
    home_region: str | None = None
    # Where the edge spills events its region's queue refuses or does not answer (docs/reliability.md,
    # "Spilling"): a queue in another region. Unset in a multi-region edge outside the home region:
    # the home region's queue of the same name.
    fallback_queue_url: str | None = None
    # Seconds from the handler's start within which the edge answers (runtime/deadline.py); 0 (unset):
    # REQUEST_BUDGET_SECONDS, 3.5 s, under the PHP SDK's 5 s. Raise it only for clients that wait
    # longer (OTLP exporters wait 10 s), or where the function runs slower than Lambda (the tests'
    # emulated arm64 run).
    request_budget_seconds: float = 0.0

    def require(self, name: str) -> str:
        """Return a required setting or raise naming its environment variable."""
        value: str | None = getattr(self, name)
        if not value:
            raise ConfigError(f"{ENV_NAMES[name]} is not set")
        return value


ENV_NAMES = {
    "keys_table": "LOOKOUT_EDGE_KEYS_TABLE",
    "idempotency_table": "LOOKOUT_EDGE_IDEMPOTENCY_TABLE",
    "queue_url": "LOOKOUT_EDGE_QUEUE_URL",
    "dlq_url": "LOOKOUT_EDGE_DLQ_URL",
    "backend_url": "LOOKOUT_INGEST_EDGE_BACKEND_URL",
    "token": "LOOKOUT_INGEST_EDGE_TOKEN",
    "token_param": "LOOKOUT_INGEST_EDGE_TOKEN_PARAM",
    "db_url": "LOOKOUT_DB_URL",
    "db_url_param": "LOOKOUT_DB_URL_PARAM",
    "db_secret_arn": "LOOKOUT_DB_SECRET_ARN",
    "keys_query": "LOOKOUT_EDGE_KEYS_QUERY",
    "sinks": "LOOKOUT_EDGE_SINKS",
    "sinks_param": "LOOKOUT_EDGE_SINKS_PARAM",
    "lookout_signals": "LOOKOUT_EDGE_LOOKOUT_SIGNALS",
    "tail_api_key": "LOOKOUT_EDGE_TAIL_API_KEY",
    "tail_api_key_param": "LOOKOUT_EDGE_TAIL_API_KEY_PARAM",
    "key_cache_ttl": "LOOKOUT_EDGE_KEY_CACHE_TTL",
    "key_negative_ttl": "LOOKOUT_EDGE_KEY_NEGATIVE_TTL",
    "key_stale_ttl": "LOOKOUT_EDGE_KEY_STALE_TTL",
    "key_cache_size": "LOOKOUT_EDGE_KEY_CACHE_SIZE",
    "config_fresh_seconds": "LOOKOUT_EDGE_CONFIG_FRESH_SECONDS",
    "mass_delete_share": "LOOKOUT_EDGE_MASS_DELETE_SHARE",
    "forward_connect_timeout": "LOOKOUT_EDGE_FORWARD_CONNECT_TIMEOUT",
    "forward_read_timeout": "LOOKOUT_EDGE_FORWARD_READ_TIMEOUT",
    "retry_base_seconds": "LOOKOUT_EDGE_RETRY_BASE_SECONDS",
    "retry_max_seconds": "LOOKOUT_EDGE_RETRY_MAX_SECONDS",
    "token_cache_seconds": "LOOKOUT_EDGE_TOKEN_CACHE_SECONDS",
    "home_region": "LOOKOUT_EDGE_HOME_REGION",
    "fallback_queue_url": "LOOKOUT_EDGE_FALLBACK_QUEUE_URL",
    "request_budget_seconds": "LOOKOUT_EDGE_REQUEST_BUDGET_SECONDS",
    "log_accepted_share": "LOOKOUT_EDGE_LOG_ACCEPTED_SHARE",
    "metrics_interval_seconds": "LOOKOUT_EDGE_METRICS_INTERVAL_SECONDS",
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an environment mapping (default: the process's); empty values are unset."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for field_name, env_name in ENV_NAMES.items():
        raw = (env.get(env_name) or "").strip()
        if not raw:
            continue
        default = Settings.__dataclass_fields__[field_name].default
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            values[field_name] = raw
        else:
            try:
                values[field_name] = type(default)(raw)
            except ValueError as exc:
                raise ConfigError(f"{env_name} must be a number, got {raw!r}") from exc
    if isinstance(values.get("backend_url"), str):
        values["backend_url"] = str(values["backend_url"]).rstrip("/")
    return Settings(**values)  # type: ignore[arg-type]


@per_container
def settings() -> Settings:
    """The container's settings, read on first use (a test that changes the environment calls
    `settings.cache_clear()` or resets the container)."""
    return load_settings()
