"""The receiver's logic: the Lookout side of CONTRACT §6 as `handle(Request) -> Response`, no sockets.

Checks the edge token, validates each §5 message, stores every event once per `event_id`,
turns `job`/`cron` events into runs and check-ins and serves the SDK's remote config.
`server.py` puts it on HTTP; `store.py` keeps what it received.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.signals import SIGNAL_NAMES
from chalicelib.runtime.config import ENV_NAMES
from edgectl.receiver.store import ReceiverStore

log = logging.getLogger("edgectl.receiver")


INGEST_PATH = "/api/ingest/edge"
CONFIG_PATH = "/api/config"
MAX_EVENTS_PER_BATCH = 100  # CONTRACT §6: up to 100 events and about 1 MiB per request
# The forwarder keeps a request to about 1 MiB, but an event larger than that goes alone: up to
# 1 MiB decoded, re-encoded by the forwarder (escapes can grow it), with a wide margin.
MAX_BODY_BYTES = 32 * 1024 * 1024
EVENT_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")
MAX_ID_LENGTH = 64
TOKEN_ENV = ENV_NAMES["token"]


@dataclass(frozen=True)
class Request:
    """One HTTP request as the app sees it: header names lowercased, query as a flat dict."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """A JSON answer; `events` is the batch size, for the access log only."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    events: int | None = None


def validate_event(event: Any) -> str | None:
    """Why a forwarded event is not a valid §5 message (the text of its "rejected"), or None.

    The receiver is strict where storing would go wrong (ids, signal, encoding,
    payload type) and lenient elsewhere: unknown extra fields are kept as sent.
    """
    if not isinstance(event, dict):
        return "an event must be a JSON object"
    if type(event.get("v")) is not int or event["v"] != 1:
        return 'unsupported message version: "v" must be 1'
    if not isinstance(event.get("event_id"), str) or not EVENT_ID.fullmatch(event["event_id"]):
        return '"event_id" must be 1 to 32 letters, digits, "-" or "_" (a ULID)'
    if event.get("signal") not in SIGNAL_NAMES:
        return f'unknown "signal": {str(event.get("signal"))[:40]!r}'
    for name, required in (("project_id", True), ("organization_id", False)):
        value = event.get(name)
        if (value is not None or required) and not (isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH):
            return f'"{name}" must be a non-empty string of at most {MAX_ID_LENGTH} characters'
    try:
        datetime.fromisoformat(event.get("received_at"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return '"received_at" must be an ISO 8601 timestamp such as 2026-11-22T10:00:00.123Z'
    if event.get("payload_encoding") != "json":
        return '"payload_encoding" must be "json": the forwarder decodes payloads before posting'
    if not isinstance(event.get("payload"), dict):
        return '"payload" must be a JSON object'
    for name in ("headers", "assigned_ids"):
        if event.get(name) is not None and not isinstance(event[name], dict):
            return f'"{name}" must be a JSON object when present'
    return None


def parse_batch(body: bytes) -> list[Any]:
    """The `events` of a request body, or the batch-level error (400/413/422) the forwarder dead-letters."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EdgeError(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise EdgeError(422, "invalid_batch", 'the body must be {"events": [...]}')
    events = document["events"]
    if not events:
        raise EdgeError(422, "invalid_batch", '"events" is empty')
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise EdgeError(413, "batch_too_large", f"at most {MAX_EVENTS_PER_BATCH} events per request")
    return events


# The config document's signals (CONTRACT §3): the server's plural names, as the PHP SDK
# (Support/RemoteConfig) and the Ruby client (lookout_framework.rb) read them, plus `feedback`,
# which the Ruby client reads too. Each is {"enabled": bool}, with "sample_rate" where sampled.
CONFIG_SIGNALS = (
    "errors", "traces", "profiles", "logs", "jobs", "batches", "mail", "events", "notifications", "models",
    "gates", "auth", "filesystem", "metrics", "dumps", "rum", "crons", "security_audit", "feedback",
)  # fmt: skip
SAMPLED_SIGNALS = frozenset({"traces", "profiles", "logs", "metrics", "dumps", "rum"})
SETTINGS_KEYS = frozenset({"signals", "suppress"})


def default_settings() -> dict[str, Any]:
    """A project's remote config before anyone changes it: every signal on, nothing sampled out,
    nothing suppressed."""
    signals = {
        name: {"enabled": True, **({"sample_rate": 1.0} if name in SAMPLED_SIGNALS else {})} for name in CONFIG_SIGNALS
    }
    return {"signals": signals, "suppress": []}


def merge_settings(current: dict[str, Any], change: Any) -> dict[str, Any]:
    """`current` with `change` applied, in the document's own shape: each signal's `enabled` and
    `sample_rate` merged field by field, `suppress` (client suppression keys) replaced."""
    if not isinstance(change, dict) or set(change) - SETTINGS_KEYS:
        raise EdgeError(422, "invalid_settings", 'settings are a JSON object of "signals" and "suppress"')
    signals = change.get("signals", {})
    if not isinstance(signals, dict):
        raise EdgeError(422, "invalid_settings", '"signals" must map signal names to {"enabled", "sample_rate"}')
    merged_signals = {name: dict(value) for name, value in current.get("signals", {}).items()}
    for name, value in signals.items():
        merged_signals.setdefault(name, {}).update(_signal_setting(name, value))
    suppress = change.get("suppress", current.get("suppress", []))
    if not isinstance(suppress, list) or not all(isinstance(key, str) and key for key in suppress):
        raise EdgeError(422, "invalid_settings", '"suppress" must be a list of client suppression keys')
    return {"signals": merged_signals, "suppress": list(suppress)}


def _signal_setting(name: str, value: Any) -> dict[str, Any]:
    """One signal's change, checked: a known plural name, a bool `enabled`, a `sample_rate` from 0 to 1."""
    if name not in CONFIG_SIGNALS:
        raise EdgeError(422, "invalid_settings", f"unknown signal {name[:40]!r}: one of {', '.join(CONFIG_SIGNALS)}")
    allowed = {"enabled", "sample_rate"} if name in SAMPLED_SIGNALS else {"enabled"}
    if not isinstance(value, dict) or set(value) - allowed:
        raise EdgeError(422, "invalid_settings", f'"signals.{name}" is an object of {" and ".join(sorted(allowed))}')
    if "enabled" in value and not isinstance(value["enabled"], bool):
        raise EdgeError(422, "invalid_settings", f'"signals.{name}.enabled" must be true or false')
    rate = value.get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise EdgeError(422, "invalid_settings", f'"signals.{name}.sample_rate" must be a number from 0 to 1')
    return dict(value)


def config_version(project_id: str, settings: dict[str, Any]) -> str:
    """A version that changes exactly when the project's settings do (content hash)."""
    canonical = json.dumps({"project_id": project_id, "settings": settings}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.body or b"{}")
    except (UnicodeDecodeError, ValueError):
        raise EdgeError(400, "invalid_json", "the body is not JSON") from None


Route = Callable[[Request, str], Response]


class ReceiverApp:
    """The receiver's behaviour, HTTP-free: `handle(Request) -> Response`. Thread-safe.

    `token` None or empty makes the token-protected routes answer 503, as Lookout
    does until LOOKOUT_INGEST_EDGE_TOKEN is set. `projects` maps raw API keys to
    project ids, for `/api/config` (the receiver has no Lookout key table).
    """

    def __init__(self, store: ReceiverStore, token: str | None = None, projects: dict[str, str] | None = None):
        self.store = store
        self.token = token
        self.config_failing = False
        self.counters: Counter[str] = Counter()
        self._keys = dict(projects or {})
        self._settings: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern[str], Route, bool]] = [
            ("POST", re.compile(re.escape(INGEST_PATH)), self._ingest, True),
            ("GET", re.compile(re.escape(CONFIG_PATH)), self._config, False),
            ("GET", re.compile("/health"), lambda _r, _a: Response(200, {"status": "ok"}), False),
            ("GET", re.compile("/_receiver/events/([^/]+)"), self._get_event, True),
            ("GET", re.compile("/_receiver/events"), self._list_events, True),
            ("GET", re.compile("/_receiver/runs/([^/]+)"), self._get_run, True),
            ("GET", re.compile("/_receiver/stats"), self._stats, True),
            ("POST", re.compile("/_receiver/projects/([^/]+)/settings"), self._post_settings, True),
        ]

    # -- Python API ------------------------------------------------------------------------
    def add_project_key(self, api_key: str, project_id: str) -> None:
        """Let `api_key` read `project_id`'s remote config."""
        with self._lock:
            self._keys[api_key] = project_id

    def project_settings(self, project_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._settings.get(project_id) or default_settings())

    def set_project_settings(self, project_id: str, change: dict[str, Any]) -> dict[str, Any]:
        """Change a project's settings (merged, see `merge_settings`); returns the new config document."""
        with self._lock:
            merged = merge_settings(self._settings.get(project_id) or default_settings(), change)
            self._settings[project_id] = merged
        return self.config_document(project_id, None)

    def config_document(self, project_id: str, env_overrides: str | None) -> dict[str, Any]:
        """What `GET /api/config` answers for a project (CONTRACT §3): `version`, `signals`, `suppress`;
        beside them, for tests, the project and the echoed `X-Lookout-Env-Overrides`."""
        settings = self.project_settings(project_id)
        version = config_version(project_id, settings)
        return {"version": version, **settings, "project_id": project_id, "env_overrides": env_overrides}

    # -- HTTP-free dispatch ----------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Route a request; every error becomes the contract's JSON `{"error", "message"}`."""
        try:
            allowed = []
            for method, pattern, route, needs_token in self._routes:
                match = pattern.fullmatch(request.path)
                if not match:
                    continue
                allowed.append(method)
                if method == request.method:
                    if needs_token:
                        self._authorize(request)
                    return route(request, unquote(match.group(1)) if match.groups() else "")
            if allowed:
                raise EdgeError(405, "method_not_allowed", f"use {', '.join(allowed)} on this path")
            raise EdgeError(404, "not_found", "no such route on the receiver")
        except EdgeError as error:
            headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
            return Response(error.status, error.body(), headers)
        except Exception:
            log.exception("receiver error on %s %s", request.method, request.path)
            return Response(500, {"error": "internal_error", "message": "the receiver failed; see its log"})

    def _authorize(self, request: Request) -> None:
        token = self.token
        if not token:
            self._count("unconfigured")
            raise EdgeError(503, "not_configured", f"the receiver has no token ({TOKEN_ENV} unset)", retry_after=30)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant time: the comparison must not reveal how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            self._count("unauthorized")
            raise EdgeError(401, "unauthorized", "missing or wrong Bearer token")

    def _count(self, name: str, value: int = 1) -> None:
        with self._lock:
            self.counters[name] += value

    # -- routes ------------------------------------------------------------------------------
    def _ingest(self, request: Request, _: str) -> Response:
        events = parse_batch(request.body)
        results = []
        for event in events:
            event_id = event.get("event_id") if isinstance(event, dict) else None
            result: dict[str, Any] = {"event_id": event_id if isinstance(event_id, str) else None}
            error = validate_event(event)
            if error:
                result.update(status="rejected", error=error)
            else:
                try:
                    result["status"] = self.store.ingest(event)
                except Exception:
                    log.exception("store failed; the batch is answered 503 and the edge retries it")
                    raise EdgeError(503, "store_unavailable", "the receiver store failed", retry_after=5) from None
            results.append(result)
        self._count("batches")
        for result in results:
            self._count(result["status"])
        rejected = any(result["status"] == "rejected" for result in results)
        return Response(207 if rejected else 200, {"results": results}, events=len(events))

    def _config(self, request: Request, _: str) -> Response:
        self._count("config_requests")
        with self._lock:
            project_id = self._keys.get(request.headers.get("x-api-key", ""))
        if project_id is None:
            raise EdgeError(401, "unauthorized", "unknown API key")
        if self.config_failing:
            raise EdgeError(500, "config_failing", "remote config is switched to fail (test switch)")
        return Response(200, self.config_document(project_id, request.headers.get("x-lookout-env-overrides")))

    def _get_event(self, _: Request, event_id: str) -> Response:
        event = self.store.event(event_id)
        if event is None:
            raise EdgeError(404, "not_found", "no event with this event_id")
        return Response(200, event)

    def _list_events(self, request: Request, _: str) -> Response:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise EdgeError(400, "invalid_query", '"limit" must be an integer') from None
        events = self.store.events(request.query.get("project_id"), request.query.get("signal"), limit)
        return Response(200, {"events": events})

    def _get_run(self, request: Request, run_id: str) -> Response:
        run = self.store.run(run_id, request.query.get("kind"))
        if run is None:
            raise EdgeError(404, "not_found", "no run or check-in with this id")
        return Response(200, run)

    def _stats(self, _: Request, __: str) -> Response:
        with self._lock:
            counters = dict(self.counters)
        return Response(200, {**self.store.stats(), "receiver": counters})

    def _post_settings(self, request: Request, project_id: str) -> Response:
        return Response(200, self.set_project_settings(project_id, _json_body(request)))
