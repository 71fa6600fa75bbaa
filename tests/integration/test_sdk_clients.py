"""The real Lookout SDK's requests, unchanged, through the local stack over real HTTP.

Each signal is sent exactly as the PHP SDK shapes it (tests/lookout_sdk.py) and must
get exactly 202 within the SDK's 5 s, then arrive at the reference receiver intact,
without the key, under the right project and signal, with `user_agent` null and the
SDK's X-Lookout-* headers carried lowercased.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.lookout_sdk import CLIENT_SAMPLED, ENV_FORCED, Answer, LookoutClient

ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
PROJECT_IDS = {"main": "101", "other": "102"}


def sdk_for(e2e: Any, project: str = "main") -> LookoutClient:
    edge = urlsplit(e2e.edge_url)
    return LookoutClient(f"http://{e2e.keys[project]}@{edge.hostname}:{edge.port}")


def accepted_id(answer: Answer) -> str:
    assert answer.status == 202, answer
    assert answer.body["status"] == "accepted" and ULID.fullmatch(answer.body["event_id"]), answer.body
    return answer.body["event_id"]


def delivered(e2e: Any, answer: Answer, signal: str, project: str = "main", headers: dict | None = None) -> dict:
    """The stored event, after checking everything the backend must see of an SDK request."""
    stored = e2e.wait_for_event(accepted_id(answer))
    assert (stored["signal"], stored["project_id"]) == (signal, PROJECT_IDS[project])
    expected = {name: value for name, value in answer.sent.items() if name != "api_key"}
    assert stored["payload"] == expected
    assert stored["user_agent"] is None
    assert stored["headers"] == (headers or {})
    text = json.dumps(stored)
    assert all(key not in text for key in e2e.keys.values())
    return stored


def otlp_spans(name: str) -> list[dict[str, Any]]:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]}
    span = {
        "traceId": uuid.uuid4().hex,
        "spanId": uuid.uuid4().hex[:16],
        "name": name,
        "kind": 2,
        "startTimeUnixNano": "1764000000000000000",
        "endTimeUnixNano": "1764000000120000000",
        "attributes": [{"key": "http.route", "value": {"stringValue": name}}],
        "status": {},
    }
    return [{"resource": resource, "scopeSpans": [{"scope": {"name": "lookout-php"}, "spans": [span]}]}]


def entries(kind: str, count: int) -> list[dict[str, Any]]:
    return [{"kind": kind, "n": i, "tags": [], "at": 1764000000 + i} for i in range(count)]


# (signal stored, the SDK call, the X-Lookout-* headers that must arrive)
SignalCase = tuple[str, Callable[[LookoutClient], Answer], dict[str, str]]
SIGNAL_CASES: dict[str, SignalCase] = {
    "error": ("error", lambda sdk: sdk.report_error("Undefined index: id", "ErrorException"), {}),
    "trace": (
        "trace",
        lambda sdk: sdk.send_trace("GET /orders", [{"op": "db.query", "description": "select 1", "duration_ms": 3}]),
        {"x-lookout-client-sampled": "1"},
    ),
    "otlp": (
        "otlp",
        lambda sdk: sdk.send_otlp(otlp_spans("GET /cart"), {CLIENT_SAMPLED: "1"}),
        {"x-lookout-client-sampled": "1"},
    ),
    "log entries": (
        "log",
        lambda sdk: sdk.send_log_entries(
            [{"level": "warning", "message": f"slow {i}", "context": []} for i in range(200)]
        ),
        {},
    ),
    "log lines": (
        "log",
        lambda sdk: sdk.ship_log_lines(
            [f"[2026-11-22 10:00:0{i}] production.ERROR: boom" for i in range(5)], "laravel"
        ),
        {"x-lookout-ingest-internal": "1"},
    ),
    "metric": ("metric", lambda sdk: sdk.send_entries("metric", entries("counter", 200)), {}),
    "dump": ("dump", lambda sdk: sdk.send_entries("dump", entries("dump", 3)), {}),
    "model": ("model", lambda sdk: sdk.send_entries("model", entries("created", 150)), {}),
    "gate": ("gate", lambda sdk: sdk.send_entries("gate", entries("allowed", 2)), {}),
    "event": ("event", lambda sdk: sdk.send_entries("event", entries("OrderShipped", 100)), {}),
    "profile": (
        "profile",
        lambda sdk: sdk.send("profile", {"format": "speedscope", "transaction": "GET /", "samples": [[0, 1], [0, 2]]}),
        {},
    ),
    "mail": ("mail", lambda sdk: sdk.send("mail", {"mailable": "App\\Mail\\Invoice", "to": 1, "queued": False}), {}),
    "notification": (
        "notification",
        lambda sdk: sdk.send("notification", {"notification": "InvoicePaid", "channels": ["mail", "slack"]}),
        {},
    ),
    "batch": ("batch", lambda sdk: sdk.send("batch", {"batch_id": "b-1", "jobs": 10, "failed": 0, "options": []}), {}),
    "auth": ("auth", lambda sdk: sdk.send("auth", {"event": "login_failed", "guard": "web", "user": None}), {}),
    "security": (
        "security",
        lambda sdk: sdk.send("security", {"type": "csp-violation", "blocked_uri": "https://evil.example"}),
        {},
    ),
}


@pytest.mark.parametrize("case", SIGNAL_CASES, ids=list(SIGNAL_CASES))
def test_sdk_signal_arrives_intact_without_the_key(e2e, case):
    signal, send, headers = SIGNAL_CASES[case]
    answer = send(sdk_for(e2e))
    delivered(e2e, answer, signal, headers=headers)


def test_error_report_carries_the_key_in_header_and_body_and_feedback_links_to_it(e2e):
    sdk = sdk_for(e2e, "other")
    report = sdk.report_error("Division by zero", "DivisionByZeroError")
    assert report.sent["api_key"] == e2e.keys["other"]
    error_id = delivered(e2e, report, "error", project="other")["event_id"]
    assert error_id == report.body["event_id"]  # Lookout kept the edge's id: feedback can point at it
    feedback = sdk.send("feedback", {"event_id": error_id, "name": "Ada", "email": "ada@example.com", "comments": "?"})
    assert delivered(e2e, feedback, "feedback", project="other")["payload"]["event_id"] == error_id


RUN_CASES = [("job", "run_id", "ok"), ("job", "run_id", "failed"), ("cron", "check_in_id", "ok")]
RUN_CASES += [("cron", "check_in_id", "error")]


@pytest.mark.parametrize(("kind", "id_field", "final"), RUN_CASES)
def test_start_and_finish_are_one_run_that_ends_as_the_finish_says(e2e, kind, id_field, final):
    sdk = sdk_for(e2e)
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    start = sdk.job_start(name) if kind == "job" else sdk.cron_start(name, schedule="0 3 * * *")
    run_id = start.body[id_field]
    assert ULID.fullmatch(run_id) and run_id != start.body["event_id"]
    stored_start = delivered(e2e, start, kind)
    assert stored_start["assigned_ids"] == {id_field: run_id}
    assert e2e.store.run(run_id, kind)["status"] in ("running", "in_progress")

    finish = sdk.job_finish(name, run_id, final) if kind == "job" else sdk.cron_finish(name, run_id, final)
    assert finish.body[id_field] == run_id
    stored_finish = delivered(e2e, finish, kind)
    assert not stored_finish.get("assigned_ids")
    run = e2e.store.run(run_id, kind)
    assert (run["status"], run["event_count"], run["project_id"]) == (final, 2, "101")
    assert (run["first_event_id"], run["last_event_id"]) == (stored_start["event_id"], stored_finish["event_id"])


def test_a_run_id_the_sdk_chose_is_kept(e2e):
    sdk = sdk_for(e2e)
    answer = sdk.job_start("reports:build", run_id="sdk-chosen-1")
    assert answer.body["run_id"] == "sdk-chosen-1"
    assert not delivered(e2e, answer, "job").get("assigned_ids")
    sdk.job_finish("reports:build", "sdk-chosen-1", "ok")
    wait_until(lambda: e2e.store.run("sdk-chosen-1", "job")["status"] == "ok")


@pytest.mark.parametrize("kind", ["job", "cron"])
def test_idempotent_replay_returns_the_same_ids_and_is_stored_once(e2e, kind):
    sdk = sdk_for(e2e)
    marker = uuid.uuid4().hex
    headers = {"Idempotency-Key": f"start-{marker}"}
    name_field = "job" if kind == "job" else "monitor"
    payload = {name_field: marker, "status": "running"}
    first = sdk.send(kind, payload, headers)
    replay = sdk.send(kind, payload, headers)
    assert replay.status == 202 and replay.body == first.body
    run_id = first.body["run_id" if kind == "job" else "check_in_id"]
    sentinel = sdk.send(kind, {name_field: "sentinel"})  # delivered after any duplicate would be
    delivered(e2e, sentinel, kind)
    stored = [e for e in e2e.store.events("101", kind, limit=1000) if e["payload"].get(name_field) == marker]
    assert [e["event_id"] for e in stored] == [first.body["event_id"]]
    assert stored[0]["times_seen"] == 1 and stored[0]["idempotency_key"] == f"start-{marker}"
    assert e2e.store.run(run_id, kind)["event_count"] == 1


def receiver_config(e2e: Any, key: str, overrides: str) -> dict:
    """The receiver's own answer to the SDK's config request (no edge in between)."""
    receiver = urlsplit(e2e.stack.receiver_url)
    connection = http.client.HTTPConnection(receiver.hostname, receiver.port, timeout=5)
    try:
        connection.request("GET", "/api/config", headers={"X-Api-Key": key, "X-Lookout-Env-Overrides": overrides})
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def change_receiver_settings(e2e: Any, project_id: str, change: dict) -> dict:
    receiver = urlsplit(e2e.stack.receiver_url)
    connection = http.client.HTTPConnection(receiver.hostname, receiver.port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {e2e.stack.token}", "Content-Type": "application/json"}
        connection.request("POST", f"/_receiver/projects/{project_id}/settings", json.dumps(change), headers)
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


def wait_until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)
    return result


def test_remote_config_is_proxied_and_its_version_rides_on_every_202(e2e):
    sdk = sdk_for(e2e)
    overrides = "LOOKOUT_TRACE_ENABLED=1;LOOKOUT_SAMPLE_RATE=0.5"
    expected = receiver_config(e2e, e2e.keys["main"], overrides)
    fetched_at = time.monotonic()
    config = sdk.fetch_config(overrides)
    rate = round(0.1 + uuid.uuid4().int % 80 / 100, 2)
    changed = change_receiver_settings(e2e, "101", {"signals": {"traces": {"sample_rate": rate}}})
    cached = sdk.fetch_config(overrides)
    assert time.monotonic() - fetched_at < e2e.CONFIG_FRESH_SECONDS, "too slow to observe the edge's cache"

    assert (config.status, config.body) == (200, expected)
    assert config.body["env_overrides"] == overrides and config.body["project_id"] == "101"
    assert changed["version"] != config.body["version"]
    assert cached.body == config.body  # the edge's cache answered, not the receiver
    assert accepted_after(sdk)["config_version"] == config.body["version"]

    time.sleep(e2e.CONFIG_FRESH_SECONDS)
    refreshed = sdk.fetch_config(overrides)
    assert refreshed.status == 200
    assert refreshed.body == receiver_config(e2e, e2e.keys["main"], overrides)
    assert refreshed.body["version"] == changed["version"]
    assert accepted_after(sdk)["config_version"] == changed["version"]


def accepted_after(sdk: LookoutClient) -> dict:
    answer = sdk.send("event", {"entries": [{"name": "config-probe"}]})
    accepted_id(answer)
    return answer.body


@pytest.fixture(scope="module")
def switchable(e2e) -> LookoutClient:
    """A project of its own (trace and rum on), so switching its signals off touches no other test."""
    key = e2e.lookout.insert_key(key_id=1101, project_id=1101, organization_id=11)
    e2e.wait_for_key(key)
    edge = urlsplit(e2e.edge_url)
    return LookoutClient(f"http://{key}@{edge.hostname}:{edge.port}")


def test_env_forced_signal_is_accepted_when_the_dashboard_disabled_it(e2e, switchable):
    beacon = {"type": "web-vitals", "lcp": 812.5, "page": "/checkout"}
    before = switchable.send("rum", beacon)
    accepted_id(before)
    assert "config_version" not in before.body  # no config was ever fetched for this key

    e2e.lookout.execute("UPDATE projects SET rum_enabled = 0, trace_enabled = 0 WHERE id = 1101")
    wait_until(lambda: not e2e.key_item(switchable.dsn.key)["rum_enabled"]["BOOL"])
    time.sleep(1.2)  # the edge's key cache

    for signal, send in (
        ("rum", lambda headers: switchable.send("rum", beacon, headers)),
        ("trace", lambda headers: switchable.send("trace", {"transaction": "GET /", "spans": []}, headers)),
        ("otlp", lambda headers: switchable.send_otlp(otlp_spans("GET /"), headers)),
    ):
        refused = send({})
        assert (refused.status, refused.body["error"]) == (403, "signal_disabled"), signal
        forced = send({ENV_FORCED: "1"})
        stored = e2e.wait_for_event(accepted_id(forced))
        assert (stored["signal"], stored["project_id"], stored["headers"]) == (
            signal,
            "1101",
            {"x-lookout-env-forced": "1"},
        )
