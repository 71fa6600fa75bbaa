"""The queue message of CONTRACT §5, typed: its fields, its SQS body and attributes, built here
for every producer (the edge's doors, `ship_logs`).

The messages of one batch share all but their event id, payload and `assigned_ids`:
`QueueMessages` encodes the shared fields once per batch, and each payload arrives already
serialised (`envelope.dumps`, once per event) to be spliced in. The body is byte for byte
what `envelope.encode_message` gives for the whole message (tests/unit/test_envelope.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from chalicelib.contract import envelope
from chalicelib.contract.keys_item import KeyRecord


@dataclass(frozen=True)
class Origin:
    """Where a batch of events came from: what every one of its messages repeats."""

    path: str  # the route (`/api/ingest/log`) or the source (`cloudwatch-logs`)
    received_at: str = field(default_factory=envelope.utc_now_iso)
    client_ip: str | None = None
    user_agent: str | None = None
    idempotency_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lowercase names


@dataclass(frozen=True)
class QueueMessages:
    """The messages of one batch of `signal` events under one key, from one origin."""

    signal: str
    record: KeyRecord
    origin: Origin

    def fields(self, event_id: str, assigned_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One message's fields but the payload, in the contract's order."""
        origin = self.origin
        fields: dict[str, Any] = {
            "v": envelope.VERSION,
            "event_id": event_id,
            "signal": self.signal,
            "path": origin.path,
            "project_id": self.record.project_id,
            "organization_id": self.record.organization_id,
            "key_id": self.record.key_id,
            "received_at": origin.received_at,
            "client_ip": origin.client_ip,
            "user_agent": origin.user_agent,
            "idempotency_key": origin.idempotency_key,
            "headers": dict(origin.headers),
            "payload_encoding": "json",
        }
        if assigned_ids:
            fields["assigned_ids"] = dict(assigned_ids)
        return fields

    @cached_property
    def _shared(self) -> str:
        """The body's text from after the event id to the payload, encoded once per batch."""
        fields = self.fields("")
        del fields["v"], fields["event_id"]
        return "," + envelope.dumps(fields)[1:-1] + ',"payload":'

    def body(self, event_id: str, payload_json: str, assigned_ids: Mapping[str, str] | None = None) -> str:
        """The SQS body: `payload_json` spliced in inline, or gzip+base64 when that would not fit (else 413).

        `event_id` is a ULID (Crockford base32): written as is, it needs no escaping."""
        tail = ',"assigned_ids":' + envelope.dumps(dict(assigned_ids)) if assigned_ids else ""
        body = f'{{"v":{envelope.VERSION},"event_id":"{event_id}"{self._shared}{payload_json}{tail}}}'
        if len(body) <= envelope.MAX_MESSAGE_BYTES:
            return body
        return envelope.encode_body(self.fields(event_id, assigned_ids), payload_json)

    @cached_property
    def attributes(self) -> dict[str, dict[str, str]]:
        """The SQS message attributes the forwarder and operators filter on (every message's)."""
        return {
            "signal": {"DataType": "String", "StringValue": self.signal},
            "project_id": {"DataType": "String", "StringValue": self.record.project_id},
        }
