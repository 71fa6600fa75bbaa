import gzip
import json
import zlib

import pytest

from chalicelib.contract.errors import EdgeError
from chalicelib.contract.signals import MAX_EVENT_BYTES, SIGNALS
from chalicelib.edge.bodies import MAX_DECODED_BYTES, decode_content, media_type
from chalicelib.edge.doors.sdk import decode
from chalicelib.edge.pipeline import check_events


def parse_body(raw: bytes, content_type: str | None, encoding: str | None):
    """Decode as the SDK routes do, then the checks every event passes."""
    body = decode(raw, content_type, encoding)
    check_events(SIGNALS["event"], body.events)
    return body


def payloads(raw: bytes, content_type: str | None = "application/json", encoding: str | None = None) -> list:
    return [event.payload for event in parse_body(raw, content_type, encoding).events]


def refused(raw: bytes, content_type: str | None = "application/json", encoding: str | None = None) -> EdgeError:
    with pytest.raises(EdgeError) as info:
        parse_body(raw, content_type, encoding)
    return info.value


def test_json_object_parses_as_one_event():
    parsed = parse_body(b'{"message": "boom"}', "application/json; charset=utf-8", None)
    assert [event.payload for event in parsed.events] == [{"message": "boom"}]
    assert not parsed.many


def test_text_plain_json_is_accepted_as_sendbeacon_sends_it():
    assert payloads(b'{"a": 1}', "text/plain;charset=UTF-8", None) == [{"a": 1}]


def test_missing_content_type_is_treated_as_json():
    assert media_type(None) == "application/json"
    assert payloads(b"{}", None, None) == [{}]


def test_ndjson_gives_one_event_per_nonblank_line():
    parsed = parse_body(b'{"a": 1}\n\n{"b": 2}\r\n', "application/x-ndjson", None)
    assert [event.payload for event in parsed.events] == [{"a": 1}, {"b": 2}]
    assert [event.where for event in parsed.events] == ["line 1", "line 3"]
    assert parsed.many


@pytest.mark.parametrize("content_type", ["application/xml", "multipart/form-data", "image/png"])
def test_unsupported_content_type_is_415(content_type):
    assert refused(b"{}", content_type).status == 415


def test_unsupported_content_encoding_is_415():
    error = refused(b"{}", encoding="br")
    assert (error.status, error.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body", [b"", b"   \n", b"{not json", b"\xff\xfe\x00", b"NaN", b'{"x": Infinity}', b"1e999999"]
)
def test_invalid_or_empty_json_is_400(body):
    assert refused(body).status == 400


def test_deep_nesting_is_400_not_a_crash():
    assert refused(b"[" * 100_000 + b"]" * 100_000).status == 400


def test_gzip_and_deflate_bodies_are_decoded():
    raw = json.dumps({"message": "zipped"}).encode()
    assert payloads(gzip.compress(raw), "application/json", "gzip") == [{"message": "zipped"}]
    assert payloads(zlib.compress(raw), "application/json", "deflate") == [{"message": "zipped"}]
    raw_deflate = zlib.compressobj(wbits=-15)
    packed = raw_deflate.compress(raw) + raw_deflate.flush()
    assert payloads(packed, "application/json", "deflate") == [{"message": "zipped"}]


def test_gzip_bomb_is_413_without_inflating_it_all():
    bomb = gzip.compress(b"0" * (200 * 1024 * 1024), 9)
    assert len(bomb) < 300 * 1024
    assert refused(bomb, encoding="gzip").status == 413


def test_deflate_bomb_is_413():
    assert refused(zlib.compress(b" " * (50 * 1024 * 1024), 9), encoding="deflate").status == 413


def test_truncated_gzip_is_400():
    packed = gzip.compress(json.dumps({"a": "b" * 1000}).encode())
    assert refused(packed[: len(packed) // 2], encoding="gzip").status == 400


def test_decode_stops_at_the_cap():
    with pytest.raises(EdgeError):
        decode_content(gzip.compress(b"a" * (MAX_DECODED_BYTES + 1)), "gzip")


def test_body_over_5_mib_as_received_is_413():
    assert refused(b" " * (5 * 1024 * 1024 + 1)).status == 413


def test_one_event_over_1_mib_is_413_even_when_the_body_fits():
    big = json.dumps({"message": "x" * MAX_EVENT_BYTES}).encode()
    assert refused(big).status == 413
    assert refused(big + b"\n", "application/x-ndjson").status == 413


def test_ndjson_bad_line_names_the_line():
    error = refused(b'{"a": 1}\n{oops\n', "application/x-ndjson")
    assert error.status == 400 and "line 2" in error.message


def test_every_gzip_member_is_decoded():
    """RFC 1952: a gzip body may be several members; each one is part of the body (issue #15 item 1)."""
    lines = [json.dumps({"n": n}).encode() + b"\n" for n in range(3)]
    body = b"".join(gzip.compress(line) for line in lines)
    assert payloads(body, "application/x-ndjson", "gzip") == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert decode_content(body + b"\0" * 8, "gzip") == b"".join(lines)  # zero padding, as gzip(1) allows


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_trailing_garbage_after_the_stream_is_400(encoding):
    packed = gzip.compress(b'{"a": 1}') if encoding == "gzip" else zlib.compress(b'{"a": 1}')
    error = refused(packed + b"garbage", encoding=encoding)
    assert error.status == 400 and "trailing" in error.message


def test_the_cap_counts_every_member():
    member = gzip.compress(b" " * (MAX_DECODED_BYTES // 2 + 1))
    assert refused(member + member, encoding="gzip").status == 413
