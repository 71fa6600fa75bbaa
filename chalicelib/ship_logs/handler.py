"""CloudWatch Logs subscription events → `log` events on the queue (CONTRACT §12).

A subscription filter invokes the `ship_logs` Lambda with `{"awslogs": {"data":
base64(gzip(JSON))}}`. Each DATA_MESSAGE becomes a `log` event (split at 200 entries / 1 MiB,
as chalicelib.contract.cloudwatch_logs does for Firehose too) for the project whose API key
is LOOKOUT_EDGE_TAIL_API_KEY, or the SSM SecureString named by LOOKOUT_EDGE_TAIL_API_KEY_PARAM.
A CONTROL_MESSAGE is dropped. When the queue refuses an event the handler raises, so Lambda
retries the invocation; event ids come from the log events themselves, so a retry sends the
same ids and Lookout keeps each event once.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from chalicelib.contract import cloudwatch_logs, envelope
from chalicelib.contract.errors import EdgeError
from chalicelib.contract.keys_item import KeyRecord, fetch_key_item, hash_key
from chalicelib.contract.message import Origin, QueueMessages
from chalicelib.runtime import sqs_batch, ssm
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.runtime.container import per_container
from chalicelib.runtime.observability import count, logger
from chalicelib.runtime.ttl_cache import TtlCache

SERVICE = "ship-logs"
PATH = "cloudwatch-logs"  # the queue message's `path`: where the event came from
KEY_CACHE_SECONDS = 300.0


@per_container
def _tail_keys() -> TtlCache[str, KeyRecord | None]:
    """The tail key's usable record for a few minutes; an unknown or unusable one is read again each time."""
    return TtlCache(
        fresh_for=lambda record: KEY_CACHE_SECONDS if record is not None and record.billing_ok else 0.0,
        stale_seconds=0.0,
        max_size=1,
    )


class ShipFailed(RuntimeError):
    """Raised so Lambda retries the invocation: some events are not in the queue."""


def ship(event: dict[str, Any]) -> dict[str, Any]:
    """Queue the log events of one subscription invocation; raises ShipFailed when SQS refused any."""
    config = settings()
    queue_url = config.require("queue_url")
    try:
        data = base64.b64decode((event.get("awslogs") or {})["data"], validate=True)
        payloads = cloudwatch_logs.decode_log_payloads(data)
    except (KeyError, TypeError, binascii.Error, EdgeError) as exc:
        # Not what CloudWatch Logs sends: a retry cannot fix it, so it is reported and dropped.
        reason = exc.message if isinstance(exc, EdgeError) else "no base64 awslogs.data"
        logger(SERVICE).error("not a CloudWatch Logs subscription event", extra={"reason": reason})
        count("malformed", 1, SERVICE)
        return {"shipped": 0, "malformed": True}
    if not payloads:
        count("control_messages", 1, SERVICE)
        return {"shipped": 0}
    record = tail_key()
    outgoing = build_messages(payloads, record)
    failed = sqs_batch.send_messages(queue_url, outgoing).failed
    count("shipped", len(outgoing) - len(failed), SERVICE)
    if failed:
        raise ShipFailed(f"{len(failed)} of {len(outgoing)} log events not queued; Lambda retries them")
    return {"shipped": len(outgoing), "event_ids": list(outgoing)}


def build_messages(payloads: list[dict[str, Any]], record: KeyRecord) -> dict[str, sqs_batch.Outgoing]:
    """One CONTRACT §5 message per payload by event id, the ids stable across a retry of the invocation."""
    first = payloads[0]["entries"][0]
    seed = f"{first['log_group']}|{first['log_stream']}|{first.get('id')}"
    first_ms = first.get("timestamp") if isinstance(first.get("timestamp"), int) else int(time.time() * 1000)
    batch = QueueMessages("log", record, Origin(path=PATH))
    event_ids = envelope.stable_ulids(seed, first_ms, len(payloads))
    return {
        event_id: sqs_batch.Outgoing(batch.body(event_id, envelope.dumps(payload)), batch.attributes)
        for event_id, payload in zip(event_ids, payloads, strict=True)
    }


def tail_key() -> KeyRecord:
    """The keys-table item of the tail API key, cached for a few minutes; ConfigError when unusable."""
    config = settings()
    if config.tail_api_key:
        raw = config.tail_api_key
    elif config.tail_api_key_param:
        try:
            raw = ssm.secure_parameter(config.tail_api_key_param, config.token_cache_seconds)
        except ssm.ParameterUnavailable as exc:
            raise ConfigError(f"LOOKOUT_EDGE_TAIL_API_KEY_PARAM: {exc}") from None
    else:
        raise ConfigError("set LOOKOUT_EDGE_TAIL_API_KEY or LOOKOUT_EDGE_TAIL_API_KEY_PARAM")
    key_hash = hash_key(raw)
    record = _tail_keys().get(key_hash, lambda: fetch_key_item(config.keys_table, key_hash)).value
    if record is None:
        raise ConfigError("the tail API key is not in the keys table (revoked, or not synced yet)")
    if not record.billing_ok:
        raise ConfigError("the tail API key's organization is not in good billing standing")
    return record
