"""Security properties not already proven elsewhere.

Already covered, not repeated here: X-Forwarded-For naming an allowed IP from a refused
source (tests/functional/test_ingest.py), the item builder never storing the raw key
(tests/unit/test_keysync.py), and the receiver comparing tokens with hmac.compare_digest
(tests/integration/test_receiver.py::test_the_token_is_compared_in_constant_time).
"""

from __future__ import annotations

import json
import tracemalloc
import zlib
from typing import Any

import boto3
import pytest

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.keys_item import hash_key
from chalicelib.edge.bodies import MAX_DECODED_BYTES
from chalicelib.edge.doors.sdk import decode
from chalicelib.edge.keys import key_cache
from edgectl.lambda_shim import api_gateway_event
from tests.conftest import REGION, drain_queue
from tests.functional.test_ingest import invoke

KEY = "lk_security_raw_key_7f3a9c"
GIB = 1024 * 1024 * 1024


@pytest.mark.parametrize(
    "spoof",
    [
        {"X-Forwarded-For": "10.1.2.3"},
        {"X-Forwarded-For": "198.51.100.1, 10.1.2.3"},
        {"X-Real-IP": "10.1.2.3"},
        {"Forwarded": "for=10.1.2.3"},
        {"True-Client-IP": "10.1.2.3", "CF-Connecting-IP": "10.1.2.3"},
    ],
)
def test_forwarding_headers_neither_open_nor_close_the_allowlist(put_key, aws, spoof: dict[str, str]) -> None:
    put_key(KEY, ip_allowlist=["10.0.0.0/8"])
    headers = {"Content-Type": "application/json", "X-Api-Key": KEY, **spoof}
    refused, body, _ = invoke(api_gateway_event("/api/ingest", b"{}", headers, source_ip="198.51.100.1"))
    assert (refused, body["error"]) == (403, "ip_not_allowed")
    accepted, _, _ = invoke(api_gateway_event("/api/ingest", b"{}", headers, source_ip="10.9.9.9"))
    assert accepted == 202
    (message,) = drain_queue(aws.queue_url)
    assert message["client_ip"] == "10.9.9.9"  # what API Gateway saw, never a header


def _contains(value: Any, needle: str) -> bool:
    """True when `needle` appears anywhere in a nested structure of dicts, lists, objects and strings."""
    seen: set[int] = set()

    def walk(node: Any) -> bool:
        if id(node) in seen:
            return False
        seen.add(id(node))
        if isinstance(node, (str, bytes)):
            return needle in (node if isinstance(node, str) else node.decode("latin-1"))
        if isinstance(node, dict):
            return any(walk(k) or walk(v) for k, v in node.items())
        if isinstance(node, (list, tuple, set, frozenset)):
            return any(walk(v) for v in node)
        if hasattr(node, "__dict__"):
            return walk(vars(node))
        if hasattr(node, "__slots__"):
            return any(walk(getattr(node, s, None)) for s in node.__slots__)
        return False

    return walk(value)


def test_the_key_cache_and_every_table_hold_only_hashes(http, put_key, aws) -> None:
    put_key(KEY, rate_limit_per_minute=100)
    for headers in ({"X-Api-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"Idempotency-Key": "idem-1"}):
        body = json.dumps({"message": "m", "api_key": KEY}).encode()
        response = http.post("/api/ingest", body=body, headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 202
    http.post("/api/ingest", body=b"{}", headers={"X-Api-Key": "lk_unknown_key_for_negative_cache"})

    cache = key_cache()
    assert set(cache._entries) == {hash_key(KEY), hash_key("lk_unknown_key_for_negative_cache")}
    assert not _contains(cache, KEY) and not _contains(cache, "lk_unknown_key_for_negative_cache")

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for table in (aws.keys_table, aws.idempotency_table):
        items = dynamodb.scan(TableName=table)["Items"]
        assert items, table  # the rate counters and the idempotency claim are there
        assert not _contains(items, KEY), table
    assert not _contains(drain_queue(aws.queue_url), KEY)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """1 GiB of zeros compressed (about 1 MiB) in each framing; built in chunks, the test stays small.

    One raw deflate stream, framed three ways with the real checksums of the 1 GiB. A MiB of zeros
    deflated and flushed with the history reset (Z_FULL_FLUSH) ends on a byte boundary in the state
    it started from, so every MiB deflates to the same block: the stream is that block 1,024 times
    (deflating the whole GiB took 3.5 s of CPU).
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    raw = block * (GIB // len(chunk)) + packer.flush()
    crc, adler = 0, 1
    for _ in range(GIB // len(chunk)):
        crc, adler = zlib.crc32(chunk, crc), zlib.adler32(chunk, adler)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return {
        "gzip": gzip_header + raw + crc.to_bytes(4, "little") + (GIB % 2**32).to_bytes(4, "little"),
        "deflate": b"\x78\xda" + raw + adler.to_bytes(4, "big"),
        "raw-deflate": raw,
    }


@pytest.mark.parametrize("kind", ["gzip", "deflate", "raw-deflate"])
@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_one_gibibyte_bomb_is_refused_in_bounded_memory(
    bombs: dict[str, bytes], kind: str, content_type: str
) -> None:
    bomb = bombs[kind]
    assert len(bomb) < 5 * 1024 * 1024  # small enough to pass the raw-size check: only decoding can stop it
    tracemalloc.start()
    try:
        with pytest.raises(EdgeError) as refused:
            decode(bomb, content_type, "deflate" if kind != "gzip" else "gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < 20 * 1024 * 1024, f"decoding peaked at {peak / 1024 / 1024:.1f} MiB"
    assert peak < 4 * MAX_DECODED_BYTES


def test_a_bomb_through_the_app_is_a_413_and_queues_nothing(put_key, aws, bombs: dict[str, bytes]) -> None:
    put_key(KEY)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "X-Api-Key": KEY}
    status, body, _ = invoke(api_gateway_event("/api/ingest", bombs["gzip"], headers, base64_body=True))
    assert (status, body["error"]) == (413, "payload_too_large")
    assert drain_queue(aws.queue_url) == []
