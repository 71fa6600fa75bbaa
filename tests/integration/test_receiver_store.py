"""The receiver's stores on real MariaDB and on SQLite: once per event_id, runs and check-ins."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from edgectl.receiver.store import MySQLStore, ReceiverStore, RunUpdate, SQLiteStore

MYSQL_SERVER = "mysql://root:@127.0.0.1:3306"


def message(event_id: str, signal: str = "error", received_at: str = "2026-11-22T10:00:00.123Z", **fields: Any) -> dict:
    """A §5 message as the forwarder posts it (payload decoded)."""
    event = {
        "v": 1,
        "event_id": event_id,
        "signal": signal,
        "path": f"/api/ingest/{signal}",
        "project_id": "42",
        "organization_id": "7",
        "key_id": "9",
        "received_at": received_at,
        "client_ip": "203.0.113.9",
        "user_agent": None,
        "idempotency_key": None,
        "headers": {"x-lookout-client-sampled": "1"},
        "payload_encoding": "json",
        "payload": {"message": f"event {event_id}"},
    }
    event.update(fields)
    return event


def job_start(event_id: str, run_id: str, at: str, signal: str = "job", status: str = "running") -> dict:
    id_field = "run_id" if signal == "job" else "check_in_id"
    return message(event_id, signal, at, assigned_ids={id_field: run_id}, payload={"status": status, "name": "x"})


def job_finish(event_id: str, run_id: str, at: str, signal: str = "job", status: str = "ok") -> dict:
    id_field = "run_id" if signal == "job" else "check_in_id"
    return message(event_id, signal, at, payload={id_field: run_id, "status": status})


def mysql_admin() -> Any:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A URL naming a database that does not exist yet (the store creates it); dropped after the test."""
    name = f"receiver_test_{uuid.uuid4().hex[:12]}"
    yield f"{MYSQL_SERVER}/{name}"
    with mysql_admin() as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def open_store(kind: str, tmp_path: Any, mysql_url: str) -> ReceiverStore:
    return MySQLStore(mysql_url) if kind == "mysql" else SQLiteStore(tmp_path / "receiver.sqlite3")


@pytest.fixture(params=["sqlite", "mysql"])
def store(request: pytest.FixtureRequest, tmp_path: Any, mysql_url: str) -> Iterator[ReceiverStore]:
    opened = open_store(request.param, tmp_path, mysql_url)
    yield opened
    opened.close()


def test_first_delivery_is_stored_as_sent(store: ReceiverStore) -> None:
    sent = message("01JAAAAAAAAAAAAAAAAAAAAAA1")
    assert store.ingest(sent) == "accepted"
    stored = store.event(sent["event_id"])
    assert stored is not None
    assert {k: v for k, v in stored.items() if k not in ("stored_at", "times_seen")} == sent
    assert stored["times_seen"] == 1
    assert store.event("01JNOTTHERE") is None


def test_a_duplicate_is_counted_and_never_overwrites(store: ReceiverStore) -> None:
    first = message("E1")
    store.ingest(first)
    assert store.ingest(message("E1", payload={"message": "changed"})) == "duplicate"
    assert store.ingest(first) == "duplicate"
    stored = store.event("E1")
    assert stored["payload"] == first["payload"]
    assert stored["times_seen"] == 3
    assert store.stats()["events"] == 1
    assert store.stats()["duplicates"] == 2


def test_recent_events_newest_first_with_filters(store: ReceiverStore) -> None:
    store.ingest(message("E1"))
    store.ingest(message("E2", project_id="43"))
    store.ingest(message("E3", signal="log", payload={"entries": []}))
    assert [e["event_id"] for e in store.events()] == ["E3", "E2", "E1"]
    assert [e["event_id"] for e in store.events(project_id="42")] == ["E3", "E1"]
    assert [e["event_id"] for e in store.events(signal="log")] == ["E3"]
    assert [e["event_id"] for e in store.events(limit=1)] == ["E3"]
    assert store.events(project_id="nobody") == []


@pytest.mark.parametrize("finish_first", [False, True], ids=["start-then-finish", "finish-then-start"])
def test_job_start_and_finish_are_one_run_ending_as_the_finish_says(store: ReceiverStore, finish_first: bool) -> None:
    start = job_start("S1", "RUN1", "2026-11-22T10:00:00.000Z")
    finish = job_finish("F1", "RUN1", "2026-11-22T10:00:05.000Z", status="ok")
    for event in [finish, start] if finish_first else [start, finish]:
        assert store.ingest(event) == "accepted"
    run = store.run("RUN1")
    assert run["kind"] == "job"
    assert run["status"] == "ok"
    assert run["project_id"] == "42"
    assert run["event_count"] == 2
    assert run["last_event_id"] == "F1"
    assert store.stats()["runs"] == {"job": {"ok": 1}}


@pytest.mark.parametrize("finish_first", [False, True])
def test_cron_check_in_ends_with_error_in_any_order(store: ReceiverStore, finish_first: bool) -> None:
    start = job_start("S1", "CHK1", "2026-11-22T10:00:00.000Z", signal="cron", status="in_progress")
    finish = job_finish("F1", "CHK1", "2026-11-22T10:01:00.000Z", signal="cron", status="error")
    for event in [finish, start] if finish_first else [start, finish]:
        store.ingest(event)
    assert store.run("CHK1")["status"] == "error"
    assert store.run("CHK1", kind="cron")["status"] == "error"
    assert store.run("CHK1", kind="job") is None


def test_a_started_run_stays_in_progress_and_a_redelivered_start_changes_nothing(store: ReceiverStore) -> None:
    store.ingest(job_start("S1", "RUN1", "2026-11-22T10:00:00.000Z"))
    assert store.run("RUN1")["status"] == "running"
    store.ingest(job_finish("F1", "RUN1", "2026-11-22T10:00:05.000Z", status="error"))
    assert store.ingest(job_start("S1", "RUN1", "2026-11-22T10:00:00.000Z")) == "duplicate"
    run = store.run("RUN1")
    assert (run["status"], run["event_count"]) == ("error", 2)


def test_of_two_final_statuses_the_later_received_wins_whatever_the_arrival(store: ReceiverStore) -> None:
    store.ingest(job_finish("F2", "RUN1", "2026-11-22T10:00:09.000Z", status="ok"))
    store.ingest(job_finish("F1", "RUN1", "2026-11-22T10:00:05.000Z", status="error"))
    assert store.run("RUN1")["status"] == "ok"


def test_a_job_event_without_any_id_is_stored_without_a_run(store: ReceiverStore) -> None:
    assert store.ingest(message("E1", signal="job", payload={"status": "ok"})) == "accepted"
    assert store.stats()["runs"] == {}


def test_concurrent_deliveries_of_one_event_store_it_once(store: ReceiverStore) -> None:
    results: list[str] = []
    barrier = threading.Barrier(6)

    def deliver() -> None:
        barrier.wait()
        results.append(store.ingest(job_finish("F1", "RUN1", "2026-11-22T10:00:05.000Z")))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["accepted"] + ["duplicate"] * 5
    assert store.event("F1")["times_seen"] == 6
    assert store.run("RUN1")["event_count"] == 1


def test_reopening_keeps_the_data(request: pytest.FixtureRequest, store: ReceiverStore, tmp_path: Any) -> None:
    store.ingest(message("E1"))
    kind = "mysql" if isinstance(store, MySQLStore) else "sqlite"
    url = request.getfixturevalue("mysql_url")
    again = open_store(kind, tmp_path, url)
    try:
        assert again.event("E1")["times_seen"] == 1
    finally:
        again.close()


def test_mysql_store_creates_its_database(mysql_url: str) -> None:
    name = mysql_url.rsplit("/", 1)[1]
    store = MySQLStore(mysql_url)
    store.close()
    with mysql_admin() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (name,))
        assert sorted(row[0] for row in cursor.fetchall()) == ["events", "runs"]


def test_mysql_store_needs_a_database_and_hides_the_password() -> None:
    with pytest.raises(ValueError, match="must name a database"):
        MySQLStore(MYSQL_SERVER)
    with pytest.raises(pymysql.MySQLError) as failure:
        MySQLStore("mysql://root:s3cret-pw@127.0.0.1:1/receiver_x")
    assert "s3cret" not in str(failure.value)


def test_run_update_prefers_the_assigned_id_and_normalises() -> None:
    event = message(
        "E1",
        signal="job",
        received_at="2026-11-22T12:00:00.5+02:00",
        assigned_ids={"run_id": "EDGE"},
        payload={"run_id": "SDK", "status": " OK "},
    )
    update = RunUpdate.from_event(event)
    assert (update.kind, update.run_id, update.status) == ("job", "EDGE", "ok")
    assert update.status_key == "1|2026-11-22T10:00:00.500Z"
    numeric = RunUpdate.from_event(message("E2", signal="cron", payload={"check_in_id": 17}))
    assert (numeric.run_id, numeric.status, numeric.status_key[0]) == ("17", "in_progress", "0")
    assert RunUpdate.from_event(message("E3", signal="error", payload={"run_id": "R"})) is None
    assert RunUpdate.from_event(message("E4", signal="job", payload={"run_id": {"x": 1}})) is None
