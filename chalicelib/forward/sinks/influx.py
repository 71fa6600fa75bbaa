"""The InfluxDB sink: metrics as line protocol (CONTRACT §11).

v2 (default): `POST {url}/api/v2/write?org=&bucket=&precision=ns` with `Authorization: Token`.
v1 (`"version": 1`): `POST {url}/write?db=&precision=ns` (optional `rp`, `username`/`password`
as Basic auth). VictoriaMetrics accepts both.

Mapping (docs/sinks.md):
- `metric` (`{"entries": [...]}`): one point per entry. Measurement: the entry's `name`
  (else `metric`, `kind`, else `lookout_metric`). Tags: `project_id`, `signal`, and the
  entry's own `tags` object (scalars). Fields: every other scalar of the entry (numbers
  as floats, booleans, strings); `count=1` when there is none. Time: the entry's own
  (`timestamp`, `time`, `at`, ... in s/ms/µs/ns or ISO 8601), else the edge's
  `received_at` plus the entry's index in ns, so entries of one batch never overwrite each other.
- `otlp_metrics` (`resourceMetrics`): one point per data point. Measurement: the metric
  name. Tags: `project_id`, `signal`, `service_name`, the data point's attributes. Fields:
  `value` (gauge, sum), `count`/`sum`/`min`/`max` (histograms, summaries). Time: `timeUnixNano`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from chalicelib.contract.otlp import METRICS
from chalicelib.forward.sinks.base import Envelope, Outcome, Send
from chalicelib.forward.sinks.batching import MIB, Limits, deliver_in_requests
from chalicelib.forward.sinks.http_post import HttpAnswer, post, whole_request_outcome
from chalicelib.forward.sinks.mapping import (
    TIME_KEYS,
    entries,
    label_value,
    otlp_attributes,
    otlp_resources,
    received_ns,
    record_time_ns,
    unix_nano,
)
from chalicelib.forward.sinks.registry import SinkSpec

SUPPORTED_SIGNALS = frozenset({"metric", "otlp_metrics"})
OPTIONS = frozenset({"version", "org", "bucket", "token", "db", "rp", "username", "password"})
NAME_KEYS = ("name", "metric", "kind")
RESERVED_KEYS = frozenset({*NAME_KEYS, "tags", "timestamp", "time", "datetime", "at", "ts"})
DEFAULT_MEASUREMENT = "lookout_metric"
INFINITIES = (float("inf"), float("-inf"))
Point = tuple[str, dict[str, str], dict[str, Any], int]
# 1 MiB per write, as Lookout's and Loki's: far inside InfluxDB's 25 MB `max-body-size` (v1 and v2).
LIMITS = Limits(max_events=100, max_bytes=MIB)


class InfluxSink:
    def __init__(self, name: str, signals: frozenset[str], write_url: str, headers: dict[str, str]) -> None:
        self.name = name
        self.signals = signals
        self.write_url = write_url
        self.headers = headers

    def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        return self.prepare(envelopes)()

    def prepare(self, envelopes: Sequence[Envelope]) -> Send:
        mapped = [_text(e) for e in envelopes]  # once: sizes, then bodies

        def send(batch: Sequence[int]) -> tuple[HttpAnswer, list[Outcome]]:
            body = "".join(mapped[i] for i in batch).encode()
            if not body:  # nothing to write (a batch of empty entries): taken as it is
                answer = HttpAnswer(204)
            else:
                answer, _ = post(self.write_url, body, self.headers)
            return answer, [whole_request_outcome(answer)] * len(batch)

        sizes = [len(text) for text in mapped]
        return lambda: deliver_in_requests(self.name, LIMITS, sizes, send)


def build(spec: SinkSpec) -> InfluxSink:
    version = spec.options.get("version", 2)
    if type(version) is not int:  # true == 1 and 2.0 == 2 in Python: only the JSON integers 1 and 2
        raise spec.error(f'"version" must be 1 or 2, got {json.dumps(version)}')
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if version == 2:
        query = {"org": spec.text("org", required=True), "bucket": spec.text("bucket", required=True)}
        token = spec.text("token", header=True)
        if token:
            headers["Authorization"] = f"Token {token}"
        path = "/api/v2/write"
    elif version == 1:
        query = {"db": spec.text("db", required=True)}
        if spec.text("rp"):
            query["rp"] = spec.text("rp")
        username, password = spec.text("username"), spec.text("password")
        if username or password:
            if not (username and password):
                raise spec.error('"username" and "password" go together')
            if ":" in username:  # RFC 7617: Basic auth's user-id ends at the first colon
                raise spec.error('"username" must not contain ":"')
            headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        path = "/write"
    else:
        raise spec.error(f'"version" must be 1 or 2, got {version!r}')
    url = f"{spec.url}{path}?{urlencode({**query, 'precision': 'ns'})}"
    return InfluxSink(spec.name, spec.signals, url, headers)


def _text(envelope: Envelope) -> str:
    """The event's lines, each ending in a newline."""
    found = lines(envelope)
    return "\n".join(found) + "\n" if found else ""


def lines(envelope: Envelope) -> list[str]:
    """The event's points as line protocol lines."""
    if envelope.get("signal") != METRICS.signal:
        return entry_lines(envelope)
    return [line for point in otlp_points(envelope) if (line := line_protocol(*point))]


def entry_lines(envelope: Envelope) -> list[str]:
    """An `{"entries": [...]}` event's lines, one per entry.

    The forwarder's largest CPU cost: a batch of 100 SDK metric events of 100 entries is 10,000
    lines. So the work that depends only on an entry's keys (which of them names it, which are
    fields, escaped and sorted, whether it carries its own time or tags) is done once per set of
    keys (`_shape`), the event's tag text once per event, and each line is its values
    formatted by type (tests/integration/test_influx_sink.py: every shape, mixed in one event).
    Measured on 100 events of 100 entries, best of 7 on a loaded machine: ~1.2 µs a line for
    `{"name", "value"}`, ~1.5 µs for the SDK's `{"kind", "n", "tags": [], "at"}`, where building
    and sorting each point's maps took ~5-7 µs (docs/performance.md).
    """
    base = _base_tags(envelope)
    base_text = _tag_text(base)
    received = received_ns(envelope)
    found = []
    named, measurement = None, DEFAULT_MEASUREMENT  # the last entry's name: a batch repeats a few
    named_by = None  # the string in the entry's first name key that gave `named`, when one did
    shape_of, shape = None, _shape(())
    for index, entry in enumerate(entries(envelope)):
        keys = tuple(entry)
        if keys != shape_of:  # entries of a batch share their keys: one cache look-up per change
            shape_of, shape = keys, _shape(keys)
        names, fields, tagged, timed = shape
        tag_text = base_text
        if tagged:
            own_tags = entry["tags"]
            if isinstance(own_tags, dict) and own_tags:
                tag_text = _tag_text({**base, **{str(k): v for k, v in own_tags.items() if label_value(v)}})
        if len(fields) == 1:  # the usual entry: one value
            key, escaped = fields[0]
            value = entry[key]
            kind = type(value)
            if kind is float and value == value and value not in INFINITIES:
                field_text = f"{escaped}={value!r}"
            elif kind is int:
                field_text = f"{escaped}={float(value)!r}"
            elif (text := _field_value(_float_if_number(value))) is not None:
                field_text = f"{escaped}={text}"
            else:
                continue  # nothing writable: a point needs a field
        elif fields:
            parts = []
            for key, escaped in fields:
                value = entry[key]
                kind = type(value)
                if kind is float:
                    text = repr(value) if value == value and value not in INFINITIES else None
                elif kind is int:
                    text = repr(float(value))  # JSON numbers all as floats: `1` then `1.5` is no type conflict
                else:
                    text = _field_value(_float_if_number(value))
                if text is not None:
                    parts.append(f"{escaped}={text}")
            if not parts:
                continue  # nothing writable: a point needs a field
            field_text = ",".join(parts)
        else:
            field_text = "count=1.0"
        if timed is None:
            timestamp = received + index
        elif type(seconds := entry[timed]) is int and 0 < seconds < 1e11:  # the SDKs' epoch seconds
            timestamp = seconds * 1_000_000_000
        else:
            timestamp = record_time_ns(entry, received + index)
        first = entry[names[0]] if names else None
        if first is None or type(first) is not str or first != named_by:  # else: the same name again
            name = _name(entry, names)
            if name != named:
                named, measurement = name, _measurement(name)
            named_by = first if name is first else None
        found.append(f"{measurement}{tag_text} {field_text} {timestamp}")
    return found


@lru_cache(maxsize=1024)
def _shape(keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], bool, str | None]:
    """For an entry with these keys: those of NAME_KEYS it has (in that order), its fields as
    (key, escaped key) sorted by key, whether it has `tags`, its first time key (as
    `record_time_ns` looks for them) or None."""
    names = tuple(key for key in NAME_KEYS if key in keys)
    fields = tuple((key, _key(key)) for key in sorted(keys) if key not in RESERVED_KEYS)
    return names, fields, "tags" in keys, next((key for key in TIME_KEYS if key in keys), None)


def _name(entry: dict[str, Any], names: tuple[str, ...]) -> str:
    """The first of `names` with a value worth a label (as `label_value` judges it), as text."""
    for key in names:
        value = entry[key]
        if type(value) is str:
            if value and not value.isspace():
                return value
        elif value is not None and not isinstance(value, (dict, list)):
            return str(value)
    return DEFAULT_MEASUREMENT


def otlp_points(envelope: Envelope) -> Iterator[Point]:
    base = _base_tags(envelope)
    received = received_ns(envelope)
    payload = envelope.get("payload")
    for resource, metric in otlp_resources(payload, METRICS.resources, METRICS.scopes, METRICS.items):
        name = label_value(metric.get("name")) or DEFAULT_MEASUREMENT
        tags = {**base, **({"service_name": resource["service.name"]} if "service.name" in resource else {})}
        for data_type in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
            for index, point in enumerate((metric.get(data_type) or {}).get("dataPoints") or []):
                if not isinstance(point, dict):
                    continue
                timestamp = unix_nano(point.get("timeUnixNano")) or received + index
                point_tags = {**tags, **otlp_attributes(point.get("attributes"))}
                yield name, point_tags, _otlp_fields(point), timestamp


def _float_if_number(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _otlp_fields(point: dict[str, Any]) -> dict[str, Any]:
    if "asDouble" in point:
        return {"value": float(point["asDouble"])}
    if "asInt" in point:
        return {"value": int(point["asInt"])}
    return {k: float(point[k]) for k in ("count", "sum", "min", "max") if isinstance(point.get(k), (int, float, str))}


def _base_tags(envelope: Envelope) -> dict[str, Any]:
    return {"project_id": envelope.get("project_id"), "signal": envelope.get("signal")}


def line_protocol(measurement: str, tags: dict[str, Any], fields: dict[str, Any], timestamp: int) -> str | None:
    """One escaped line; None when no field is writable (a point needs at least one)."""
    field_text = ",".join(
        f"{_key(k)}={value}" for k, v in sorted(fields.items()) if (value := _field_value(v)) is not None
    )
    if not field_text:
        return None
    return f"{_measurement(measurement)}{_tag_text(tags)} {field_text} {timestamp}"


def _tag_text(tags: dict[str, Any]) -> str:
    items = tuple(sorted(tags.items()))
    try:
        return _cached_tag_text(items)
    except TypeError:  # a list or object value (never a tag): not hashable, so not cached
        return _cached_tag_text.__wrapped__(items)


@lru_cache(maxsize=1024)
def _cached_tag_text(items: tuple[tuple[str, Any], ...]) -> str:
    """`,key=value` for each tag with a value; the points of a batch share a few tag sets."""
    return "".join(f",{_key(k)}={_key(value)}" for k, v in items if (value := label_value(v)) and k)


@lru_cache(maxsize=4096)
def _measurement(name: str) -> str:
    """Escaped measurement name; cached, as `_key` and the tag sets: a batch repeats a few of each
    thousands of times (100 events of 100 entries are 10,000 lines)."""
    return _escape(" ".join(name.split()).lstrip("#"), ", ") or DEFAULT_MEASUREMENT  # "#" starts a comment


def _field_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}i" if abs(value) < 2**63 else None
    if isinstance(value, float):
        return repr(value) if value == value and value not in INFINITIES else None
    if isinstance(value, str):
        text = " ".join(value.splitlines())
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return None


@lru_cache(maxsize=4096)
def _key(text: str) -> str:
    """A tag key, tag value or field key: one line, `,` `=` and space escaped, no trailing backslash."""
    return _escape(" ".join(text.split()), ",= ").rstrip("\\")


def _escape(text: str, special: str) -> str:
    text = text.replace("\\", "\\\\") if "\\" in text else text
    for char in special:
        text = text.replace(char, "\\" + char)
    return text
