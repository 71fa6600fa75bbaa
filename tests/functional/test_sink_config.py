"""LOOKOUT_EDGE_SINKS / _PARAM and LOOKOUT_EDGE_LOOKOUT_SIGNALS: checked at start, with errors that say what to fix."""

from __future__ import annotations

import json

import boto3
import pytest

from chalicelib.contract.signals import SIGNAL_NAMES
from chalicelib.forward.sinks import registry
from chalicelib.forward.sinks.influx import InfluxSink
from chalicelib.forward.sinks.loki import LokiSink
from chalicelib.forward.sinks.lookout import LookoutSink
from chalicelib.forward.sinks.otlp import OtlpSink
from chalicelib.runtime.config import ConfigError, load_settings
from tests.conftest import REGION

BACKEND = "http://lookout.internal"
CONTRACT_EXAMPLE = [
    {
        "name": "loki",
        "type": "loki",
        "url": "http://loki:3100",
        "signals": ["log", "otlp_logs"],
        "tenant": "lookout",
        "token": None,
    },
    {
        "name": "metrics",
        "type": "influx",
        "url": "http://influx:8086",
        "signals": ["metric", "otlp_metrics"],
        "org": "ops",
        "bucket": "lookout",
        "token": "influx-token",
    },
    {"name": "tempo", "type": "otlp", "url": "http://tempo:4318", "signals": ["otlp"]},
]


def build(sinks: object, lookout_signals: str | None = None, backend: str | None = BACKEND) -> list:
    return registry.build(json.dumps(sinks) if sinks is not None else None, lookout_signals, backend)


def test_the_contract_example_builds_lookout_and_three_sinks() -> None:
    lookout, loki, influx, otlp = build(CONTRACT_EXAMPLE)
    assert isinstance(lookout, LookoutSink) and lookout.signals is None
    assert isinstance(loki, LokiSink) and loki.push_url == "http://loki:3100/loki/api/v1/push"
    assert loki.headers["X-Scope-OrgID"] == "lookout" and "Authorization" not in loki.headers
    assert isinstance(influx, InfluxSink)
    assert influx.write_url == "http://influx:8086/api/v2/write?org=ops&bucket=lookout&precision=ns"
    assert influx.headers["Authorization"] == "Token influx-token"
    assert isinstance(otlp, OtlpSink) and otlp.signals == {"otlp"}


def test_influx_v1_writes_to_the_database() -> None:
    sink = build(
        [
            {
                "name": "vm",
                "type": "influx",
                "url": "http://vm:8428/",
                "signals": ["metric"],
                "version": 1,
                "db": "lookout",
            }
        ]
    )[1]
    assert sink.write_url == "http://vm:8428/write?db=lookout&precision=ns"


def test_no_sinks_means_lookout_alone() -> None:
    (lookout,) = build(None)
    assert lookout.name == "lookout"


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"name": "x"}, "must be a JSON array"),
        (["loki"], "entry 0 must be a JSON object"),
        ([{"name": "Loki!", "type": "loki", "url": "http://l", "signals": ["log"]}], '"name" must match'),
        (
            [{"name": "l", "type": "elastic", "url": "http://l", "signals": ["log"]}],
            '"type" must be one of loki, influx, otlp',
        ),
        ([{"name": "l", "type": "loki", "url": "loki:3100", "signals": ["log"]}], '"url" must be an http(s) URL'),
        ([{"name": "l", "type": "loki", "url": "http://l", "signals": []}], '"signals" must be a non-empty list'),
        ([{"name": "l", "type": "loki", "url": "http://l", "signals": ["logs"]}], "unknown signal(s) logs"),
        ([{"name": "lookout", "type": "loki", "url": "http://l", "signals": ["log"]}], "'lookout' is already taken"),
        (
            [{"name": "l", "type": "loki", "url": "http://l", "signals": ["log"]}] * 2,
            "entry 1: the name 'l' is already taken",
        ),
        (
            [{"name": "l", "type": "loki", "url": "http://l", "signals": ["log"], "tennant": "x"}],
            "unknown key(s) tennant",
        ),
        (
            [{"name": "m", "type": "influx", "url": "http://i", "signals": ["rum"], "org": "o", "bucket": "b"}],
            "cannot take signal(s) rum",
        ),
        (
            [{"name": "m", "type": "influx", "url": "http://i", "signals": ["metric"], "org": "o"}],
            '"bucket" is required',
        ),
        (
            [{"name": "m", "type": "influx", "url": "http://i", "signals": ["metric"], "version": 3}],
            '"version" must be 1 or 2',
        ),
        ([{"name": "m", "type": "influx", "url": "http://i", "signals": ["metric"], "version": 1}], '"db" is required'),
        ([{"name": "t", "type": "otlp", "url": "http://t", "signals": ["log"]}], "cannot take signal(s) log"),
        (
            [{"name": "t", "type": "otlp", "url": "http://t", "signals": ["otlp"], "headers": ["x"]}],
            '"headers" must be an object',
        ),
    ],
)
def test_a_bad_sinks_list_fails_loudly_with_the_fix(sinks: object, message: str) -> None:
    text = sinks if isinstance(sinks, str) else json.dumps(sinks)
    with pytest.raises(ConfigError, match="LOOKOUT_EDGE_SINKS") as raised:
        registry.build(text, None, BACKEND)
    assert message in str(raised.value)


def test_lookout_can_be_narrowed_but_no_signal_may_go_nowhere() -> None:
    loki_all = {"name": "loki", "type": "loki", "url": "http://l", "signals": sorted(SIGNAL_NAMES)}
    (loki,) = build([loki_all], "none", backend=None)  # Lookout off: no backend URL needed
    assert loki.name == "loki"
    lookout, _ = build([loki_all], "error, metric ,log", backend=BACKEND)
    assert lookout.signals == {"error", "metric", "log"}
    with pytest.raises(ConfigError, match=r"signal\(s\) .*rum.* have no destination"):
        build([{**loki_all, "signals": ["log"]}], "error,metric")
    with pytest.raises(ConfigError, match="LOOKOUT_EDGE_LOOKOUT_SIGNALS: unknown signal"):
        build(None, "errors")
    with pytest.raises(ConfigError, match="LOOKOUT_INGEST_EDGE_BACKEND_URL is not set"):
        build(None, None, backend=None)


def test_sinks_from_an_ssm_secure_string(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parameter is named in the environment, as a deployment does: the forwarder's policy grants
    GetParameter on that name only (the IAM fixture judges the read)."""
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/lookout/sinks", Value=json.dumps(CONTRACT_EXAMPLE), Type="SecureString"
    )
    monkeypatch.setenv("LOOKOUT_EDGE_SINKS_PARAM", "/lookout/sinks")
    config = load_settings({"LOOKOUT_EDGE_SINKS_PARAM": "/lookout/sinks", "LOOKOUT_INGEST_EDGE_BACKEND_URL": BACKEND})
    assert [s.name for s in registry.sinks(config)] == ["lookout", "loki", "metrics", "tempo"]
    monkeypatch.setenv("LOOKOUT_EDGE_SINKS_PARAM", "/lookout/absent")
    missing = load_settings({"LOOKOUT_EDGE_SINKS_PARAM": "/lookout/absent", "LOOKOUT_INGEST_EDGE_BACKEND_URL": BACKEND})
    with pytest.raises(ConfigError, match="LOOKOUT_EDGE_SINKS_PARAM: cannot read SSM parameter /lookout/absent"):
        registry.sinks(missing)


BASE = {
    "loki": {"name": "l", "type": "loki", "url": "http://loki:3100", "signals": ["log"]},
    "influx": {
        "name": "m",
        "type": "influx",
        "url": "http://influx:8086",
        "signals": ["metric"],
        "org": "o",
        "bucket": "b",
    },
    "influx1": {"name": "v", "type": "influx", "url": "http://vm:8428", "signals": ["metric"], "version": 1, "db": "d"},
    "otlp": {"name": "t", "type": "otlp", "url": "http://tempo:4318", "signals": ["otlp"]},
}
# Every key each type reads, on the entry that reads it.
FIELDS = [
    *((kind, key) for kind in ("loki", "otlp") for key in ("name", "type", "url", "signals")),
    ("loki", "tenant"),
    ("loki", "token"),
    ("influx", "version"),
    ("influx", "org"),
    ("influx", "bucket"),
    ("influx", "token"),
    ("influx1", "db"),
    ("influx1", "rp"),
    ("influx1", "username"),
    ("influx1", "password"),
    ("otlp", "headers"),
]
WRONG_TYPES = [["loki"], {"a": "b"}, 7, 2.0, True, False]


def refusal(entry: dict) -> str:
    """The ConfigError a list holding this entry gets (never another exception)."""
    with pytest.raises(ConfigError) as raised:
        registry.build(json.dumps([entry]), None, BACKEND)
    return str(raised.value)


@pytest.mark.parametrize(("kind", "key"), FIELDS)
@pytest.mark.parametrize("wrong", WRONG_TYPES, ids=repr)
def test_every_wrong_type_is_a_config_error_naming_the_entry_and_the_field(kind: str, key: str, wrong: object) -> None:
    if key == "headers" and isinstance(wrong, dict):
        wrong = {"X-Tenant": ["b"]}  # an object is right there: a value of the wrong type
    entry = {**BASE[kind], key: wrong}
    if key == "username":
        entry["password"] = "p"
    message = refusal(entry)
    assert message.startswith("LOOKOUT_EDGE_SINKS: ")
    assert f'"{key}"' in message
    # Common keys are checked per entry (its index), a type's own options per named sink.
    assert ("entry 0" if key in registry.COMMON_KEYS else f"sink {entry['name']!r}") in message


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("loki", {"tenant": "a\r\nX-Injected: 1"}, '"tenant" must not contain control characters'),
        ("loki", {"token": "t\nX-Injected: 1"}, '"token" must not contain control characters'),
        ("loki", {"token": "t\x00"}, '"token" must not contain control characters'),
        ("loki", {"tenant": "café"}, '"tenant" is sent in a header: printable ASCII only'),
        ("influx", {"token": "t\r\n"}, '"token" must not contain control characters'),
        ("influx1", {"username": "u\r\nX: 1", "password": "p"}, '"username" must not contain control characters'),
        ("influx1", {"username": "u", "password": "p\n"}, '"password" must not contain control characters'),
        ("influx1", {"username": "a:b", "password": "p"}, '"username" must not contain ":"'),
        ("otlp", {"headers": {"X-Tenant": "a\r\nX-Injected: 1"}}, "the value of X-Tenant must be printable ASCII"),
        ("otlp", {"headers": {"X-Tenant": "a\n"}}, "the value of X-Tenant must be printable ASCII"),
        ("otlp", {"headers": {"X-Tenant\r\nX-Injected": "1"}}, "is not a header name"),
        ("otlp", {"headers": {"X Tenant": "1"}}, "is not a header name"),
        ("otlp", {"headers": {"": "1"}}, "is not a header name"),
        ("otlp", {"headers": {"X-Tenant": "é"}}, "the value of X-Tenant must be printable ASCII"),
        ("otlp", {"headers": {"Content-Length": "1"}}, "Content-Length is set by the sink itself"),
        ("otlp", {"headers": {"host": "evil"}}, "host is set by the sink itself"),
    ],
)
def test_header_injection_is_refused_at_start(kind: str, options: dict, message: str) -> None:
    text = refusal({**BASE[kind], **options})
    assert message in text and repr(BASE[kind]["name"]) in text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://loki:99999", "out of range"),
        ("http://loki:0", "port must be 1-65535"),
        ("http://loki:31oo", "Port could not be cast"),
        ("http://:3100", "with a host"),
        ("ftp://loki", "with a host"),
        ("http://lo ki", "without spaces or control characters"),
        ("http://loki\r\n:3100", "without spaces or control characters"),
        ("http://loki:3100/?tenant=x", "without ?query or #fragment"),
        ("http://loki:3100#x", "without ?query or #fragment"),
        ("http://user:secret@loki:3100", "without user:password@"),
    ],
)
def test_a_malformed_url_or_port_is_refused_at_start(url: str, message: str) -> None:
    text = refusal({**BASE["loki"], "url": url})
    assert message in text and "entry 0 (l)" in text and '"url"' in text
    assert "secret" not in text


@pytest.mark.parametrize("url", ["http://[::1]:3100", "https://loki.example:443/prefix/", "http://127.0.0.1:65535"])
def test_good_urls_still_build(url: str) -> None:
    _, loki = build([{**BASE["loki"], "url": url}])
    assert loki.push_url == url.rstrip("/") + "/loki/api/v1/push"


def test_otlp_headers_and_header_tokens_that_are_fine_are_sent() -> None:
    _, loki, tempo = build(
        [
            {**BASE["loki"], "tenant": " lookout ", "token": "abc.DEF-123_=="},
            {**BASE["otlp"], "headers": {"X-Scope-OrgID": "lookout", "Authorization": "Basic dTpw"}},
        ]
    )
    assert loki.headers["X-Scope-OrgID"] == "lookout" and loki.headers["Authorization"] == "Bearer abc.DEF-123_=="
    assert tempo.headers == {
        "X-Scope-OrgID": "lookout",
        "Authorization": "Basic dTpw",
        "Content-Type": "application/json",
    }
