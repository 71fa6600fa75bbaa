"""The Loki sink: the push API, `POST {url}/loki/api/v1/push`, JSON streams, gzip (CONTRACT §11).

Labels are few and bounded, as Loki wants them: `project_id`, `signal`, `level` (one of
LEVELS) and `service_name` when known. Ids (event, trace, request) are never labels: they
are in the line, which is the record as JSON (`| json` in LogQL reads it back).

Mapping (docs/sinks.md):
- `log` `{"entries": [...]}`: one line per entry (the entry as JSON, plus `event_id`);
  `{"lines": [...], "source": ...}`: one line per raw line, `service_name` = source.
- `otlp_logs`: one line per log record (its body; attributes and ids as JSON beside it),
  `level` from `severityText`, `service_name` from the resource's `service.name`.
- any other signal: one line per event, the payload as JSON plus `event_id`.
Times: the record's own (`timestamp`, `time`, `timeUnixNano`, ...), else the edge's
`received_at` plus the record's index in ns, so lines of one event keep their order.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from chalicelib.contract.otlp import LOGS
from chalicelib.forward.sinks.base import Envelope, Outcome, Send
from chalicelib.forward.sinks.batching import MIB, Limits, deliver_in_requests
from chalicelib.forward.sinks.http_post import HttpAnswer, post, whole_request_outcome
from chalicelib.forward.sinks.mapping import (
    label_value,
    otlp_attributes,
    otlp_resources,
    otlp_value,
    received_ns,
    record_time_ns,
    service_name,
    unix_nano,
)
from chalicelib.forward.sinks.registry import SinkSpec

SUPPORTED_SIGNALS = None  # every signal can be read as log lines
OPTIONS = frozenset({"tenant", "token"})
PUSH_PATH = "/loki/api/v1/push"
LEVELS = frozenset({"trace", "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency", "fatal"})
LEVEL_ALIASES = {"warn": "warning", "err": "error", "crit": "critical", "emerg": "emergency", "information": "info"}
Line = tuple[dict[str, str], int, str]
# Promtail's and Alloy's `loki.write` batch: 1 MiB of log lines per push (before gzip).
LIMITS = Limits(max_events=100, max_bytes=MIB)
LINE_OVERHEAD = 24  # a line's timestamp and JSON punctuation in the push body
# gzip's fastest level: a push of 100 SDK batch events (~370 KB of JSON) costs ~0.7 ms of CPU
# instead of ~2.2 ms at the default 6, for a body ~2x larger here (real log lines compress less
# either way); CPU is what a fan-out waits for (docs/performance.md), bytes go to the operator's Loki.
GZIP_LEVEL = 1


class LokiSink:
    def __init__(self, name: str, signals: frozenset[str], push_url: str, headers: dict[str, str]) -> None:
        self.name = name
        self.signals = signals
        self.push_url = push_url
        self.headers = headers

    def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        return self.prepare(envelopes)()

    def prepare(self, envelopes: Sequence[Envelope]) -> Send:
        mapped = [list(lines(e)) for e in envelopes]  # mapped once: the sizes, then the bodies

        def send(batch: Sequence[int]) -> tuple[HttpAnswer, list[Outcome]]:
            body = push_body([mapped[i] for i in batch])
            if body is None:
                answer = HttpAnswer(204)
            else:
                answer, _ = post(self.push_url, gzip.compress(body, compresslevel=GZIP_LEVEL), self.headers)
            return answer, [whole_request_outcome(answer)] * len(batch)

        sizes = [sum(len(text) + LINE_OVERHEAD for _, _, text in event) for event in mapped]
        return lambda: deliver_in_requests(self.name, LIMITS, sizes, send)


def build(spec: SinkSpec) -> LokiSink:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    tenant, token = spec.text("tenant", header=True), spec.text("token", header=True)
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return LokiSink(spec.name, spec.signals, spec.url + PUSH_PATH, headers)


def push_body(events: Iterable[Iterable[Line]]) -> bytes | None:
    """`{"streams": [{"stream": labels, "values": [[ns, line], ...]}]}` from each event's `lines`;
    None when there is no line."""
    streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
    for event in events:
        for labels, timestamp, line in event:
            streams.setdefault(tuple(sorted(labels.items())), []).append([str(timestamp), line])
    if not streams:
        return None
    body = {"streams": [{"stream": dict(key), "values": values} for key, values in streams.items()]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def lines(envelope: Envelope) -> Iterator[Line]:
    signal, payload = envelope.get("signal"), envelope.get("payload")
    received = received_ns(envelope)
    base = {"project_id": str(envelope.get("project_id")), "signal": str(signal)}
    event_id = envelope.get("event_id")
    if signal == LOGS.signal:
        yield from _otlp_lines(payload, base, received)
    elif signal == "log" and isinstance(payload, dict) and isinstance(payload.get("lines"), list):
        labels = _labels(base, None, service_name(payload))
        for index, text in enumerate(payload["lines"]):
            yield labels, received + index, str(text)
    elif signal == "log" and isinstance(payload, dict) and isinstance(payload.get("entries"), list):
        for index, entry in enumerate(e for e in payload["entries"] if isinstance(e, dict)):
            labels = _labels(base, entry.get("level"), service_name(entry) or service_name(payload))
            yield labels, record_time_ns(entry, received + index), _json({**entry, "event_id": event_id})
    else:
        record = payload if isinstance(payload, dict) else {"payload": payload}
        level = record.get("level") or ("error" if signal == "error" else None)
        yield _labels(base, level, service_name(record)), received, _json({**record, "event_id": event_id})


def _otlp_lines(payload: Any, base: dict[str, str], received: int) -> Iterator[Line]:
    for index, (resource, record) in enumerate(otlp_resources(payload, LOGS.resources, LOGS.scopes, LOGS.items)):
        labels = _labels(base, record.get("severityText"), label_value(resource.get("service.name")))
        timestamp = unix_nano(record.get("timeUnixNano")) or unix_nano(record.get("observedTimeUnixNano"))
        body = otlp_value(record.get("body"))
        extra = {
            k: v
            for k, v in {
                "attributes": otlp_attributes(record.get("attributes")) or None,
                "trace_id": record.get("traceId") or None,
                "span_id": record.get("spanId") or None,
            }.items()
            if v
        }
        text = body if isinstance(body, str) and not extra else _json({"body": body, **extra})
        yield labels, timestamp or received + index, text


def _labels(base: dict[str, str], level: Any, service: str | None) -> dict[str, str]:
    labels = dict(base)
    normalized = str(level).strip().lower() if level is not None else ""
    normalized = LEVEL_ALIASES.get(normalized, normalized)
    if normalized in LEVELS:
        labels["level"] = normalized
    if service:
        labels["service_name"] = service
    return labels


# One encoder for every line (json.dumps builds one per call when given options).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _json(record: Any) -> str:
    return _ENCODER.encode(record)
