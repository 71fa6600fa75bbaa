"""The reference receiver over real HTTP on 127.0.0.1, on MariaDB and SQLite stores."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from edgectl.receiver import ReceiverHandle, start_receiver
from edgectl.receiver import app as receiver_module
from edgectl.receiver.app import CONFIG_SIGNALS, SAMPLED_SIGNALS, merge_settings, validate_event
from edgectl.receiver.store import MySQLStore, ReceiverStore, SQLiteStore
from tests.integration import test_receiver_store
from tests.integration.test_receiver_store import job_finish, job_start, message, mysql_admin

TOKEN = "edge-token-" + "x" * 20
API_KEY = "lk_project_key_1"
ROOT = Path(__file__).resolve().parents[2]

pool = urllib3.PoolManager(retries=False, timeout=10)

# The store tests' fixtures: a fresh MariaDB database per test, and `store` on MariaDB and SQLite.
mysql_url = test_receiver_store.mysql_url
store = test_receiver_store.store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[ReceiverStore]:
    opened = SQLiteStore(tmp_path / "receiver.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def rx(sqlite_store: ReceiverStore) -> Iterator[ReceiverHandle]:
    """A receiver with a token and one project key, on SQLite (the store-specific tests use `store`)."""
    with start_receiver(sqlite_store, TOKEN, port=0, projects={API_KEY: "42"}) as handle:
        yield handle


def call(
    handle: ReceiverHandle, method: str, path: str, body: Any = None, token: str | None = TOKEN, **headers: str
) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of one request; `token=None` sends no Authorization."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    response = pool.request(method, handle.url + path, body=data, headers=headers)
    return response.status, json.loads(response.data), response.headers


def ingest(handle: ReceiverHandle, events: list[Any], token: str | None = TOKEN) -> tuple[int, Any]:
    status, body, _ = call(handle, "POST", "/api/ingest/edge", {"events": events}, token)
    return status, body


# -- /api/ingest/edge ----------------------------------------------------------------------------


def test_without_a_token_configured_every_ingest_is_503(sqlite_store: ReceiverStore) -> None:
    with start_receiver(sqlite_store, token=None) as handle:
        status, body, headers = call(handle, "POST", "/api/ingest/edge", {"events": [message("E1")]}, token="any")
        assert status == 503
        assert body["error"] == "not_configured"
        assert headers["Retry-After"]
        assert sqlite_store.event("E1") is None
        handle.token = TOKEN  # Lookout once LOOKOUT_INGEST_EDGE_TOKEN is set
        assert ingest(handle, [message("E1")])[0] == 200


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "], ids=repr
)
def test_a_missing_or_wrong_token_is_401_and_stores_nothing(rx: ReceiverHandle, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    status, body, _ = call(rx, "POST", "/api/ingest/edge", {"events": [message("E1")]}, token=None, **headers)
    assert (status, body["error"]) == (401, "unauthorized")
    assert TOKEN not in json.dumps(body)
    assert rx.store.event("E1") is None


def test_the_token_is_compared_in_constant_time(rx: ReceiverHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = receiver_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(receiver_module.hmac, "compare_digest", spy)
    assert ingest(rx, [message("E1")], token="guess")[0] == 401
    assert ingest(rx, [message("E2")])[0] == 200
    assert seen == [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_a_valid_batch_is_stored_once_each(store: ReceiverStore) -> None:
    events = [message(f"01JVALID{i:02d}", signal=s) for i, s in enumerate(["error", "rum", "otlp", "metric"])]
    with start_receiver(store, TOKEN) as handle:
        status, body = ingest(handle, events)
        assert status == 200
        assert body == {"results": [{"event_id": e["event_id"], "status": "accepted"} for e in events]}
        for sent in events:
            stored = store.event(sent["event_id"])
            assert stored["payload"] == sent["payload"]
            assert (stored["signal"], stored["times_seen"]) == (sent["signal"], 1)
        assert store.stats()["events"] == 4


def test_the_same_event_twice_is_a_duplicate_stored_once(store: ReceiverStore) -> None:
    with start_receiver(store, TOKEN) as handle:
        assert ingest(handle, [message("E1")]) == (200, {"results": [{"event_id": "E1", "status": "accepted"}]})
        assert ingest(handle, [message("E1")]) == (200, {"results": [{"event_id": "E1", "status": "duplicate"}]})
        status, body = ingest(handle, [message("E2"), message("E2")])
        assert [r["status"] for r in body["results"]] == ["accepted", "duplicate"]
        status, stored, _ = call(handle, "GET", "/_receiver/events/E1")
        assert (status, stored["times_seen"]) == (200, 2)
        assert store.stats()["events"] == 2


def test_a_malformed_event_is_rejected_alone(store: ReceiverStore) -> None:
    bad = message("E2", payload_encoding="gzip+base64", payload="H4sI...")
    with start_receiver(store, TOKEN) as handle:
        status, body = ingest(handle, [message("E1"), bad, "not an object", message("E3")])
        assert status == 207
        results = body["results"]
        assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "accepted"]
        assert [r["event_id"] for r in results] == ["E1", "E2", None, "E3"]
        assert "payload_encoding" in results[1]["error"]
        assert results[2]["error"] == "an event must be a JSON object"
        assert "error" not in results[0]
        assert store.event("E2") is None
        assert store.event("E3") is not None


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"v": 2}, '"v"'),
        ({"v": True}, '"v"'),
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 33}, "event_id"),
        ({"event_id": "has space"}, "event_id"),
        ({"signal": "nope"}, "signal"),
        ({"project_id": 42}, "project_id"),
        ({"project_id": None}, "project_id"),
        ({"organization_id": 7}, "organization_id"),
        ({"received_at": "yesterday"}, "received_at"),
        ({"received_at": None}, "received_at"),
        ({"payload_encoding": None}, "payload_encoding"),
        ({"payload": [1, 2]}, "payload"),
        ({"headers": "x"}, "headers"),
        ({"assigned_ids": ["run_id"]}, "assigned_ids"),
    ],
)
def test_validate_event_names_what_is_wrong(change: dict, complaint: str) -> None:
    assert validate_event(message("E1")) is None
    assert complaint in validate_event({**message("E1"), **change})


def test_validate_event_accepts_a_missing_organization_and_extra_fields() -> None:
    event = message("E1", future_field={"x": 1})
    del event["organization_id"]
    assert validate_event(event) is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b"[]", 422),
        (b'{"events": {}}', 422),
        (b'{"events": []}', 422),
        (b'{"batch": []}', 422),
        (json.dumps({"events": [message(f"E{i}") for i in range(101)]}).encode(), 413),
    ],
    ids=["not-json", "not-utf8", "array", "events-object", "empty", "no-events", "over-a-hundred"],
)
def test_a_malformed_body_is_a_batch_error(rx: ReceiverHandle, body: bytes, status: int) -> None:
    got, answer, _ = call(rx, "POST", "/api/ingest/edge", body)
    assert got == status
    assert set(answer) == {"error", "message"}
    assert rx.store.stats()["events"] == 0


def test_a_batch_of_a_hundred_events_is_taken_whole(rx: ReceiverHandle) -> None:
    """CONTRACT §6: the forwarder sends up to 100 events per request (issue #31)."""
    events = [message(f"E{i}") for i in range(100)]
    got, answer, _ = call(rx, "POST", "/api/ingest/edge", json.dumps({"events": events}).encode())
    assert got == 200
    assert [r["status"] for r in answer["results"]] == ["accepted"] * 100
    assert rx.store.stats()["events"] == 100


def test_an_oversized_body_is_refused_before_reading_it(rx: ReceiverHandle) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=10)
    connection.putrequest("POST", "/api/ingest/edge")
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Content-Length", str(receiver_module.MAX_BODY_BYTES + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert response.getheader("Connection") == "close"
    connection.close()


def test_a_failing_store_answers_503_so_the_edge_retries(mysql_url: str) -> None:
    mysql_store = MySQLStore(mysql_url)
    with start_receiver(mysql_store, TOKEN) as handle:
        assert ingest(handle, [message("E1")])[0] == 200
        with mysql_admin() as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE `{mysql_store.database}`")
        status, body, headers = call(handle, "POST", "/api/ingest/edge", {"events": [message("E2")]})
        assert (status, body["error"]) == (503, "store_unavailable")
        assert headers["Retry-After"]
    mysql_store.close()


# -- runs and check-ins ------------------------------------------------------------------------------


@pytest.mark.parametrize("finish_first", [False, True], ids=["start-then-finish", "finish-then-start"])
def test_a_job_start_and_its_finish_are_one_run(store: ReceiverStore, finish_first: bool) -> None:
    start = job_start("S1", "01JRUN", "2026-11-22T10:00:00.000Z")
    finish = job_finish("F1", "01JRUN", "2026-11-22T10:00:03.000Z", status="ok")
    with start_receiver(store, TOKEN) as handle:
        for event in [finish, start] if finish_first else [start, finish]:
            assert ingest(handle, [event])[0] == 200
        ingest(handle, [start, finish])  # redelivery of both: duplicates, nothing moves
        status, run, _ = call(handle, "GET", "/_receiver/runs/01JRUN")
        assert status == 200
        assert (run["kind"], run["status"], run["event_count"]) == ("job", "ok", 2)


@pytest.mark.parametrize("finish_first", [False, True])
def test_a_cron_check_in_ends_as_its_last_status_says(store: ReceiverStore, finish_first: bool) -> None:
    start = job_start("S1", "01JCHK", "2026-11-22T10:00:00.000Z", signal="cron", status="in_progress")
    finish = job_finish("F1", "01JCHK", "2026-11-22T10:00:30.000Z", signal="cron", status="error")
    with start_receiver(store, TOKEN) as handle:
        ingest(handle, [finish, start] if finish_first else [start, finish])
        status, run, _ = call(handle, "GET", "/_receiver/runs/01JCHK?kind=cron")
        assert (status, run["kind"], run["status"]) == (200, "cron", "error")
        assert call(handle, "GET", "/_receiver/runs/01JCHK?kind=job")[0] == 404


# -- /api/config --------------------------------------------------------------------------------------


def config(handle: ReceiverHandle, key: str | None = API_KEY, overrides: str | None = None) -> tuple[int, Any]:
    headers = {}
    if key is not None:
        headers["X-Api-Key"] = key
    if overrides is not None:
        headers["X-Lookout-Env-Overrides"] = overrides
    status, body, _ = call(handle, "GET", "/api/config", token=None, **headers)
    return status, body


def test_config_is_per_project_with_a_version_and_the_overrides_echoed(rx: ReceiverHandle) -> None:
    status, body = config(rx, overrides='{"trace":true}')
    assert status == 200
    assert body["project_id"] == "42"
    assert body["env_overrides"] == '{"trace":true}'
    assert body["signals"]["errors"] == {"enabled": True}
    assert body["signals"]["traces"] == {"enabled": True, "sample_rate": 1.0}
    assert set(body["signals"]) == set(CONFIG_SIGNALS) and body["suppress"] == []
    assert re.fullmatch(r"[0-9a-f]{16}", body["version"])
    assert config(rx)[1]["env_overrides"] is None
    assert config(rx)[1]["version"] == body["version"]


def test_config_version_changes_with_the_project_settings(rx: ReceiverHandle) -> None:
    before = config(rx)[1]["version"]
    status, changed, _ = call(
        rx, "POST", "/_receiver/projects/42/settings", {"signals": {"traces": {"enabled": False}}}
    )
    assert status == 200
    after = config(rx)[1]
    assert after["version"] == changed["version"] != before
    assert after["signals"]["traces"] == {"enabled": False, "sample_rate": 1.0}  # merged field by field
    assert after["signals"]["errors"] == {"enabled": True}
    document = rx.set_project_settings("42", {"signals": {"logs": {"sample_rate": 0.25}}})
    assert config(rx)[1]["version"] == document["version"] not in (before, after["version"])
    assert config(rx)[1]["signals"]["logs"] == {"enabled": True, "sample_rate": 0.25}
    rx.set_project_settings("42", {"signals": {"logs": {"sample_rate": 0.25}}})
    assert config(rx)[1]["version"] == document["version"]  # no change, same version
    rx.set_project_settings("42", {"suppress": ["9f2c4e0b1a7d3c5e8f6a2b4d0c1e3f5a"]})
    assert config(rx)[1]["suppress"] == ["9f2c4e0b1a7d3c5e8f6a2b4d0c1e3f5a"]


def test_config_refuses_unknown_keys_and_can_be_made_to_fail(rx: ReceiverHandle) -> None:
    assert config(rx, key="lk_unknown")[0] == 401
    assert config(rx, key=None)[0] == 401
    rx.add_project_key("lk_second", "43")
    assert config(rx, key="lk_second")[1]["project_id"] == "43"
    rx.config_failing = True
    assert config(rx)[0] == 500
    rx.config_failing = False
    assert config(rx)[0] == 200


@pytest.mark.parametrize(
    "change",
    [
        {"sample_rate": 0.5},  # not a document key: rates live on their signal
        {"signals": {"trace": {"enabled": False}}},  # the edge's singular name, not the document's
        {"signals": {"traces": False}},  # a bare bool is what breaks the Ruby client
        {"signals": {"traces": {"enabled": "off"}}},
        {"signals": {"traces": {"sample_rate": 2}}},
        {"signals": {"traces": {"sample_rate": True}}},
        {"signals": {"errors": {"sample_rate": 0.5}}},  # errors are not sampled
        {"signals": ["traces"]},
        {"suppress": "9f2c"},
        {"suppress": [""]},
    ],
)
def test_settings_changes_keep_the_documents_shape(rx: ReceiverHandle, change: dict) -> None:
    before = config(rx)[1]
    assert call(rx, "POST", "/_receiver/projects/42/settings", change)[0] == 422
    assert config(rx)[1] == before


def test_settings_changes_need_the_token_and_a_valid_document(rx: ReceiverHandle) -> None:
    path = "/_receiver/projects/42/settings"
    assert call(rx, "POST", path, {"signals": {"traces": {"enabled": False}}}, token=None)[0] == 401
    assert call(rx, "POST", path, b"[1]")[0] == 422
    assert call(rx, "POST", path, b"{oops")[0] == 400
    assert config(rx)[1]["signals"]["traces"]["enabled"] is True


def test_merge_settings_merges_each_signal_field_by_field_and_replaces_suppress() -> None:
    current = {
        "signals": {"traces": {"enabled": True, "sample_rate": 1.0}, "mail": {"enabled": True}},
        "suppress": ["a"],
    }
    merged = merge_settings(current, {"signals": {"traces": {"sample_rate": 0.1}, "mail": {"enabled": False}}})
    assert merged == {
        "signals": {"traces": {"enabled": True, "sample_rate": 0.1}, "mail": {"enabled": False}},
        "suppress": ["a"],
    }
    assert merge_settings(current, {"suppress": []})["suppress"] == []
    assert current["signals"]["traces"]["sample_rate"] == 1.0  # the current settings are not changed in place


# -- the config document as the real clients read it ------------------------------------------------------
# The Ruby client (lookout_framework.rb) and the PHP SDK (Support/RemoteConfig) read `GET /api/config`
# as below; CONTRACT §3 gives the shape they agree on.

RUBY_ENABLED_CHECKS = {  # method → the signal key it digs, and what it reads when the signal is absent
    "dumps_enabled?": ("dumps", True),
    "traces_enabled?": ("traces", False),
    "jobs_enabled?": ("jobs", False),
    "logs_enabled?": ("logs", False),
    "mail_enabled?": ("mail", False),
    "signal_on?(models)": ("models", False),
    "signal_on?(events)": ("events", False),
    "signal_on?(gates)": ("gates", False),
    "signal_on?(metrics)": ("metrics", False),
    "cron_enabled?": ("crons", False),
    "batches_enabled?": ("batches", False),
    "feedback_enabled?": ("feedback", False),
}


def ruby_dig(value: Any, *keys: str) -> Any:
    """Ruby's Hash#dig: nil through a missing key, TypeError through a value that is not a Hash
    (`{"mail" => true}.dig("mail", "enabled")` calls `true.dig`)."""
    for key in keys:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise TypeError(f"{type(value).__name__} does not have #dig method")
        value = value.get(key)
    return value


def ruby_client_reads(document: dict) -> dict[str, bool]:
    """What each of the Ruby client's checks decides from this document (no env overrides set)."""
    decided = {}
    for check, (key, when_absent) in RUBY_ENABLED_CHECKS.items():
        enabled = ruby_dig(document, "signals", key, "enabled")
        decided[check] = when_absent if enabled is None else bool(enabled)
    suppress = document.get("suppress")
    decided["suppress is a list"] = isinstance(suppress, list)
    return decided


def php_sdk_overrides(document: dict) -> tuple[dict[str, bool], dict[str, float]]:
    """RemoteConfig::enabledOverrides / sampleOverrides: per signal object, `enabled` and `sample_rate`;
    anything that is not an object is skipped (PHP's is_array)."""
    enabled, rates = {}, {}
    for name, value in (document.get("signals") or {}).items():
        if isinstance(value, dict):
            if isinstance(value.get("enabled"), bool):
                enabled[name] = value["enabled"]
            if isinstance(value.get("sample_rate"), (int, float)) and not isinstance(value["sample_rate"], bool):
                rates[name] = float(value["sample_rate"])
    return enabled, rates


def test_the_ruby_client_reads_every_signal_it_checks_without_a_type_error(rx: ReceiverHandle) -> None:
    assert set(ruby_client_reads(config(rx)[1]).values()) == {True}  # every signal on, none read as absent
    rx.set_project_settings("42", {"signals": {"mail": {"enabled": False}, "traces": {"enabled": False}}})
    decided = ruby_client_reads(config(rx)[1])
    assert not decided["mail_enabled?"] and not decided["traces_enabled?"]
    assert decided["feedback_enabled?"] and decided["cron_enabled?"] and decided["dumps_enabled?"]


def test_the_php_sdk_gets_an_override_for_every_signal_and_rate(rx: ReceiverHandle) -> None:
    rx.set_project_settings("42", {"signals": {"logs": {"enabled": False, "sample_rate": 0.5}}})
    enabled, rates = php_sdk_overrides(config(rx)[1])
    assert set(enabled) == set(CONFIG_SIGNALS)
    assert enabled["logs"] is False and enabled["traces"] is True
    assert rates == {name: (0.5 if name == "logs" else 1.0) for name in SAMPLED_SIGNALS}


def test_the_old_bool_shape_is_what_broke_the_ruby_client() -> None:
    """The reference point: `signals: {name: true}` raises in Ruby and gives PHP nothing."""
    with pytest.raises(TypeError):
        ruby_client_reads({"signals": {"mail": True}, "suppress": []})
    assert php_sdk_overrides({"signals": {"traces": True}}) == ({}, {})


# -- query endpoints, routing, logs, lifecycle ---------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/_receiver/events/E1", "/_receiver/events", "/_receiver/runs/R1", "/_receiver/stats"]
)
def test_query_endpoints_need_the_token(rx: ReceiverHandle, path: str) -> None:
    assert call(rx, "GET", path, token=None)[0] == 401
    assert call(rx, "GET", path, token="wrong")[0] == 401


def test_query_endpoints_show_what_was_stored(rx: ReceiverHandle) -> None:
    ingest(rx, [message("E1"), message("E2", project_id="43"), message("E3"), {"bad": 1}])
    status, event, _ = call(rx, "GET", "/_receiver/events/E1")
    assert (status, event["event_id"], event["project_id"], event["received_at"]) == (
        200,
        "E1",
        "42",
        "2026-11-22T10:00:00.123Z",
    )
    assert event["payload"] == {"message": "event E1"}
    assert call(rx, "GET", "/_receiver/events/NOPE")[0] == 404
    status, listed, _ = call(rx, "GET", "/_receiver/events?project_id=42&limit=1")
    assert [e["event_id"] for e in listed["events"]] == ["E3"]
    assert call(rx, "GET", "/_receiver/events?limit=ten")[0] == 400
    assert call(rx, "GET", "/_receiver/runs/NOPE")[0] == 404
    status, stats, _ = call(rx, "GET", "/_receiver/stats")
    assert (stats["events"], stats["by_signal"], stats["duplicates"]) == (3, {"error": 3}, 0)
    assert stats["receiver"] == {"batches": 1, "accepted": 3, "rejected": 1}


def test_unknown_routes_and_methods(rx: ReceiverHandle) -> None:
    assert call(rx, "GET", "/nope")[0] == 404
    assert call(rx, "GET", "/api/ingest/edge")[0] == 405
    assert call(rx, "GET", "/health", token=None)[:2] == (200, {"status": "ok"})


def test_one_log_line_per_request_without_the_token(rx: ReceiverHandle, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edgectl.receiver"):
        ingest(rx, [message("E1"), message("E2")])
        ingest(rx, [message("E3")], token="wrong")
        deadline = time.monotonic() + 5
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert re.fullmatch(r"POST /api/ingest/edge 200 events=2 [\d.]+ms", lines[0])
    assert re.fullmatch(r"POST /api/ingest/edge 401 [\d.]+ms", lines[1])
    assert not any(TOKEN in line or "wrong" in line for line in lines)


def test_port_zero_picks_a_free_port_and_stop_cuts_open_connections(sqlite_store: ReceiverStore) -> None:
    handle = start_receiver(sqlite_store, TOKEN, port=0)
    assert handle.port > 0
    assert handle.url == f"http://127.0.0.1:{handle.port}"
    keep_alive = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=5)
    keep_alive.request("GET", "/health")
    assert keep_alive.getresponse().read() == b'{"status": "ok"}'
    handle.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        keep_alive.request("GET", "/health")
        keep_alive.getresponse()
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", handle.url + "/health")


def test_the_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "LOOKOUT_INGEST_EDGE_TOKEN": TOKEN}
    command = [sys.executable, "-m", "edgectl", "receiver", "--port", "0", "--sqlite", str(tmp_path / "cli.db")]
    process = subprocess.Popen(
        [*command, "--project", f"{API_KEY}=42"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        first = process.stderr.readline()
        url = re.search(r"receiver on (http://127\.0\.0\.1:\d+)", first).group(1)
        assert TOKEN not in first
        response = pool.request(
            "POST",
            url + "/api/ingest/edge",
            body=json.dumps({"events": [message("E1")]}),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert json.loads(response.data) == {"results": [{"event_id": "E1", "status": "accepted"}]}
        config_answer = pool.request("GET", url + "/api/config", headers={"X-Api-Key": API_KEY})
        assert json.loads(config_answer.data)["project_id"] == "42"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stderr.close()
    assert SQLiteStore(tmp_path / "cli.db").event("E1")["times_seen"] == 1
