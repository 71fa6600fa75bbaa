"""The signal registry (CONTRACT §3, §9, §10): what each signal is and the checks every event passes.

One `Signal` per name: the keys-item flag that can switch it off, the id the edge
assigns and returns in the 202, and the shape rule its payload must follow. The
routes look a signal up once (`sdk_route_signal` for `/api/ingest/{word}`); nothing
downstream parses a path.

`check_event` and `check_event_count` are the per-event rules every way in applies
(SDK JSON/NDJSON, OTLP, Firehose): the pipeline runs them on whatever a door
hands it, and a door may call them earlier to refuse a request sooner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.contract.errors import EdgeError, bad_request, too_large
from chalicelib.contract.otlp import LOGS, METRICS, TRACES

# CONTRACT §3 limits: one event 1 MiB decoded (as Sentry Relay), a log body 200 entries or lines.
MAX_EVENT_BYTES = 1024 * 1024
LOG_BATCH_LIMIT = 200
# Events in one request, whichever door it came through: bounds the answer time and the
# idempotency record (its event ids must stay far under DynamoDB's 400 KB item limit).
MAX_EVENTS_PER_REQUEST = 1000


def _needs_array(field_name: str, what: str) -> Callable[[dict[str, Any]], None]:
    def rule(payload: dict[str, Any]) -> None:
        if not isinstance(payload.get(field_name), list):
            raise bad_request(f'{what} needs a "{field_name}" array')

    return rule


def _log_batch(payload: dict[str, Any]) -> None:
    batch = next((payload[k] for k in ("entries", "lines") if k in payload), None)
    if batch is None:
        raise bad_request('a log body needs an "entries" or a "lines" array')
    if not isinstance(batch, list):
        raise bad_request('"entries"/"lines" must be a JSON array')
    if len(batch) > LOG_BATCH_LIMIT:
        raise too_large(f"a log body holds at most {LOG_BATCH_LIMIT} entries or lines, got {len(batch)}")


@dataclass(frozen=True)
class Signal:
    """One kind of event the edge accepts."""

    name: str
    # Keys-item attribute (CONTRACT §4) that switches the signal off when false.
    flag: str | None = None
    # Id the SDK reads back from the 202 and sends again with the final status (job runs, cron check-ins).
    id_field: str | None = None
    # Rule beyond "a JSON object" (raises EdgeError 400/413).
    shape: Callable[[dict[str, Any]], None] | None = None
    # Served at `/api/ingest/{name}`; False for signals only other doors (OTLP /v1/*) produce.
    sdk_route: bool = True

    def check(self, payload: Any) -> None:
        """Refuse a payload that cannot be this signal's document (400) or passes its limits (413)."""
        if not isinstance(payload, dict):
            raise bad_request(f"the {self.name} body must be a JSON object, got {_json_type(payload)}")
        if self.id_field is not None:
            _check_given_id(self.id_field, payload.get(self.id_field))
        if self.shape is not None:
            self.shape(payload)

    def given_id(self, payload: Any) -> str | None:
        """The id the client sent in `id_field` (checked by `check`), or None when the edge must assign one."""
        if self.id_field is None or not isinstance(payload, dict):
            return None
        value = payload.get(self.id_field)
        text = "" if value is None else str(value).strip()
        return text or None


_REGISTRY = (
    Signal("error", sdk_route=False),  # /api/ingest, /api/v1/ingest, /api/v1/errors
    # /api/ingest/trace/otlp and the OTLP door's /v1/* (contract/otlp.py)
    Signal(
        TRACES.signal,
        flag="trace_enabled",
        shape=_needs_array(TRACES.resources, "an OTLP/HTTP JSON body"),
        sdk_route=False,
    ),
    Signal(LOGS.signal, shape=_needs_array(LOGS.resources, "an OTLP logs body"), sdk_route=False),
    Signal(METRICS.signal, shape=_needs_array(METRICS.resources, "an OTLP metrics body"), sdk_route=False),
    Signal("log", shape=_log_batch),
    Signal("rum", flag="rum_enabled"),
    Signal("trace", flag="trace_enabled"),
    Signal("job", id_field="run_id"),
    Signal("cron", id_field="check_in_id"),
    *(
        Signal(name)
        for name in (
            "profile",
            "feedback",
            "metric",
            "security",
            "notification",
            "model",
            "mail",
            "gate",
            "event",
            "dump",
            "batch",
            "auth",
        )
    ),
)
SIGNALS: dict[str, Signal] = {signal.name: signal for signal in _REGISTRY}
# Every signal's name: what a queue message's `signal` may be, and a sink may ask for.
SIGNAL_NAMES = frozenset(SIGNALS)
# The words of `/api/ingest/{signal}`.
NAMED_SIGNALS = frozenset(name for name, signal in SIGNALS.items() if signal.sdk_route)
# Signal → the id the edge assigns (CONTRACT §5 `assigned_ids`), for the backend side (edgectl.receiver.store).
ASSIGNED_ID_FIELDS = {name: signal.id_field for name, signal in SIGNALS.items() if signal.id_field}


def sdk_route_signal(word: str) -> Signal | None:
    """The signal of `/api/ingest/{word}`, or None (a 404)."""
    signal = SIGNALS.get(word)
    return signal if signal is not None and signal.sdk_route else None


def check_event_count(count: int, limit: int = MAX_EVENTS_PER_REQUEST) -> None:
    """413 `too_many_events` for a request over the cap: nothing of it is accepted."""
    if count > limit:
        raise EdgeError(
            413, "too_many_events", f"a request holds at most {limit} events; split it into smaller requests"
        )


def check_event(signal: Signal, payload: Any, size: int, where: str = "") -> None:
    """The per-event rules of every door: the 1 MiB decoded limit, then the signal's shape.

    `where` ("line 3", "record 2") prefixes the message so the client can find the event.
    """
    try:
        if size > MAX_EVENT_BYTES:
            raise too_large(f"one event is {size} bytes decoded; the limit is {MAX_EVENT_BYTES}")
        signal.check(payload)
    except EdgeError as error:
        if where:
            error.message = f"{where}: {error.message}"
        raise


def _check_given_id(field_name: str, value: Any) -> None:
    """An id is a string or an integer; null or "" asks the edge for one.

    A boolean, number with a fraction, object or array is refused (400) rather than
    replaced: the SDK would send the same non-id with the run's final status, and an
    id assigned each time would open runs that never end, with nobody seeing why.
    """
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return
    raise bad_request(f'"{field_name}" must be a string or an integer id, got {_json_type(value)}')


def _json_type(value: Any) -> str:
    names = {list: "an array", dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
