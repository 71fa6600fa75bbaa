"""The one OTLP table (CONTRACT §10, §11): each OTLP export's queue signal, HTTP path, JSON
field names and protobuf types, for the edge's OTLP door and the forwarder's sinks alike.

The OpenTelemetry protocol (opentelemetry-proto) calls traces, logs and metrics "signals";
here an `OtlpExport` is one of those export request types, and `signal` is always the
queue message's signal name (`otlp`, `otlp_logs`, `otlp_metrics`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OtlpExport:
    """One OTLP export request type."""

    signal: str  # the queue message's signal (CONTRACT §5, §10)
    path: str  # OTLP/HTTP path: the edge's route and the OTLP sink's target
    resources: str  # the request's list: resourceSpans
    scopes: str  # each resource's list: scopeSpans
    items: str  # each scope's list: spans
    noun: str  # what `partial_success` counts: spans, log records, data points
    rejected_field: str  # the partial-success counter (protobuf field name)
    module: str  # opentelemetry-proto module of the request and response messages
    request: str
    response: str

    @property
    def counts_data_points(self) -> bool:
        """Metrics count rejections by data point (the spec's `rejected_data_points`), not by item."""
        return self.noun == "data points"

    def proto(self) -> Any:
        """The protobuf module, imported on first use: only OTLP requests pay for it."""
        return importlib.import_module(self.module)


TRACES = OtlpExport(
    signal="otlp",
    path="/v1/traces",
    resources="resourceSpans",
    scopes="scopeSpans",
    items="spans",
    noun="spans",
    rejected_field="rejected_spans",
    module="opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    request="ExportTraceServiceRequest",
    response="ExportTraceServiceResponse",
)
LOGS = OtlpExport(
    signal="otlp_logs",
    path="/v1/logs",
    resources="resourceLogs",
    scopes="scopeLogs",
    items="logRecords",
    noun="log records",
    rejected_field="rejected_log_records",
    module="opentelemetry.proto.collector.logs.v1.logs_service_pb2",
    request="ExportLogsServiceRequest",
    response="ExportLogsServiceResponse",
)
METRICS = OtlpExport(
    signal="otlp_metrics",
    path="/v1/metrics",
    resources="resourceMetrics",
    scopes="scopeMetrics",
    items="metrics",
    noun="data points",
    rejected_field="rejected_data_points",
    module="opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
    request="ExportMetricsServiceRequest",
    response="ExportMetricsServiceResponse",
)
EXPORTS = (TRACES, LOGS, METRICS)
BY_PATH = {export.path: export for export in EXPORTS}
BY_SIGNAL = {export.signal: export for export in EXPORTS}
