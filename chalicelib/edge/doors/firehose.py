"""The Amazon Data Firehose door: HTTP endpoint deliveries → events (CONTRACT §9).

AWS, "HTTP Endpoint Delivery Request and Response Specifications": Firehose POSTs
`{"requestId", "timestamp", "records": [{"data": <base64>}, ...]}` (optionally gzip) with
the key in `X-Amz-Firehose-Access-Key`, counts only a 200 `{"requestId", "timestamp"}` as
delivered, and retries every other answer (body `{"requestId", "timestamp", "errorMessage"}`)
with the same `X-Amz-Firehose-Request-Id` until its retry duration ends; 413 it does not
retry, so 413 means "this delivery can never be accepted".

Each record's data is one JSON object, NDJSON (one event per line) or the gzip of a
CloudWatch Logs subscription message (`log` events, chalicelib/contract/cloudwatch_logs.py).
The functions are pure (no AWS); `FirehoseDoor` is the door `serve` runs. The delivery's
request id is its idempotency key and the log lines' correlation id (the spec asks
endpoints to log it); the event ids derive from it (`FIREHOSE_POLICY`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from typing import Any

from chalice import Response

from chalicelib.contract import cloudwatch_logs, envelope
from chalicelib.contract.budget import DecodeBudget
from chalicelib.contract.errors import EdgeError, bad_request, too_large
from chalicelib.contract.signals import SIGNALS
from chalicelib.edge.bodies import decode_content, ndjson_events, parse_json
from chalicelib.edge.doors import AcceptPolicy, Batch, Event, IngestRequest
from chalicelib.edge.serve import json_response
from chalicelib.runtime.observability import correlate

FIREHOSE_SIGNALS = frozenset({"log", "error", "event", "metric", "security", "otlp", "otlp_logs", "otlp_metrics"})
# Firehose's own bounds: a record's data is at most 1,000 KiB before base64 (PutRecord).
MAX_RECORD_BYTES = 1_024_000
MAX_RECORDS = 10_000
# One delivery becomes at most this many queue messages (NDJSON records can hold many).
MAX_EVENTS = 10_000
# The delivery's decoded-size budget (chalicelib/contract/budget.py): the body as decoded plus
# every CloudWatch Logs record's decompressed message. Lambda takes at most 6 MB per request;
# a 4 MB buffer grows by a third in base64.
MAX_DECODED_BYTES = 8 * 1024 * 1024
# Request headers copied into every queue message's `headers` (names lowercase).
CARRIED_HEADERS = (
    "x-amz-firehose-request-id",
    "x-amz-firehose-source-arn",
    "x-amz-firehose-common-attributes",
)
ACCESS_KEY_HEADER = "x-amz-firehose-access-key"
REQUEST_ID_HEADER = "x-amz-firehose-request-id"
# Up to 10,000 events, none at all is fine (CloudWatch Logs control messages), no 202 body,
# ids stable across Firehose's retries of a request id.
FIREHOSE_POLICY = AcceptPolicy(
    min_events=0,
    max_events=MAX_EVENTS,
    reply_body=False,
    stable_ids=True,
    claim_prefix="firehose:",
    decoded_limit=MAX_DECODED_BYTES,
)


class FirehoseDoor:
    """`POST /api/firehose/{signal}`: 200 with the spec's body once every event is in SQS,
    else the contract's status with `errorMessage`."""

    segment = "firehose"

    def __init__(self, request: IngestRequest, signal_name: str):
        self.request = request
        self.signal_name = signal_name
        self.request_id = header_request_id(request.headers)  # the body's, once read

    def decode(self) -> Batch:
        headers = self.request.headers
        correlate(self.request_id or None)
        signal = SIGNALS.get(self.signal_name) if self.signal_name in FIREHOSE_SIGNALS else None
        if signal is None:
            raise EdgeError(404, "not_found", f"no Firehose route at {self.request.path}")
        budget = DecodeBudget(FIREHOSE_POLICY.decoded_limit)
        body = load_request(self.request.body, headers.get("content-encoding"), budget)
        self.request_id = request_id_of(body, headers)
        return Batch(
            signal,
            decode_delivery(body, signal.name, budget),
            FIREHOSE_POLICY,
            api_key=(headers.get(ACCESS_KEY_HEADER) or "").strip() or None,
            idempotency_key=header_request_id(headers) or None,
            carried=carried_headers(headers),
        )

    def answer(self, accepted: dict[str, Any] | None) -> Response:
        return json_response(200, success_body(self.request_id))

    def refuse(self, error: EdgeError) -> Response:
        return json_response(error.status, error_body(self.request_id, error), error.headers())


def now_ms() -> int:
    return int(time.time() * 1000)


def success_body(request_id: str, timestamp: int | None = None) -> dict[str, Any]:
    """The only answer Firehose counts as delivered (with status 200)."""
    return {"requestId": request_id, "timestamp": now_ms() if timestamp is None else timestamp}


def error_body(request_id: str, error: EdgeError, timestamp: int | None = None) -> dict[str, Any]:
    """The spec's failure body; `errorMessage` is "<contract code>: <text>" (Firehose logs it)."""
    return {**success_body(request_id, timestamp), "errorMessage": f"{error.code}: {error.message}"}


def header_request_id(headers: Mapping[str, str]) -> str:
    return (headers.get(REQUEST_ID_HEADER) or "").strip()


def carried_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The Firehose headers every queue message carries (never the access key)."""
    return {name: headers[name] for name in CARRIED_HEADERS if headers.get(name)}


def load_request(raw: bytes, content_encoding: str | None, budget: DecodeBudget | None = None) -> dict[str, Any]:
    """The request body as a JSON object (gzip undone, charged to the delivery's `budget`); 400/413/415 otherwise."""
    data = decode_content(raw, content_encoding, budget or DecodeBudget(FIREHOSE_POLICY.decoded_limit))
    if not data.strip():
        raise bad_request("the request body is empty")
    request = parse_json(data)
    if not isinstance(request, dict):
        raise bad_request('a Firehose request must be a JSON object with "requestId" and "records"')
    return request


def request_id_of(request: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    """The body's `requestId` (what Firehose checks in the answer), else the header's."""
    given = request.get("requestId")
    return given if isinstance(given, str) and given else header_request_id(headers)


def decode_delivery(request: Mapping[str, Any], signal: str, budget: DecodeBudget | None = None) -> list[Event]:
    """Every record → its events, in order; `pipeline.accept` checks each one.

    A record's base64 data was charged to `budget` as part of the body; its CloudWatch Logs
    message is charged as it is decompressed (413 as soon as the delivery is over)."""
    budget = budget or DecodeBudget(FIREHOSE_POLICY.decoded_limit)
    records = request.get("records")
    if not isinstance(records, list):
        raise bad_request('"records" must be a JSON array')
    if len(records) > MAX_RECORDS:
        raise too_large(f"a delivery holds at most {MAX_RECORDS} records, got {len(records)}")
    events: list[Event] = []
    for number, record in enumerate(records, start=1):
        try:
            events.extend(decode_record(record, signal, f"record {number}", budget))
        except EdgeError as error:
            raise EdgeError(error.status, error.code, f"record {number}: {error.message}") from None
        if len(events) > MAX_EVENTS:
            raise EdgeError(413, "too_many_events", f"a delivery may hold at most {MAX_EVENTS} events")
    return events


def decode_record(record: Any, signal: str, where: str, budget: DecodeBudget) -> list[Event]:
    """One record's events: none for an empty record or a CloudWatch Logs control message."""
    if not isinstance(record, dict) or not isinstance(record.get("data"), str):
        raise bad_request('a record must be an object with a base64 "data" string')
    try:
        data = base64.b64decode(record["data"], validate=True)
    except (binascii.Error, ValueError):
        raise bad_request('"data" is not valid base64') from None
    if len(data) > MAX_RECORD_BYTES:
        raise too_large(f"the data is {len(data)} bytes; a Firehose record holds at most {MAX_RECORD_BYTES}")
    if cloudwatch_logs.is_gzip(data):
        if signal != "log":
            raise bad_request("CloudWatch Logs data belongs on /api/firehose/log")
        payloads = cloudwatch_logs.decode_log_payloads(data, budget)
        texts = [envelope.dumps(payload) for payload in payloads]  # sized and queued as this text
        return [
            Event(payload, len(text), where, serialised=text) for payload, text in zip(payloads, texts, strict=True)
        ]
    if not data.strip():
        return []
    try:
        return [Event(parse_json(data), len(data), where)]
    except EdgeError:
        if b"\n" not in data.strip():
            raise
    return ndjson_events(data, where, limit=None)  # NDJSON (a pretty-printed JSON object was tried first)
