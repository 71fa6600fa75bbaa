"""The Lookout SDK's requests, byte for byte in shape (CONTRACT §3), for end-to-end tests.

What the PHP SDK (`lookout/tracing`) really sends, and so what the edge must take
unchanged: `application/json` bodies, the key in `X-Api-Key` (error reports put it
in the body as `api_key` too), no `User-Agent` (http.client adds none), no
compression, `X-Lookout-*` headers where the SDK sets them, PHP's empty maps
encoded as `[]`, and a 5 s give-up without reading `Retry-After`. The DSN keeps
only scheme, host and port, as the SDKs do: a path in it is dropped.

    sdk = LookoutClient(f"http://{key}@127.0.0.1:8000")
    answer = sdk.report_error("Undefined index: id", "ErrorException")
    check_in_id = sdk.cron_start("nightly-report").body["check_in_id"]
    sdk.cron_finish("nightly-report", check_in_id, "ok")
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SDK_TIMEOUT = 5.0  # the SDK gives up after this and drops the event
ENTRY_SIGNALS = ("metric", "dump", "model", "gate", "event")  # sent as {"entries": [...]} batches
PHP_EMPTY_MAP: list[Any] = []  # json_encode([]) of an empty PHP array: a JSON array, never {}

# Headers the SDK sets on some requests (CONTRACT §3); the edge must carry every X-Lookout-* one.
CLIENT_SAMPLED = "X-Lookout-Client-Sampled"  # the SDK already sampled this trace in
ENV_FORCED = "X-Lookout-Env-Forced"  # the customer forced the signal on in their environment
INGEST_INTERNAL = "X-Lookout-Ingest-Internal"  # sent by Lookout's own tooling (CLI ship-logs)
ENV_OVERRIDES = "X-Lookout-Env-Overrides"  # the host's environment overrides, on GET /api/config


@dataclass(frozen=True)
class Answer:
    """What the edge answered: status, JSON body (None when not JSON), headers (names lowercased),
    and the JSON document that was sent (to compare with what Lookout stored)."""

    status: int
    body: Any
    headers: dict[str, str]
    sent: Any = None


@dataclass(frozen=True)
class Dsn:
    """`scheme://KEY@host:port[/ignored path]` as the SDKs read it."""

    scheme: str
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, dsn: str) -> Dsn:
        parts = urlsplit(dsn)
        if not parts.username or not parts.hostname:
            raise ValueError("a DSN is scheme://PROJECT_API_KEY@host[:port]")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.username)


class LookoutClient:
    """One project's SDK: a method per signal, each one request shaped as the real SDK's."""

    def __init__(self, dsn: str, timeout: float = SDK_TIMEOUT):
        self.dsn = Dsn.parse(dsn)
        self.timeout = timeout

    # -- transport -------------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One request on a fresh connection, exactly these headers (plus Host/Content-Length)."""
        connection_class = http.client.HTTPSConnection if self.dsn.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(self.dsn.host, self.dsn.port, timeout=self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
        finally:
            connection.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Answer(response.status, parsed, answer_headers, json.loads(body) if body else None)

    def post(self, path: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
        """POST a JSON document as the SDK does: key in X-Api-Key, no User-Agent, no compression."""
        sent = {"Content-Type": "application/json", "X-Api-Key": self.dsn.key, **(headers or {})}
        return self.request("POST", path, json.dumps(payload).encode(), sent)

    # -- signals ---------------------------------------------------------------------------
    def report_error(self, message: str, exception_class: str, **fields: Any) -> Answer:
        """An exception report: the only request that also carries the key in the body."""
        report = {
            "api_key": self.dsn.key,
            "message": message,
            "exception_class": exception_class,
            "stack_trace": f"#0 /app/src/Http/Controller.php(42): {exception_class}->__construct()\n#1 {{main}}",
            "level": "error",
            "environment": "production",
            "release": "1.4.2",
            "context": PHP_EMPTY_MAP,
            "tags": {"php": "8.3.1"},
            **fields,
        }
        return self.post("/api/ingest", report)

    def send_trace(self, transaction: str, spans: list[dict[str, Any]], **fields: Any) -> Answer:
        """The SDK's own trace format; it marks traces it sampled in itself."""
        trace = {"transaction": transaction, "spans": spans, "tags": PHP_EMPTY_MAP, **fields}
        return self.post("/api/ingest/trace", trace, {CLIENT_SAMPLED: "1"})

    def send_otlp(self, resource_spans: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Answer:
        """OTLP/HTTP JSON, as the SDK's OpenTelemetry exporter posts it."""
        return self.post("/api/ingest/trace/otlp", {"resourceSpans": resource_spans}, headers)

    def send_log_entries(self, entries: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Answer:
        """Structured log records (≤ 200 per request)."""
        return self.post("/api/ingest/log", {"entries": entries}, headers)

    def ship_log_lines(self, lines: list[str], source: str) -> Answer:
        """`lookout ship-logs`: raw lines of a file (≤ 200), marked as Lookout's own tooling."""
        return self.post("/api/ingest/log", {"lines": lines, "source": source}, {INGEST_INTERNAL: "1"})

    def send_entries(self, signal: str, entries: list[dict[str, Any]]) -> Answer:
        """metric, dump, model, gate and event records: one `{"entries": [...]}` batch per request."""
        if signal not in ENTRY_SIGNALS:
            raise ValueError(f"{signal} is not sent as an entries batch")
        return self.post(f"/api/ingest/{signal}", {"entries": entries})

    def send(self, signal: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
        """The signals the SDK posts as one JSON object: profile, feedback, mail, notification, ..."""
        return self.post(f"/api/ingest/{signal}", payload, headers)

    def cron_start(self, monitor: str, **fields: Any) -> Answer:
        """Check-in `in_progress`; the 202's `check_in_id` is needed to finish it."""
        return self.post("/api/ingest/cron", {"monitor": monitor, "status": "in_progress", **fields})

    def cron_finish(self, monitor: str, check_in_id: str, status: str, duration_ms: int = 1250) -> Answer:
        """Check-in `ok`/`error` under the id the edge returned on the start."""
        finish = {"monitor": monitor, "check_in_id": check_in_id, "status": status, "duration_ms": duration_ms}
        return self.post("/api/ingest/cron", finish)

    def job_start(self, job: str, headers: dict[str, str] | None = None, **fields: Any) -> Answer:
        """A queued job starts; the 202's `run_id` is needed to finish it."""
        start = {"job": job, "queue": "default", "attempt": 1, "status": "running", "payload": PHP_EMPTY_MAP, **fields}
        return self.post("/api/ingest/job", start, headers)

    def job_finish(self, job: str, run_id: str, status: str, duration_ms: int = 830) -> Answer:
        """The job's final status under the run id the edge returned on the start."""
        return self.post(
            "/api/ingest/job", {"job": job, "run_id": run_id, "status": status, "duration_ms": duration_ms}
        )

    def fetch_config(self, env_overrides: str | None = None) -> Answer:
        """`GET /api/config`: the remote config, with the host's environment overrides."""
        headers = {"X-Api-Key": self.dsn.key, "Accept": "application/json"}
        if env_overrides is not None:
            headers[ENV_OVERRIDES] = env_overrides
        return self.request("GET", "/api/config", headers=headers)
