import hashlib
import json
import time

import pytest

from chalicelib.contract.envelope import (
    MAX_MESSAGE_BYTES,
    decode_payload,
    dumps,
    encode_message,
    new_ulid,
    stable_ulids,
    strip_api_key,
    ulid_text,
    utc_now_iso,
)
from chalicelib.contract.errors import EdgeError


def message(payload):
    return {"v": 1, "event_id": new_ulid(), "payload_encoding": "json", "payload": payload}


def test_ulids_are_monotonic_within_a_millisecond():
    ids = [new_ulid() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)


def test_ulids_are_spelled_as_the_reference_implementation_spells_them():
    """python-ulid (the spec's Python implementation) reads and writes the same 26 characters."""
    import random

    from ulid import ULID

    rng = random.Random(7)
    for value in [0, 2**128 - 1, *(rng.getrandbits(128) for _ in range(500))]:
        assert ulid_text(value) == str(ULID.from_int(value))
    fresh = ULID.from_str(new_ulid())
    assert abs(fresh.milliseconds - time.time() * 1000) < 60_000  # its time is now
    assert stable_ulids("delivery-1", 1_700_000_000_000, 3) == [
        str(
            ULID.from_int(
                1_700_000_000_000 << 80 | int.from_bytes(hashlib.sha256(b"delivery-1").digest()[:8]) << 16 | i
            )
        )
        for i in range(3)
    ]


def test_received_at_format():
    assert len(utc_now_iso()) == len("2026-11-22T10:00:00.123Z")
    assert utc_now_iso().endswith("Z")


def test_strip_api_key_only_top_level():
    assert strip_api_key({"api_key": "k", "a": {"api_key": "nested"}}) == {"a": {"api_key": "nested"}}
    assert strip_api_key([1]) == [1]


def test_small_message_is_inline():
    body = encode_message(message({"m": "x"}))
    assert json.loads(body)["payload"] == {"m": "x"}


def test_large_message_is_gzip_base64_and_decodes_back():
    payload = {"lines": [f"line {i} " + "y" * 100 for i in range(3000)]}
    body = encode_message(message(payload))
    assert len(body) <= MAX_MESSAGE_BYTES
    stored = json.loads(body)
    assert stored["payload_encoding"] == "gzip+base64"
    decoded = decode_payload(stored)
    assert decoded["payload"] == payload and decoded["payload_encoding"] == "json"


def test_incompressible_event_over_the_limit_is_413():
    import os

    payload = {"blob": os.urandom(400 * 1024).hex()}
    with pytest.raises(EdgeError) as info:
        encode_message(message(payload))
    assert info.value.status == 413


def test_queue_messages_splice_the_bodies_encode_message_writes():
    """The edge's and ship_logs' bodies (shared fields encoded once per batch, the payload spliced
    in) are byte for byte the whole message encoded, inline and gzip+base64 alike."""
    from chalicelib.contract.keys_item import KeyRecord
    from chalicelib.contract.message import Origin, QueueMessages

    record = KeyRecord(key_hash="h", project_id="42", organization_id="7", billing_ok=True, key_id="3")
    origin = Origin("/api/ingest/job", client_ip="203.0.113.9", headers={"x-lookout-client": "php é \u2028"})
    batch = QueueMessages("job", record, origin)
    for payload, assigned in (({"m": "é\n"}, None), ({"m": 1}, {"run_id": "R1"}), ({"pad": "x" * 300_000}, None)):
        event_id = new_ulid()
        whole = {**batch.fields(event_id), "payload": payload, **({"assigned_ids": assigned} if assigned else {})}
        spliced = batch.body(event_id, dumps(payload), assigned)
        assert spliced == encode_message(whole)
        assert decode_payload(json.loads(spliced))["payload"] == payload
    assert batch.attributes == {
        "signal": {"DataType": "String", "StringValue": "job"},
        "project_id": {"DataType": "String", "StringValue": "42"},
    }
