"""Firehose deliveries → events, and the spec's answer bodies (chalicelib/edge/decoders/firehose.py)."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest

from chalicelib.contract.errors import EdgeError
from chalicelib.edge.doors import Event, firehose
from tests.firehose_producer import cloudwatch_logs_record, delivery


def decode(values: list[Any], signal: str = "event", gzip_body: bool = False) -> list[Event]:
    headers, body = delivery(values, "k", gzip_body=gzip_body).request()
    lowered = {k.lower(): v for k, v in headers.items()}
    request = firehose.load_request(body, lowered.get("content-encoding"))
    return firehose.decode_delivery(request, signal)


def refused(values: list[Any] | None = None, signal: str = "event", request: Any = None) -> EdgeError:
    with pytest.raises(EdgeError) as caught:
        if request is None:
            decode(values or [], signal)
        else:
            firehose.decode_delivery(request, signal)
    return caught.value


@pytest.mark.parametrize("gzip_body", [False, True])
def test_json_records_become_one_event_each_in_order(gzip_body: bool):
    result = decode([{"name": "a", "entries": []}, {"name": "b", "entries": []}], gzip_body=gzip_body)
    assert [e.payload["name"] for e in result] == ["a", "b"]
    assert [e.where for e in result] == ["record 1", "record 2"]


def test_request_id_comes_from_the_body():
    _headers, body = delivery([{"n": 1}], "k").request()
    request = firehose.load_request(body, None)
    got = firehose.request_id_of(request, {"x-amz-firehose-request-id": "other"})
    assert got == json.loads(body)["requestId"]
    assert firehose.request_id_of({}, {"x-amz-firehose-request-id": "other"}) == "other"


def test_ndjson_record_is_one_event_per_line_and_pretty_json_is_one():
    ndjson = b'{"n": 1}\n\n{"n": 2}\n{"n": 3}\n'
    pretty = json.dumps({"n": 4, "nested": {"a": 1}}, indent=2).encode()
    events = decode([ndjson, pretty])
    assert [e.payload["n"] for e in events] == [1, 2, 3, 4]
    assert [e.where for e in events] == ["record 1 line 1", "record 1 line 3", "record 1 line 4", "record 2"]
    assert events[0].size == len(b'{"n": 1}')


def test_cloudwatch_logs_records_become_log_events_and_control_messages_nothing():
    control = gzip.compress(
        json.dumps(
            {"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "",
             "subscriptionFilters": [], "logEvents": [{"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE"}]}
        ).encode()
    )  # fmt: skip
    result = decode([cloudwatch_logs_record(["one", "two"], group="/app", stream="s"), control], signal="log")
    assert len(result) == 1
    assert result[0].size == len(json.dumps(result[0].payload, separators=(",", ":")))
    assert [(e["message"], e["log_group"], e["log_stream"]) for e in result[0].payload["entries"]] == [
        ("one", "/app", "s"),
        ("two", "/app", "s"),
    ]


def test_only_control_messages_is_a_delivery_of_no_events():
    control = gzip.compress(json.dumps({"messageType": "CONTROL_MESSAGE", "logEvents": []}).encode())
    assert decode([control], signal="log") == []


def test_cloudwatch_logs_data_on_another_signal_is_400():
    error = refused([cloudwatch_logs_record(["x"])], signal="event")
    assert (error.status, error.code) == (400, "invalid_body")
    assert "record 1" in error.message


def test_empty_records_are_skipped():
    assert [e.payload["n"] for e in decode([b"", b"  \n", {"n": 1}])] == [1]


def test_a_bad_ndjson_line_names_its_record_and_line():
    error = refused([{"ok": 1}, b'{"ok": 2}\nnot json\n'])
    assert error.status == 400 and error.message.startswith("record 2: line 2:")


@pytest.mark.parametrize(
    ("request_body", "status"),
    [
        ({"requestId": "r", "records": "nope"}, 400),
        ({"requestId": "r"}, 400),
        ({"requestId": "r", "records": [{"data": "not base64!"}]}, 400),
        ({"requestId": "r", "records": [{"data": "QUJD="}]}, 400),  # bad padding
        ({"requestId": "r", "records": [{"nodata": "eA=="}]}, 400),
        ({"requestId": "r", "records": ["eA=="]}, 400),
        ({"requestId": "r", "records": [{"data": 12}]}, 400),
    ],
)
def test_malformed_deliveries_are_400(request_body: dict, status: int):
    assert refused(request=request_body).status == status


def test_record_over_1024000_bytes_is_413_and_at_the_limit_is_taken():
    at_limit = b'{"pad": "' + b"x" * (firehose.MAX_RECORD_BYTES - 11) + b'"}'
    assert len(at_limit) == firehose.MAX_RECORD_BYTES
    assert len(decode([at_limit])) == 1
    error = refused([at_limit + b" "])
    assert error.status == 413 and "record 1" in error.message


def test_more_than_10000_records_is_413():
    request = {"requestId": "r", "records": [{"data": "e30="}] * (firehose.MAX_RECORDS + 1)}
    assert refused(request=request).status == 413


def test_10000_records_are_taken():
    request = {"requestId": "r", "records": [{"data": base64.b64encode(b'{"n": 1}').decode()}] * firehose.MAX_RECORDS}
    assert len(firehose.decode_delivery(request, "event")) == firehose.MAX_RECORDS


def test_more_than_10000_events_from_ndjson_is_413():
    lines = b"\n".join([b"{}"] * 5001)
    error = refused([lines, lines])
    assert (error.status, error.code) == (413, "too_many_events")


@pytest.mark.parametrize(
    ("body", "encoding", "status"),
    [
        (b"", None, 400),
        (b"[]", None, 400),
        (b"{not json", None, 400),
        (b"\x1f\x8b garbage", "gzip", 400),
        (b"{}", "br", 415),
        (gzip.compress(b" " * (firehose.MAX_DECODED_BYTES + 1)), "gzip", 413),
    ],
)
def test_bad_request_bodies(body: bytes, encoding: str | None, status: int):
    with pytest.raises(EdgeError) as caught:
        firehose.load_request(body, encoding)
    assert caught.value.status == status


def test_a_four_megabyte_buffer_fits_the_decoded_cap():
    records = [b"x" * 1000] * 4000
    _headers, body = delivery(records, "k", gzip_body=True).request()
    assert len(gzip.decompress(body)) > 5 * 1024 * 1024  # more than the SDK routes' 5 MiB
    assert len(firehose.load_request(body, "gzip")["records"]) == 4000


def test_answer_bodies_follow_the_spec():
    assert firehose.success_body("r-1", 1700000000123) == {"requestId": "r-1", "timestamp": 1700000000123}
    error = EdgeError(401, "invalid_api_key", "the API key is not known to this edge")
    assert firehose.error_body("r-1", error, 5) == {
        "requestId": "r-1",
        "timestamp": 5,
        "errorMessage": "invalid_api_key: the API key is not known to this edge",
    }


def test_carried_headers_never_include_the_access_key():
    headers, _ = delivery([{}], "secret-key").request()
    lowered = {k.lower(): v for k, v in headers.items()}
    carried = firehose.carried_headers(lowered)
    assert set(carried) == set(firehose.CARRIED_HEADERS)
    assert "secret-key" not in json.dumps(carried)
