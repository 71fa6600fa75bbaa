import base64

import pytest

from chalicelib.contract.keys_item import KeyRecord
from chalicelib.contract.signals import SIGNALS
from chalicelib.edge.auth import extract_api_key, ip_allowed, signal_enabled


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"x-api-key": "A", "x-api-token": "B", "authorization": "Bearer C"}, {"api_key": "E"}, "A"),
        ({"x-api-token": "B", "authorization": "Bearer C"}, {"api_key": "E"}, "B"),
        ({"authorization": "Bearer C"}, {"api_key": "E"}, "C"),
        ({"authorization": basic("D")}, {"api_key": "E"}, "D"),
        ({}, {"api_key": "E"}, "E"),
        ({"x-api-key": "  "}, {"api_key": "E"}, "E"),
        ({"authorization": "Basic !!!notbase64"}, {}, None),
        ({}, {"api_key": 5}, None),
        ({}, ["api_key"], None),
        ({}, None, None),
    ],
)
def test_key_sources_in_contract_order(headers, body, expected):
    assert extract_api_key(headers, body) == expected


def test_ipv4_allowlist():
    allow = ("203.0.113.0/24", "198.51.100.7")
    assert ip_allowed("203.0.113.9", allow)
    assert ip_allowed("198.51.100.7", allow)
    assert not ip_allowed("198.51.100.8", allow)
    assert not ip_allowed(None, allow)
    assert not ip_allowed("not-an-ip", allow)


def test_ipv6_allowlist_and_mapped_ipv4():
    allow = ("2001:db8::/32", "192.0.2.0/24")
    assert ip_allowed("2001:db8::1", allow)
    assert not ip_allowed("2001:db9::1", allow)
    assert ip_allowed("::ffff:192.0.2.5", allow)


def test_empty_allowlist_allows_all_and_bad_entries_allow_nobody():
    assert ip_allowed("8.8.8.8", ())
    assert not ip_allowed("8.8.8.8", ("garbage",))


def test_signal_switches():
    record = KeyRecord("h", "1", "2", True, trace_enabled=False, rum_enabled=False)
    assert not signal_enabled(record, SIGNALS["trace"], env_forced=False)
    assert not signal_enabled(record, SIGNALS["otlp"], env_forced=False)
    assert not signal_enabled(record, SIGNALS["rum"], env_forced=False)
    assert signal_enabled(record, SIGNALS["rum"], env_forced=True)
    assert signal_enabled(record, SIGNALS["error"], env_forced=False)
