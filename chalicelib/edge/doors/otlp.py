"""The OTLP/HTTP door (CONTRACT §10): protobuf or JSON in, OTLP JSON events out, answers in kind.

The OTLP specification (opentelemetry-proto, docs/specification.md) is the authority:

- A body is an `Export{Trace,Logs,Metrics}ServiceRequest`, binary (`application/x-protobuf`)
  or JSON (`application/json`), optionally gzip. OTLP/JSON is protobuf's JSON mapping with the
  spec's deviations: lowerCamelCase names only (protobuf's field names are not OTLP/JSON),
  integer enums, and `traceId`/`spanId`/`parentSpanId` in hex, not base64. Unknown JSON
  fields are ignored. docs/otlp.md says exactly what is taken and why.
- JSON is checked item by item (span, log record, metric): an item that is not OTLP/JSON (an
  id not in hex, a protobuf field name, a `bytesValue` not in base64, an enum that is none of
  its values, a wrong type) is rejected and counted, like an item that decodes but cannot be
  stored (a span without a valid trace or span id, a log record with a malformed one, a
  metric without a name); the 200 answer carries `partial_success` with their number.
  Only a body whose lists cannot be told apart is undecodable (400).
- One request is one event (as on `/api/ingest/trace/otlp`) while its JSON stays within the
  one-event limit; a larger request is cut, between resources, scopes and items, into
  several events, each itself a valid export request. An item alone over the limit is
  rejected like an invalid one.
- Answers (success and `google.rpc.Status` errors) are encoded as the request was: one
  `Encoding` object per media type, chosen once per request (JSON for a type it cannot read).

Protobuf is imported on the first OTLP request only: the other routes never pay for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from chalice import Response

from chalicelib.contract import envelope
from chalicelib.contract.errors import EdgeError, bad_request, too_large, unsupported
from chalicelib.contract.otlp import BY_PATH, LOGS, METRICS, TRACES, OtlpExport
from chalicelib.contract.signals import MAX_EVENT_BYTES, SIGNALS
from chalicelib.edge import cors
from chalicelib.edge.bodies import check_received_size, decode_content, media_type, parse_json
from chalicelib.edge.doors import AcceptPolicy, Batch, Event, IngestRequest, idempotency_header

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_METRIC_DATA = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")
# google.rpc.Code for each HTTP status the edge answers (the spec lets clients ignore it).
_GRPC_CODES = {400: 3, 401: 16, 402: 7, 403: 7, 404: 5, 409: 10, 413: 3, 415: 3, 422: 3, 429: 8, 503: 14}
_GRPC_INTERNAL = 13


@dataclass
class Decoded:
    """A decoded export request: the events to queue and what was rejected."""

    events: list[Event]  # each an export request in OTLP JSON, with its JSON size
    rejected: int  # items (spans, log records, data points) dropped
    reason: str | None  # why items were rejected, for `partial_success.error_message`


# --- the door --------------------------------------------------------------------------------

# An export without items is still checked (key, billing, allowlist, flag): the spec answers
# it with success, and a bad key must hear 401 all the same.
OTLP_POLICY = AcceptPolicy(min_events=0)


class OtlpDoor:
    """`/v1/traces|logs|metrics`: 200 with the Export*ServiceResponse once its events are in
    SQS, or a `google.rpc.Status`; both in the request's encoding."""

    segment = "otlp"

    def __init__(self, request: IngestRequest):
        self.request = request
        self.export = BY_PATH[request.path]
        self.signal_name = self.export.signal
        self.media_type = media_type(request.headers.get("content-type"))
        self.encoding = ENCODINGS.get(self.media_type, JSON_ENCODING)
        self.decoded = Decoded([], 0, None)

    def decode(self) -> Batch:
        headers = self.request.headers
        if self.media_type not in ENCODINGS:
            raise _unsupported(self.media_type)
        self.decoded = decode_as(self.export, self.encoding, self.request.body, headers.get("content-encoding"))
        events = self.decoded.events
        signal = SIGNALS[self.export.signal]
        return Batch(signal, events, OTLP_POLICY, many=len(events) > 1, idempotency_key=idempotency_header(headers))

    def answer(self, accepted: dict[str, Any] | None) -> Response:
        return self._reply(200, self.encoding.success(self.export, self.decoded.rejected, self.decoded.reason))

    def refuse(self, error: EdgeError) -> Response:
        return self._reply(error.status, self.encoding.status(error), error.headers())

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
        origin = self.request.headers.get("origin")
        answer_headers: dict[str, str | list[str]] = {
            "Content-Type": self.encoding.content_type,
            **(headers or {}),
            **cors.response_headers(origin),
        }
        return Response(body=self.encoding.wire(body), status_code=status, headers=answer_headers)


def decode(
    export: OtlpExport,
    raw: bytes,
    content_type: str | None,
    content_encoding: str | None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> Decoded:
    """The request as OTLP JSON events (or an EdgeError), its encoding told by `content_type`."""
    name = media_type(content_type)
    encoding = ENCODINGS.get(name)
    if encoding is None:
        raise _unsupported(name)
    return decode_as(export, encoding, raw, content_encoding, max_event_bytes)


def decode_as(
    export: OtlpExport,
    encoding: Encoding,
    raw: bytes,
    content_encoding: str | None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> Decoded:
    """Check sizes, undo gzip, parse and validate: the request as OTLP JSON events (or an EdgeError)."""
    check_received_size(raw)
    data = decode_content(raw, content_encoding)
    message, rejections = encoding.parse(export, data)
    _drop_invalid(export, message, rejections)
    events, oversized = _to_events(export, _to_otlp_json(message), max_event_bytes)
    if oversized:
        rejections.add(oversized, f"some {export.noun} are over the {max_event_bytes}-byte event limit on their own")
    return Decoded(events, rejections.count, rejections.reason)


def _unsupported(name: str) -> EdgeError:
    return unsupported(f"content type {name!r} is not OTLP/HTTP; send {PROTOBUF} or {JSON}")


# --- parsing -------------------------------------------------------------------------------


def _parse_protobuf_request(export: OtlpExport, data: bytes) -> Any:
    from google.protobuf.message import DecodeError

    message = getattr(export.proto(), export.request)()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise bad_request(f"the body is not a valid protobuf {export.request}: {exc}") from None
    return message


def _parse_json_request(export: OtlpExport, data: bytes) -> tuple[Any, Rejections]:
    """An OTLP/JSON request, item by item: an item that is not OTLP/JSON is rejected and counted,
    the rest parsed; only a request whose lists cannot be told apart is undecodable (400)."""
    document = parse_json(data)
    if not isinstance(document, dict):
        raise bad_request(f"an OTLP/JSON body is an {export.request} object")
    message = getattr(export.proto(), export.request)()
    problem = _json_problem(document, message.DESCRIPTOR, skip=export.resources)
    if problem is not None:
        raise bad_request(f"the body is not a valid OTLP/JSON {export.request}: {problem[1]}: {problem[0]}")
    rejections = Rejections()
    resources = getattr(message, _snake(export.resources))
    for r, resource in _json_entries(document, export.resources, ""):
        where = f"{export.resources}[{r}]"
        problem = _parse_json_into(resource, resources.add(), where, skip=export.scopes)
        if problem is not None:
            del resources[-1]
            rejections.add(_json_items_of_resource(export, resource), *problem)
            continue
        scopes = getattr(resources[-1], _snake(export.scopes))
        for s, scope in _json_entries(resource, export.scopes, where):
            at = f"{where}.{export.scopes}[{s}]"
            problem = _parse_json_into(scope, scopes.add(), at, skip=export.items)
            if problem is not None:
                del scopes[-1]
                rejections.add(_json_items_of_scope(export, scope), *problem)
                continue
            items = getattr(scopes[-1], _snake(export.items))
            for i, item in enumerate(_json_list(scope, export.items, at)):
                problem = _parse_json_into(item, items.add(), f"{at}.{export.items}[{i}]")
                if problem is not None:
                    del items[-1]
                    rejections.add(_json_item_count(export, item), *problem)
    return message, rejections


def _parse_json_into(value: Any, message: Any, where: str, skip: str = "") -> tuple[str, str] | None:
    """Parse one object of the request (an item, or a resource or scope without its list) into
    `message`; (what, where) is wrong with it, or None."""
    from google.protobuf.json_format import ParseDict, ParseError

    if not isinstance(value, dict):
        return "not a JSON object", where
    try:
        problem = _json_problem(value, message.DESCRIPTOR, skip)
        if problem is not None:
            return problem[0], f"{where}.{problem[1]}"
        ParseDict({k: v for k, v in value.items() if k != skip} if skip else value, message, ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError) as exc:
        return _short(exc), where
    except RecursionError:
        return "nested too deeply", where
    return None


def _json_problem(value: dict[str, Any], descriptor: Any, skip: str = "") -> tuple[str, str] | None:
    """What makes `value` not this message in OTLP/JSON, as (what, where within `value`), or None.

    Only the spec's lowerCamelCase names are read (a protobuf field name is not OTLP/JSON;
    protobuf's own parser would take it); other unknown names are ignored, as the spec says.
    On the way, ids are rewritten from hex and other bytes to canonical base64, so that
    protobuf's JSON parser (which reads bytes as lenient base64) takes exactly what was checked.
    Scalars other than bytes and enums are left to that parser, which checks them.
    """
    checked, known, original = _json_fields(descriptor)
    for key, inner in value.items():
        check = checked.get(key)
        if check is None:
            if key not in known and key in original and key != skip:
                return f"a protobuf field name; OTLP/JSON keys are lowerCamelCase ({original[key]})", key
            continue
        if inner is None or key == skip:
            continue
        problem = _field_problem(value, key, *check)
        if problem is not None:
            return problem
    return None


def _field_problem(holder: dict[str, Any], key: str, kind: str, field: Any) -> tuple[str, str] | None:
    values = holder[key]
    repeated = field.is_repeated and isinstance(values, list)
    for index, value in enumerate(values if repeated else [values]):
        problem: tuple[str, str] | None = None
        if kind == _MESSAGE:
            found = _json_problem(value, field.message_type) if isinstance(value, dict) else None
            problem = (found[0], f".{found[1]}") if found else None
        elif kind == _ENUM:
            problem = _enum_problem(value, field)
        else:
            canonical = _hex_as_base64(value) if kind == _HEX else _canonical_base64(value)
            if canonical is None:
                problem = _BYTES_ARE[kind], ""
            elif repeated:
                values[index] = canonical
            else:
                holder[key] = canonical
        if problem is not None:
            return problem[0], (f"{key}[{index}]" if repeated else key) + problem[1]
    return None


_MESSAGE, _ENUM, _HEX, _BYTES = "message", "enum", "hex", "bytes"
_BYTES_ARE = {_HEX: "not a hex string (OTLP/JSON trace and span ids are hex, not base64)", _BYTES: "not base64"}


def _enum_problem(value: Any, field: Any) -> tuple[str, str] | None:
    """OTLP/JSON enums are integers; the names of known values are tolerated (protobuf's JSON
    mapping allows them, the Collector reads them); anything else is not silently dropped."""
    if isinstance(value, str) and value in field.enum_type.values_by_name:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and _INT32_MIN <= value <= _INT32_MAX:
        return None
    return f"not one of the {field.enum_type.name} values (OTLP/JSON enums are integers)", ""


def _hex_as_base64(value: Any) -> str | None:
    """An OTLP/JSON id (hex, any case) as protobuf's JSON parser wants bytes (base64), or None."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64encode(binascii.unhexlify(value)).decode("ascii")
    except (binascii.Error, ValueError):
        return None


def _canonical_base64(value: Any) -> str | None:
    """A JSON `bytes` value (standard or URL-safe base64, padded or not, as proto3's JSON mapping
    accepts) as standard base64; None when it is not base64 at all."""
    if not isinstance(value, str) or not _BASE64.fullmatch(value):
        return None
    text = value.rstrip("=").translate(_URL_SAFE)
    if len(text) % 4 == 1:
        return None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        return None
    return base64.b64encode(raw).decode("ascii")


_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_URL_SAFE = str.maketrans("-_", "+/")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# Per message type: the fields the JSON check looks into (by OTLP/JSON name, with what they are),
# every OTLP/JSON name, and the protobuf field names that differ from theirs.
_JSON_FIELDS: dict[str, tuple[dict[str, tuple[str, Any]], frozenset[str], dict[str, str]]] = {}


def _json_fields(descriptor: Any) -> tuple[dict[str, tuple[str, Any]], frozenset[str], dict[str, str]]:
    known = _JSON_FIELDS.get(descriptor.full_name)
    if known is None:
        from google.protobuf.descriptor import FieldDescriptor as F

        checked = {}
        for field in descriptor.fields:
            if field.type == F.TYPE_MESSAGE:
                checked[field.json_name] = (_MESSAGE, field)
            elif field.type == F.TYPE_ENUM:
                checked[field.json_name] = (_ENUM, field)
            elif field.type == F.TYPE_BYTES:
                checked[field.json_name] = (_HEX if field.name in _HEX_FIELDS else _BYTES, field)
        names = frozenset(field.json_name for field in descriptor.fields)
        original = {field.name: field.json_name for field in descriptor.fields if field.name != field.json_name}
        known = _JSON_FIELDS[descriptor.full_name] = (checked, names, original)
    return known


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _json_list(parent: dict[str, Any], name: str, where: str) -> list[Any]:
    """One of the request's three lists; not a list is the one shape that makes it undecodable."""
    values = parent.get(name)
    if values is None:
        return []
    if not isinstance(values, list):
        raise bad_request(f"the body is not valid OTLP/JSON: {_path(where, name)} is not a list")
    return values


def _json_entries(parent: dict[str, Any], name: str, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The resources or scopes of a request: objects, or the request is undecodable (400)."""
    for index, value in enumerate(_json_list(parent, name, where)):
        if not isinstance(value, dict):
            raise bad_request(f"the body is not valid OTLP/JSON: {_path(where, name)}[{index}] is not an object")
        yield index, value


def _json_items_of_resource(export: OtlpExport, resource: dict[str, Any]) -> int:
    """The items a rejected resource held, under either name of its lists (as `partial_success` counts)."""
    return sum(
        _json_items_of_scope(export, scope) for scope in _either(resource, export.scopes) if isinstance(scope, dict)
    )


def _json_items_of_scope(export: OtlpExport, scope: dict[str, Any]) -> int:
    return sum(_json_item_count(export, item) for item in _either(scope, export.items))


def _json_item_count(export: OtlpExport, item: Any) -> int:
    return _data_points_json(item) if export.counts_data_points else 1


def _either(document: dict[str, Any], name: str) -> list[Any]:
    """`document[name]`, or under its protobuf field name: for counting what is rejected only."""
    values = document.get(name, document.get(_snake(name)))
    return values if isinstance(values, list) else []


class Rejections:
    """Items rejected so far, counted as `partial_success` counts them, and the first few reasons."""

    def __init__(self) -> None:
        self.count = 0
        self.reasons: dict[str, str] = {}  # what → where it was first seen

    def add(self, count: int, what: str, where: str = "") -> None:
        self.count += count
        if what not in self.reasons and len(self.reasons) < _MAX_REASONS:
            self.reasons[what] = where

    @property
    def reason(self) -> str | None:
        return "; ".join(f"{where}: {what}" if where else what for what, where in self.reasons.items()) or None


_MAX_REASONS = 5


# --- validation ------------------------------------------------------------------------------


def _drop_invalid(export: OtlpExport, message: Any, rejections: Rejections) -> None:
    """Remove the items Lookout cannot store, counting them in `export.noun`."""
    problem_of = _PROBLEMS[export.signal]
    for resource in getattr(message, _snake(export.resources)):
        for scope in getattr(resource, _snake(export.scopes)):
            items = getattr(scope, _snake(export.items))
            doomed = []
            for index, item in enumerate(items):
                problem = problem_of(item)
                if problem is None:
                    continue
                doomed.append(index)
                rejections.add(_data_points(item) if export.counts_data_points else 1, problem)
            for index in reversed(doomed):
                del items[index]


def _span_problem(span: Any) -> str | None:
    if not _valid_id(span.trace_id, 16):
        return "a span needs a 16-byte, non-zero trace id"
    if not _valid_id(span.span_id, 8):
        return "a span needs an 8-byte, non-zero span id"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "a parent span id has 8 bytes"
    return None


def _log_record_problem(record: Any) -> str | None:
    if record.trace_id and len(record.trace_id) != 16:
        return "a log record's trace id, when present, has 16 bytes"
    if record.span_id and len(record.span_id) != 8:
        return "a log record's span id, when present, has 8 bytes"
    return None


def _metric_problem(metric: Any) -> str | None:
    return None if metric.name else "a metric needs a name"


# What makes an item one Lookout cannot store, per export type.
_PROBLEMS = {TRACES.signal: _span_problem, LOGS.signal: _log_record_problem, METRICS.signal: _metric_problem}


def _valid_id(value: bytes, size: int) -> bool:
    return len(value) == size and any(value)


def _data_points(metric: Any) -> int:
    data = metric.WhichOneof("data")
    return len(getattr(metric, data).data_points) if data else 0


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


# --- output: OTLP JSON events ----------------------------------------------------------------


def _to_otlp_json(message: Any) -> dict[str, Any]:
    """The message in OTLP JSON.

    What `json_format.MessageToDict(message, use_integers_for_enums=True)` gives, with hex
    ids, at a third of its cost: OTLP has no maps, floats or well-known types, so each field
    needs one converter, chosen once per field descriptor.
    """
    out = {}
    for field, value in message.ListFields():
        converter = _CONVERTERS.get(field) or _converter(field)
        out[converter[0]] = converter[1](value)
    return out


_CONVERTERS: dict[Any, tuple[str, Callable[[Any], Any]]] = {}
_HEX_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})


def _converter(field: Any) -> tuple[str, Callable[[Any], Any]]:
    from google.protobuf.descriptor import FieldDescriptor as F

    one: Callable[[Any], Any] | None
    if field.type == F.TYPE_MESSAGE:
        one = _to_otlp_json
    elif field.type in (F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_FIXED64, F.TYPE_SFIXED64, F.TYPE_SINT64):
        one = str
    elif field.type == F.TYPE_BYTES:
        one = bytes.hex if field.name in _HEX_FIELDS else _base64
    elif field.type == F.TYPE_DOUBLE:
        one = _double
    else:  # strings, booleans, 32-bit integers, enums (as their numbers)
        one = None
    convert: Callable[[Any], Any]
    if field.is_repeated:
        convert = list if one is None else (lambda values: [one(value) for value in values])
    else:
        convert = one or _same
    _CONVERTERS[field] = (field.json_name, convert)
    return _CONVERTERS[field]


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _same(value: Any) -> Any:
    return value


def _to_events(export: OtlpExport, document: dict[str, Any], limit: int) -> tuple[list[Event], int]:
    """The request as events of at most `limit` JSON bytes, and the number of items too big alone.

    No event for a request without items (the spec's empty request: a success, nothing to store).
    """
    resources = document.get(export.resources) or []
    if not any(scope.get(export.items) for resource in resources for scope in resource.get(export.scopes) or []):
        return [], 0
    text = envelope.dumps(document)
    if len(text) <= limit:
        return [Event(document, len(text), serialised=text)], 0
    packer = _Packer(export, limit)
    for r, resource in enumerate(resources):
        for s, scope in enumerate(resource.get(export.scopes) or []):
            _check_envelope(export, resource, scope, f"{export.resources}[{r}]", s, limit)
            for item in scope.get(export.items) or []:
                packer.add(resource, scope, item)
    return packer.finish()


def _check_envelope(
    export: OtlpExport, resource: dict[str, Any], scope: dict[str, Any], where: str, s: int, limit: int
) -> None:
    """A split request repeats a resource and scope in every part of their items: refuse (413)
    one over MAX_ENVELOPE_SHARE of the event limit, so what is queued stays within
    QUEUED_PER_DECODED of what was decoded (docs/otlp.md, "Large requests")."""
    size = _json_size(_without(resource, export.scopes)) + _json_size(_without(scope, export.items))
    if size * MAX_ENVELOPE_SHARE > limit:
        raise too_large(
            f"{where} (its resource and {export.scopes}[{s}] scope, {size} bytes of JSON) would be repeated in "
            f"every part of a request over {limit} bytes; a split request's resource and scope may hold at most "
            f"{limit // MAX_ENVELOPE_SHARE} bytes: send fewer {export.noun} per request or a smaller resource"
        )


# A resource and scope repeated in a split request's parts hold at most 1/8 of the event limit,
# so each part adds at most that much to the decoded JSON: the queued JSON stays under
# QUEUED_PER_DECODED times the decoded JSON (tests/unit/test_otlp_decoder.py measures the worst cases).
MAX_ENVELOPE_SHARE = 8
QUEUED_PER_DECODED = 1.25


class _Packer:
    """Greedy cut of one big export request into export requests under a byte limit.

    Each event repeats the resource and scope of the items it holds; sizes are counted
    from the JSON of each piece, with a margin for the brackets and commas around them.
    """

    _SEPARATORS = 8

    def __init__(self, export: OtlpExport, limit: int):
        self.export = export
        self.limit = limit
        self.events: list[Event] = []
        self.oversized = 0
        self._start()

    def _start(self) -> None:
        self.current: dict[str, Any] = {self.export.resources: []}
        self.size = _json_size(self.current)
        self._resource_of: tuple[int, dict[str, Any]] | None = None
        self._scope_of: tuple[int, dict[str, Any]] | None = None

    def add(self, resource: dict[str, Any], scope: dict[str, Any], item: dict[str, Any]) -> None:
        item_size = _json_size(item) + self._SEPARATORS
        extra = item_size + self._envelope_size(resource, scope)
        if self.size + extra > self.limit and self._resource_of is not None:
            self._flush()
            extra = item_size + self._envelope_size(resource, scope)
        if self.size + extra > self.limit:
            self.oversized += _data_points_json(item) if self.export.counts_data_points else 1
            return
        self._scope_for(resource, scope)[self.export.items].append(item)
        self.size += extra

    def _envelope_size(self, resource: dict[str, Any], scope: dict[str, Any]) -> int:
        size = 0
        if self._resource_of is None or self._resource_of[0] != id(resource):
            size += _json_size(_without(resource, self.export.scopes)) + self._SEPARATORS
        if self._scope_of is None or self._scope_of[0] != id(scope):
            size += _json_size(_without(scope, self.export.items)) + self._SEPARATORS
        return size

    def _scope_for(self, resource: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        if self._resource_of is None or self._resource_of[0] != id(resource):
            copy = dict(_without(resource, self.export.scopes), **{self.export.scopes: []})
            self.current[self.export.resources].append(copy)
            self._resource_of = (id(resource), copy)
            self._scope_of = None
        if self._scope_of is None or self._scope_of[0] != id(scope):
            copy = dict(_without(scope, self.export.items), **{self.export.items: []})
            self._resource_of[1][self.export.scopes].append(copy)
            self._scope_of = (id(scope), copy)
        return self._scope_of[1]

    def _flush(self) -> None:
        text = envelope.dumps(self.current)
        self.events.append(Event(self.current, len(text), f"part {len(self.events) + 1}", serialised=text))
        self._start()

    def finish(self) -> tuple[list[Event], int]:
        if self._resource_of is not None:
            self._flush()
        return self.events, self.oversized


def _without(document: dict[str, Any], field_name: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != field_name}


def _data_points_json(metric: Any) -> int:
    """A JSON metric's data points (under either name: a rejected metric is counted as it came)."""
    if not isinstance(metric, dict):
        return 0
    for data_field in _METRIC_DATA:
        data = metric.get(data_field, metric.get(_snake(data_field)))
        if isinstance(data, dict):
            points = data.get("dataPoints", data.get("data_points"))
            return len(points) if isinstance(points, list) else 0
    return 0


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=True))


# --- encodings: parsing and answers, per media type ------------------------------------------


class Encoding:
    """One OTLP/HTTP encoding: how its requests parse and its answers are written."""

    content_type: str

    def parse(self, export: OtlpExport, data: bytes) -> tuple[Any, Rejections]:
        """The export request message and the items left out of it, or 400."""
        raise NotImplementedError

    def success(self, export: OtlpExport, rejected: int = 0, reason: str | None = None) -> bytes:
        """`Export*ServiceResponse`, with `partial_success` only when items were rejected (or, with
        none rejected, to carry a warning, as the spec allows)."""
        raise NotImplementedError

    def status(self, error: EdgeError) -> bytes:
        """A `google.rpc.Status` for an error answer; the edge's error code leads the message."""
        raise NotImplementedError

    def wire(self, body: bytes) -> str | bytes:
        """The body as Chalice sends it: bytes leave base64-encoded (binary), text as is."""
        return body


class ProtobufEncoding(Encoding):
    content_type = PROTOBUF

    def parse(self, export: OtlpExport, data: bytes) -> tuple[Any, Rejections]:
        return _parse_protobuf_request(export, data), Rejections()

    def success(self, export: OtlpExport, rejected: int = 0, reason: str | None = None) -> bytes:
        response = getattr(export.proto(), export.response)()
        if rejected or reason:
            setattr(response.partial_success, export.rejected_field, rejected)
            response.partial_success.error_message = reason or f"{rejected} {export.noun} were rejected"
        return response.SerializeToString()

    def status(self, error: EdgeError) -> bytes:
        # Status is two scalar fields here (code = 1, message = 2): written by hand rather than
        # pulling googleapis-common-protos into the Lambda for it.
        text = _status_message(error).encode("utf-8")
        return b"\x08" + _varint(_grpc_code(error)) + b"\x12" + _varint(len(text)) + text


class JsonEncoding(Encoding):
    content_type = JSON

    def parse(self, export: OtlpExport, data: bytes) -> tuple[Any, Rejections]:
        return _parse_json_request(export, data)

    def success(self, export: OtlpExport, rejected: int = 0, reason: str | None = None) -> bytes:
        if not (rejected or reason):
            return b"{}"
        camel = _camel(export.rejected_field)
        partial = {camel: str(rejected), "errorMessage": reason or f"{rejected} {export.noun} were rejected"}
        return json.dumps({"partialSuccess": partial}).encode()

    def status(self, error: EdgeError) -> bytes:
        return json.dumps({"code": _grpc_code(error), "message": _status_message(error)}).encode()

    def wire(self, body: bytes) -> str | bytes:
        return body.decode("utf-8")


PROTOBUF_ENCODING = ProtobufEncoding()
JSON_ENCODING = JsonEncoding()
# The request's media type → its encoding; any other type is a 415 answered in JSON.
ENCODINGS: dict[str, Encoding] = {
    PROTOBUF: PROTOBUF_ENCODING,
    "application/protobuf": PROTOBUF_ENCODING,
    JSON: JSON_ENCODING,
}


def _grpc_code(error: EdgeError) -> int:
    return _GRPC_CODES.get(error.status, _GRPC_INTERNAL)


def _status_message(error: EdgeError) -> str:
    return f"{error.code}: {error.message}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
