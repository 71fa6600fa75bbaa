"""Which ingest path carries which signal (CONTRACT §3), and per-signal shape rules."""

from __future__ import annotations

from typing import Any

from chalicelib.contract.errors import bad_request, too_large

ERROR_PATHS = ("/api/ingest", "/api/v1/ingest", "/api/v1/errors")
OTLP_PATH = "/api/ingest/trace/otlp"
NAMED_SIGNALS = frozenset(
    {
        "log",
        "rum",
        "trace",
        "profile",
        "feedback",
        "metric",
        "security",
        "notification",
        "model",
        "mail",
        "job",
        "gate",
        "event",
        "dump",
        "cron",
        "batch",
        "auth",
    }
)
LOG_BATCH_LIMIT = 200
# Signals whose project flag can switch them off (item attribute → signals).
SIGNAL_FLAGS = {"trace": "trace_enabled", "otlp": "trace_enabled", "rum": "rum_enabled"}
# Ids the SDK reads back from the 202 body and sends again with the final status.
ASSIGNED_ID_FIELDS = {"job": "run_id", "cron": "check_in_id"}


def signal_for_path(path: str) -> str | None:
    """The signal a path carries, or None when the path is not an ingest route."""
    if path in ERROR_PATHS:
        return "error"
    if path == OTLP_PATH:
        return "otlp"
    prefix = "/api/ingest/"
    if path.startswith(prefix):
        name = path[len(prefix) :]
        if name in NAMED_SIGNALS:
            return name
    return None


def check_shape(signal: str, payload: Any) -> None:
    """Refuse payloads that cannot be the signal's document (400) or pass its limits (413)."""
    if not isinstance(payload, dict):
        raise bad_request(f"the {signal} body must be a JSON object, got {_json_type(payload)}")
    if signal == "otlp" and not isinstance(payload.get("resourceSpans"), list):
        raise bad_request('an OTLP/HTTP JSON body needs a "resourceSpans" array')
    if signal == "log":
        _check_log_batch(payload)


def _check_log_batch(payload: dict) -> None:
    batch = next((payload[k] for k in ("entries", "lines") if k in payload), None)
    if batch is None:
        raise bad_request('a log body needs an "entries" or a "lines" array')
    if not isinstance(batch, list):
        raise bad_request('"entries"/"lines" must be a JSON array')
    if len(batch) > LOG_BATCH_LIMIT:
        raise too_large(f"a log body holds at most {LOG_BATCH_LIMIT} entries or lines, got {len(batch)}")


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
