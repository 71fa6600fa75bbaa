"""What the Loki and Influx sinks both read from an event: times in nanoseconds, OTLP
attributes, the service name, the entries of a batch. Pure functions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from chalicelib.forward.sinks.base import Envelope

# Keys an SDK record may carry its own time in, first found wins.
TIME_KEYS = ("timestamp", "time", "datetime", "at", "ts")
SERVICE_KEYS = ("service_name", "service", "source", "log_group")
MAX_LABEL_VALUE = 100


def received_ns(envelope: Envelope) -> int:
    """When the edge accepted the event (CONTRACT §5 `received_at`), in ns since the epoch."""
    return parse_time_ns(envelope.get("received_at")) or 0


def parse_time_ns(value: Any) -> int | None:
    """Epoch seconds, ms, µs or ns (told apart by size), an OTLP nano string, or ISO 8601; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_time_ns(int(text))
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
    if isinstance(value, (int, float)) and value > 0:
        for scale, below in ((1_000_000_000, 1e11), (1_000_000, 1e14), (1_000, 1e17)):
            if value < below:
                return int(value * scale)
        return int(value)
    return None


def unix_nano(value: Any) -> int | None:
    """An OTLP `*UnixNano` field (always ns, a string in OTLP JSON); None when absent or zero."""
    try:
        nanos = int(value)
    except (TypeError, ValueError):
        return None
    return nanos if nanos > 0 else None


def record_time_ns(record: dict[str, Any], fallback: int) -> int:
    for key in TIME_KEYS:
        if key in record:
            parsed = parse_time_ns(record[key])
            if parsed:
                return parsed
    return fallback


def otlp_value(value: Any) -> Any:
    """An OTLP JSON AnyValue as a plain value (string, number, bool, list, dict)."""
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "arrayValue" in value:
        return [otlp_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return otlp_attributes((value["kvlistValue"] or {}).get("values", []))
    return None


def otlp_attributes(attributes: Any) -> dict[str, Any]:
    """OTLP `[{"key", "value": AnyValue}]` as a dict."""
    if not isinstance(attributes, list):
        return {}
    return {a["key"]: otlp_value(a.get("value")) for a in attributes if isinstance(a, dict) and "key" in a}


def label_value(value: Any) -> str | None:
    """A bounded label or tag value, or None when there is none worth keeping."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = " ".join(str(value).split())[:MAX_LABEL_VALUE]
    return text or None


def service_name(record: dict[str, Any]) -> str | None:
    for key in SERVICE_KEYS:
        found = label_value(record.get(key))
        if found:
            return found
    return None


def entries(envelope: Envelope) -> list[dict[str, Any]]:
    """The records of an `{"entries": [...]}` batch event (objects only)."""
    batch = (envelope.get("payload") or {}).get("entries")
    return [entry for entry in batch if isinstance(entry, dict)] if isinstance(batch, list) else []


def otlp_resources(payload: Any, resources_key: str, scopes_key: str, items_key: str) -> Iterator[tuple]:
    """(resource attributes, item) for every span, log record or metric of an OTLP JSON export."""
    if not isinstance(payload, dict):
        return
    for resource in payload.get(resources_key) or []:
        if not isinstance(resource, dict):
            continue
        attributes = otlp_attributes((resource.get("resource") or {}).get("attributes"))
        for scope in resource.get(scopes_key) or []:
            for item in (scope or {}).get(items_key) or []:
                if isinstance(item, dict):
                    yield attributes, item
