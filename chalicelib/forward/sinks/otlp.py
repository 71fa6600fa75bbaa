"""The OTLP sink: OTLP/HTTP JSON to `{url}/v1/traces|logs|metrics`, as received (CONTRACT §11).

The edge already holds OTLP JSON export requests (`otlp`: `resourceSpans`, `otlp_logs`:
`resourceLogs`, `otlp_metrics`: `resourceMetrics`). The events of a batch are merged into
one export request per signal; a `partial_success` in the answer is the collector
dropping what it could not use, which a retry would not change: the events are taken.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from chalicelib.contract.otlp import BY_SIGNAL, EXPORTS
from chalicelib.forward.sinks.base import Envelope, Outcome, Reason, rejected
from chalicelib.forward.sinks.batching import MIB, Limits, deliver_in_requests, sizes_of
from chalicelib.forward.sinks.http_post import HttpAnswer, post, whole_request_outcome
from chalicelib.forward.sinks.registry import SinkSpec

SUPPORTED_SIGNALS = frozenset(BY_SIGNAL)
OPTIONS = frozenset({"headers"})
# The gRPC message limit of the Collector's and Tempo's OTLP receivers (their HTTP limit is larger).
LIMITS = Limits(max_events=100, max_bytes=4 * MIB)


class OtlpSink:
    def __init__(self, name: str, signals: frozenset[str], url: str, headers: dict[str, str]) -> None:
        self.name = name
        self.signals = signals
        self.url = url
        self.headers = headers

    def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(envelopes)
        for export in EXPORTS:
            path, key = export.path, export.resources
            positions = [i for i, e in enumerate(envelopes) if e.get("signal") == export.signal]
            if not positions:
                continue

            # Each event's resources encoded once, without the brackets: sizes, then spliced bodies.
            parts = [
                json.dumps((envelopes[i].get("payload") or {}).get(key) or [], separators=(",", ":"))[1:-1]
                for i in positions
            ]

            def send(
                batch: Sequence[int], path: str = path, key: str = key, parts: list[str] = parts
            ) -> tuple[HttpAnswer, list[Outcome]]:
                body = f'{{"{key}":[' + ",".join(parts[i] for i in batch if parts[i]) + "]}"
                answer, _ = post(self.url + path, body.encode(), self.headers)
                return answer, [whole_request_outcome(answer)] * len(batch)

            answered = deliver_in_requests(self.name, LIMITS, sizes_of(parts), send)
            for i, outcome in zip(positions, answered, strict=True):
                outcomes[i] = outcome
        return [o or rejected(Reason.BATCH_REJECTED, error="not an OTLP signal") for o in outcomes]


def build(spec: SinkSpec) -> OtlpSink:
    return OtlpSink(spec.name, spec.signals, spec.url, {**spec.headers("headers"), "Content-Type": "application/json"})
