"""CloudWatch Logs subscription messages → `log` payloads (chalicelib/contract/cloudwatch_logs.py)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from chalicelib.contract import cloudwatch_logs
from chalicelib.contract.errors import EdgeError
from chalicelib.contract.signals import SIGNALS


def data_message(messages: list[str], group: str = "/aws/lambda/orders", stream: str = "2026/11/22/[$LATEST]abc"):
    """A DATA_MESSAGE as CloudWatch Logs writes it (docs: "Subscription filters" examples)."""
    return {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": group,
        "logStream": stream,
        "subscriptionFilters": ["to-lookout"],
        "logEvents": [
            {"id": f"3719590929{i:07d}", "timestamp": 1764000000000 + i, "message": text}
            for i, text in enumerate(messages)
        ],
    }


CONTROL = {
    "messageType": "CONTROL_MESSAGE",
    "owner": "CloudwatchLogs",
    "logGroup": "",
    "logStream": "",
    "subscriptionFilters": [],
    "logEvents": [
        {
            "id": "",
            "timestamp": 1764000000000,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose.",
        }
    ],
}


def packed(message: Any) -> bytes:
    return gzip.compress(json.dumps(message).encode(), mtime=0)


def test_data_message_becomes_one_log_payload_with_group_and_stream():
    payloads = cloudwatch_logs.decode_log_payloads(packed(data_message(["START RequestId: 1", "boom"])))
    assert payloads == [
        {
            "entries": [
                {
                    "id": "37195909290000000",
                    "timestamp": 1764000000000,
                    "message": "START RequestId: 1",
                    "log_group": "/aws/lambda/orders",
                    "log_stream": "2026/11/22/[$LATEST]abc",
                },
                {
                    "id": "37195909290000001",
                    "timestamp": 1764000000001,
                    "message": "boom",
                    "log_group": "/aws/lambda/orders",
                    "log_stream": "2026/11/22/[$LATEST]abc",
                },
            ]
        }
    ]
    SIGNALS["log"].check(payloads[0])  # what /api/ingest/log would take


def test_control_message_becomes_nothing():
    assert cloudwatch_logs.decode_log_payloads(packed(CONTROL)) == []


def test_extra_log_event_fields_are_kept():
    message = data_message(["a"])
    message["logEvents"][0]["extractedFields"] = {"status": "500"}
    [payload] = cloudwatch_logs.decode_log_payloads(packed(message))
    assert payload["entries"][0]["extractedFields"] == {"status": "500"}


def test_more_than_200_log_events_split_in_order_into_valid_log_payloads():
    message = data_message([f"line {i}" for i in range(10_000)])  # CloudWatch Logs' batch maximum
    payloads = cloudwatch_logs.decode_log_payloads(packed(message))
    assert [len(p["entries"]) for p in payloads] == [200] * 50
    assert [e["message"] for p in payloads for e in p["entries"]] == [f"line {i}" for i in range(10_000)]
    for payload in payloads:
        SIGNALS["log"].check(payload)


def test_a_one_megabyte_batch_is_split_so_each_payload_stays_under_one_mib():
    # Four 256 KB messages: the largest single log event, ~1 MB, CloudWatch Logs' batch bound.
    message = data_message(["x" * (256 * 1024 - 26)] * 4)
    payloads = cloudwatch_logs.decode_log_payloads(packed(message))
    assert sum(len(p["entries"]) for p in payloads) == 4
    assert len(payloads) == 2
    for payload in payloads:
        assert len(json.dumps(payload, separators=(",", ":"))) <= cloudwatch_logs.MAX_PAYLOAD_BYTES


def test_empty_data_message_becomes_nothing():
    assert cloudwatch_logs.decode_log_payloads(packed(data_message([]))) == []


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x1f\x8bnot gzip at all", 400),
        (gzip.compress(b'{"messageType": "DATA_MESSAGE"', mtime=0)[:-8], 400),  # truncated
        (packed(CONTROL) + b"junk", 400),
        (gzip.compress(b"not json", mtime=0), 400),
        (packed(["a list"]), 400),
        (packed({"messageType": "OTHER"}), 400),
        (packed({**data_message(["a"]), "logEvents": "nope"}), 400),
        (packed({**data_message(["a"]), "logEvents": ["nope"]}), 400),
        (packed({**data_message(["a"]), "logGroup": None}), 400),
    ],
)
def test_malformed_messages_are_400(data: bytes, status: int):
    with pytest.raises(EdgeError) as refused:
        cloudwatch_logs.decode_log_payloads(data)
    assert refused.value.status == status


def test_gzip_bomb_is_refused_without_inflating_it_whole():
    bomb = gzip.compress(b" " * (cloudwatch_logs.MAX_DECODED_BYTES + 1024), 9)
    assert len(bomb) < 20_000
    with pytest.raises(EdgeError) as refused:
        cloudwatch_logs.gunzip(bomb)
    assert refused.value.status == 413


def test_is_gzip_looks_at_the_magic_bytes():
    assert cloudwatch_logs.is_gzip(packed(CONTROL))
    assert not cloudwatch_logs.is_gzip(b'{"a": 1}')
    assert not cloudwatch_logs.is_gzip(b"")
