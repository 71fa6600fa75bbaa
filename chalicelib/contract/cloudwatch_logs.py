"""CloudWatch Logs subscription messages → `log` event payloads (CONTRACT §9 and §12).

A subscription filter hands its destination (Firehose, or a Lambda) the gzip of one JSON
message. A `DATA_MESSAGE` becomes a `log` payload `{"entries": [...]}` whose entries are
its `logEvents`, each with `log_group` and `log_stream`; a `CONTROL_MESSAGE` (the health
check CloudWatch Logs sends when a subscription is created) becomes nothing.

A payload holds at most 200 entries and 1 MiB encoded, as any `log` event must. CloudWatch
Logs batches up to 10,000 log events and about 1 MB of messages, so a large batch is split
into several payloads in order rather than refused: refusing it would lose it for good.

Pure functions; the Firehose door and the `ship_logs` Lambda both use them.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from chalicelib.contract.budget import DecodeBudget, inflate
from chalicelib.contract.errors import bad_request, too_large
from chalicelib.contract.signals import LOG_BATCH_LIMIT

DATA_MESSAGE = "DATA_MESSAGE"
CONTROL_MESSAGE = "CONTROL_MESSAGE"
# CloudWatch Logs sends ≤ 1,048,576 bytes of log messages per batch; with its JSON framing
# (ids, timestamps, escaping) the message grows. The cap only stops gzip bombs.
MAX_DECODED_BYTES = 6 * 1024 * 1024
# One event, as encoded in the queue message's payload (CONTRACT §3: 1 MiB decoded).
MAX_PAYLOAD_BYTES = 1024 * 1024
_PAYLOAD_FRAME = len('{"entries":[]}')
GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(data: bytes) -> bool:
    """Whether `data` starts like a gzip member (how a subscription message arrives)."""
    return data[:2] == GZIP_MAGIC


def gunzip(data: bytes, budget: DecodeBudget | None = None) -> bytes:
    """One gzip member, its output charged to `budget` as it comes (default: MAX_DECODED_BYTES
    for this message alone; the Firehose door passes its request's); 400 when corrupt or followed by junk."""
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        out = inflate(decompressor, data, budget or DecodeBudget(MAX_DECODED_BYTES))
    except zlib.error:
        raise bad_request("the CloudWatch Logs data is not valid gzip") from None
    if not decompressor.eof:
        raise bad_request("the CloudWatch Logs data is truncated gzip")
    if decompressor.unused_data.strip(b"\x00"):
        raise bad_request("the CloudWatch Logs data has bytes after its gzip member")
    return out


def parse_message(data: bytes, budget: DecodeBudget | None = None) -> dict[str, Any]:
    """The subscription message in `data` (gzip JSON), checked for the fields it must have."""
    try:
        message = json.loads(gunzip(data, budget))
    except (ValueError, RecursionError):
        raise bad_request("the CloudWatch Logs message is not valid JSON") from None
    if not isinstance(message, dict):
        raise bad_request("the CloudWatch Logs message must be a JSON object")
    message_type = message.get("messageType")
    if message_type not in (DATA_MESSAGE, CONTROL_MESSAGE):
        raise bad_request(f"unknown CloudWatch Logs messageType {str(message_type)[:40]!r}")
    if message_type == DATA_MESSAGE:
        events = message.get("logEvents")
        if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
            raise bad_request('a CloudWatch Logs DATA_MESSAGE needs a "logEvents" array of objects')
        for name in ("logGroup", "logStream"):
            if not isinstance(message.get(name), str):
                raise bad_request(f'a CloudWatch Logs DATA_MESSAGE needs a "{name}" string')
    return message


def log_payloads(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The `log` payloads of a parsed message: none for a control message, else one per
    ≤ 200 entries and ≤ 1 MiB, in the message's order."""
    if message["messageType"] != DATA_MESSAGE:
        return []
    group, stream = message["logGroup"], message["logStream"]
    payloads: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    size = _PAYLOAD_FRAME
    for event in message["logEvents"]:
        entry = {**event, "log_group": group, "log_stream": stream}
        entry_size = len(json.dumps(entry, separators=(",", ":"))) + 1
        if _PAYLOAD_FRAME + entry_size > MAX_PAYLOAD_BYTES:
            raise too_large(f"a CloudWatch Logs event is over {MAX_PAYLOAD_BYTES} bytes")
        if entries and (len(entries) == LOG_BATCH_LIMIT or size + entry_size > MAX_PAYLOAD_BYTES):
            payloads.append({"entries": entries})
            entries, size = [], _PAYLOAD_FRAME
        entries.append(entry)
        size += entry_size
    if entries:
        payloads.append({"entries": entries})
    return payloads


def decode_log_payloads(data: bytes, budget: DecodeBudget | None = None) -> list[dict[str, Any]]:
    """gzip JSON subscription message → its `log` payloads (see `log_payloads`)."""
    return log_payloads(parse_message(data, budget))
