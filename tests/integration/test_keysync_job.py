"""Key sync end to end: real MariaDB (the `lookout_db` fixture) → moto DynamoDB → the edge.

BatchWriteItem calls are counted by botocore's event hooks on the shared client, not by
the sync's own counters.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.contract.keys_item import hash_key
from chalicelib.edge.keys import key_cache
from chalicelib.keysync.job import SERVICE, BatchWriter, WriteFailed, run, scan_content_hashes, sync_rows
from chalicelib.keysync.plan import DeleteVerdict, SyncResult
from chalicelib.keysync.source_mysql import DEFAULT_KEYS_QUERY, connect, stream_rows
from chalicelib.runtime.aws import client
from chalicelib.runtime.config import settings
from chalicelib.runtime.observability import flush, logger
from tests.conftest import REGION, chalice_client

INSERT_KEYS = "INSERT INTO project_api_keys (id, project_id, `key`) VALUES (%s, %s, %s)"


@pytest.fixture
def source(aws, lookout_db, monkeypatch):
    """The Lookout database, with LOOKOUT_DB_URL pointing at it."""
    monkeypatch.setenv("LOOKOUT_DB_URL", lookout_db.url)
    settings.cache_clear()
    yield lookout_db


@pytest.fixture
def batch_writes(aws) -> list[dict[str, Any]]:
    """The parameters of every BatchWriteItem call the container's DynamoDB client makes."""
    calls: list[dict[str, Any]] = []
    client("dynamodb").meta.events.register(
        "provide-client-params.dynamodb.BatchWriteItem", lambda params, **_: calls.append(params)
    )
    return calls


@pytest.fixture
def sync_logs() -> Iterator[io.StringIO]:
    """The sync's JSON log lines, as written to the Lambda log."""
    buffer = io.StringIO()
    handlers = [h for h in logger(SERVICE).handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = buffer  # not setStream: it flushes the old stream, maybe a closed capture
    yield buffer
    for handler, stream in zip(handlers, previous, strict=True):
        handler.stream = stream


def table_items(aws) -> dict[str, dict[str, Any]]:
    """The keys table as key_hash → item (a separate client: not counted)."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    items = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=aws.keys_table):
        for item in page["Items"]:
            items[item["key_hash"]["S"]] = item
    return items


def invoke_schedule(chalice_client) -> Any:
    """What EventBridge's rate(5 minutes) rule hands the Lambda."""
    event = chalice_client.events.generate_cw_event(
        source="aws.events",
        detail_type="Scheduled Event",
        detail={},
        resources=["arn:aws:events:us-east-1:123456789012:rule/lookout-edge-dev-sync_keys"],
    )
    return chalice_client.lambda_.invoke("sync_keys", event).payload


def post_error(http, raw_key: str) -> int:
    response = http.post(
        "/api/ingest",
        headers={"Content-Type": "application/json", "X-Api-Key": raw_key},
        body=json.dumps({"message": "boom", "level": "error"}),
    )
    return response.status_code


def test_first_sync_writes_every_live_key_and_a_second_writes_nothing(aws, source, batch_writes):
    plain = source.insert_key(key_id=1, project_id=1, organization_id=1)
    limited = source.insert_key(
        key_id=2, project_id=2, organization_id=2, ip_allowlist='["203.0.113.0/24"]', rate_limit_per_minute=600
    )
    source.execute("UPDATE projects SET rum_enabled = 0 WHERE id = 2")
    revoked = source.insert_key(key_id=3, project_id=1)
    source.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id = 3")

    before = int(time.time())
    first = run()
    assert first.ok, first.error
    assert (first.scanned, first.written, first.deleted, first.skipped) == (2, 2, 0, 0)
    assert len(batch_writes) == 1

    items = table_items(aws)
    assert set(items) == {hash_key(plain), hash_key(limited)}
    item = items[hash_key(limited)]
    assert int(item["synced_at"]["N"]) >= before
    assert {name: value for name, value in item.items() if name not in ("synced_at", "content_hash")} == {
        "key_hash": {"S": hash_key(limited)},
        "key_id": {"S": "2"},
        "project_id": {"S": "2"},
        "organization_id": {"S": "2"},
        "billing_ok": {"BOOL": True},
        "ip_allowlist": {"L": [{"S": "203.0.113.0/24"}]},
        "trace_enabled": {"BOOL": True},
        "rum_enabled": {"BOOL": False},
        "rate_limit_per_minute": {"N": "600"},
    }
    assert "rate_limit_per_minute" not in items[hash_key(plain)]
    assert hash_key(revoked) not in items

    batch_writes.clear()
    second = run()
    assert second.ok
    assert (second.written, second.unchanged, second.deleted) == (0, 2, 0)
    assert batch_writes == []  # zero writes when nothing changed
    assert table_items(aws) == items  # synced_at untouched too


def test_revoked_key_is_deleted(aws, source):
    keys = [source.insert_key(key_id=i) for i in (1, 2, 3)]
    run()
    source.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id = 2")
    result = run()
    assert (result.deleted, result.written, result.delete_verdict) == (1, 0, DeleteVerdict.ALLOWED)
    assert set(table_items(aws)) == {hash_key(keys[0]), hash_key(keys[2])}


def test_deleted_project_takes_its_keys_away(aws, source):
    kept = source.insert_key(key_id=1, project_id=1)
    gone = [source.insert_key(key_id=i, project_id=2) for i in (2, 3)]
    run()
    source.execute("UPDATE projects SET deleted_at = NOW() WHERE id = 2")
    result = run()
    assert result.deleted == 2
    items = table_items(aws)
    assert set(items) == {hash_key(kept)}
    assert not {hash_key(raw) for raw in gone} & set(items)


def test_billing_flip_updates_the_item_and_the_edge_answers_402_after_cache_expiry(aws, source, http):
    raw = source.insert_key(key_id=1, organization_id=7)
    other_org = source.insert_key(key_id=2, project_id=2, organization_id=8)
    assert run().written == 2
    assert post_error(http, raw) == 202
    synced_before = table_items(aws)[hash_key(raw)]["synced_at"]

    source.execute("UPDATE organizations SET billing_status = 'delinquent' WHERE id = 7")
    result = run()
    assert (result.written, result.unchanged) == (1, 1)
    item = table_items(aws)[hash_key(raw)]
    assert item["billing_ok"] == {"BOOL": False}
    assert int(item["synced_at"]["N"]) >= int(synced_before["N"])

    assert post_error(http, raw) == 202  # the edge's key cache still holds the old answer
    key_cache.cache_clear()  # its TTL has run out
    assert post_error(http, raw) == 402
    assert post_error(http, other_org) == 202


def test_allowlist_change_reaches_the_item_and_the_edge(aws, source, http):
    raw = source.insert_key(key_id=1)
    run()
    assert table_items(aws)[hash_key(raw)]["ip_allowlist"] == {"L": []}
    source.execute("UPDATE organizations SET ingest_ip_allowlist = %s WHERE id = 1", ('["10.0.0.0/8", "192.0.2.7"]',))
    assert run().written == 1
    assert table_items(aws)[hash_key(raw)]["ip_allowlist"] == {"L": [{"S": "10.0.0.0/8"}, {"S": "192.0.2.7"}]}
    key_cache.cache_clear()
    assert post_error(http, raw) == 403  # the test client's 127.0.0.1 is not on the list


def test_empty_source_deletes_nothing(aws, source, batch_writes):
    for key_id in (1, 2, 3):
        source.insert_key(key_id=key_id)
    run()
    before = table_items(aws)
    batch_writes.clear()
    source.execute("UPDATE project_api_keys SET revoked_at = NOW()")
    result = run()
    assert result.ok
    assert (result.scanned, result.stale, result.deleted) == (0, 3, 0)
    assert result.delete_verdict is DeleteVerdict.REFUSED_NO_ROWS
    assert batch_writes == []
    assert table_items(aws) == before


def test_database_down_deletes_nothing_and_says_why(aws, source, batch_writes, sync_logs, monkeypatch, capsys):
    raw = source.insert_key(key_id=1)
    run()
    flush(SERVICE)  # what the scheduled handler does after run(): that invocation's line
    capsys.readouterr()
    batch_writes.clear()
    monkeypatch.setenv("LOOKOUT_DB_URL", "mysql://root:db-pass-secret@127.0.0.1:1/lookout")
    settings.cache_clear()

    from app import KeySyncFailed

    with chalice_client() as test_client, pytest.raises(KeySyncFailed, match="Can't connect") as caught:
        invoke_schedule(test_client)
    assert "127.0.0.1:1" in str(caught.value)
    assert batch_writes == []
    assert set(table_items(aws)) == {hash_key(raw)}

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    assert (emf[0]["sync_failed"], emf[0]["sync_deleted"]) == ([1.0], [0.0])
    assert emf[-1]["service"] == "lookout-edge-sync"
    log = sync_logs.getvalue()
    assert "key sync failed" in log
    assert "refused_source_failed" in log
    assert "db-pass-secret" not in log + str(caught.value)


def test_broken_custom_query_deletes_nothing(aws, source, monkeypatch):
    raw = source.insert_key(key_id=1)
    run()
    monkeypatch.setenv("LOOKOUT_EDGE_KEYS_QUERY", "SELECT id AS key_id, `key` AS api_key FROM project_api_keys")
    settings.cache_clear()
    result = run()
    assert not result.ok
    assert "lacks column(s): project_id" in result.error
    assert result.delete_verdict is DeleteVerdict.REFUSED_SOURCE_FAILED
    assert set(table_items(aws)) == {hash_key(raw)}


def test_custom_query_replaces_the_default(aws, source, monkeypatch):
    first = source.insert_key(key_id=1, project_id=1)
    source.insert_key(key_id=2, project_id=2)
    monkeypatch.setenv("LOOKOUT_EDGE_KEYS_QUERY", DEFAULT_KEYS_QUERY + " AND p.id = 1")
    settings.cache_clear()
    result = run()
    assert (result.scanned, result.written) == (1, 1)
    assert set(table_items(aws)) == {hash_key(first)}


def test_duplicate_rows_are_skipped_not_fatal(aws, source, monkeypatch):
    raw = source.insert_key(key_id=1)
    monkeypatch.setenv("LOOKOUT_EDGE_KEYS_QUERY", f"{DEFAULT_KEYS_QUERY} UNION ALL {DEFAULT_KEYS_QUERY}")
    settings.cache_clear()
    result = run()
    assert result.ok
    assert (result.scanned, result.written, result.skipped) == (2, 1, 1)
    assert set(table_items(aws)) == {hash_key(raw)}


def test_malformed_allowlist_skips_that_row_only_and_never_logs_the_key(aws, source, sync_logs, capsys):
    good = source.insert_key(key_id=1, project_id=1, organization_id=1)
    bad = source.insert_key(key_id=2, project_id=2, organization_id=2, ip_allowlist='["10.0.0.0/8"')
    result = run()
    assert result.ok
    assert (result.scanned, result.written, result.skipped) == (2, 1, 1)
    assert set(table_items(aws)) == {hash_key(good)}

    lines = [json.loads(line) for line in sync_logs.getvalue().splitlines()]
    skipped = [line for line in lines if line["message"] == "key sync skipped a row"]
    assert len(skipped) == 1
    assert skipped[0]["key_id"] == "2"
    assert "ip_allowlist is not valid JSON" in skipped[0]["reason"]
    everything = sync_logs.getvalue() + "".join(capsys.readouterr())
    assert bad not in everything
    assert good not in everything


def test_allowlist_turning_malformed_keeps_the_stored_item(aws, source):
    """Bad org data must not lock the customer out: the last good item stays."""
    raw = source.insert_key(key_id=1, ip_allowlist='["10.0.0.0/8"]')
    source.insert_key(key_id=2, project_id=2, organization_id=2)
    run()
    before = table_items(aws)[hash_key(raw)]
    source.execute("UPDATE organizations SET ingest_ip_allowlist = 'oops' WHERE id = 1")
    result = run()
    assert (result.skipped, result.deleted, result.written) == (1, 0, 0)
    assert table_items(aws)[hash_key(raw)] == before


class FlakyDynamoDB:
    """The real client, except that DynamoDB leaves some items unprocessed, as under throttling."""

    def __init__(self, real: Any, unprocessed_rounds: int, keep_back: int = 10):
        self._real = real
        self._rounds = unprocessed_rounds
        self._keep_back = keep_back
        self.sizes: list[int] = []

    def batch_write_item(self, RequestItems: dict[str, list]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self.sizes.append(len(requests))
        if self._rounds > 0:
            self._rounds -= 1
            done, held = requests[: -self._keep_back], requests[-self._keep_back :]
            if done:
                self._real.batch_write_item(RequestItems={table: done})
            return {"UnprocessedItems": {table: held}}
        return self._real.batch_write_item(RequestItems=RequestItems)


def test_unprocessed_items_are_retried_with_backoff(aws, source):
    source.execute("INSERT INTO organizations (id) VALUES (1)")
    source.execute("INSERT INTO projects (id, organization_id) VALUES (1, 1)")
    source.executemany(INSERT_KEYS, [(i, 1, f"key-{i}") for i in range(1, 31)])
    flaky = FlakyDynamoDB(client("dynamodb"), unprocessed_rounds=3)
    sleeps: list[float] = []
    writer = BatchWriter(aws.keys_table, flaky, sleep=sleeps.append)
    result = SyncResult()
    with connect(source.url) as conn:
        sync_rows(stream_rows(conn, DEFAULT_KEYS_QUERY), {}, writer, result, 0.1, False, synced_at=1)

    assert result.written == 30
    assert set(table_items(aws)) == {hash_key(f"key-{i}") for i in range(1, 31)}
    # 25 → 10 held back (x3 rounds: 10, 10 resent) … then the last 5
    assert flaky.sizes == [25, 10, 10, 10, 5]
    assert sleeps == [0.05, 0.1, 0.2]


def test_items_dynamodb_never_takes_fail_the_sync_loudly(aws):
    flaky = FlakyDynamoDB(client("dynamodb"), unprocessed_rounds=100, keep_back=1)
    sleeps: list[float] = []
    writer = BatchWriter(aws.keys_table, flaky, max_attempts=4, sleep=sleeps.append)
    writer.put({"key_hash": {"S": "a"}, "project_id": {"S": "1"}})
    with pytest.raises(WriteFailed, match="1 item"):
        writer.flush()
    assert sleeps == [0.05, 0.1, 0.2]


def test_mass_delete_is_refused_on_schedule_but_new_keys_still_land(aws, source, batch_writes, sync_logs):
    source.execute("INSERT INTO organizations (id) VALUES (1)")
    source.execute("INSERT INTO projects (id, organization_id) VALUES (1, 1)")
    source.executemany(INSERT_KEYS, [(i, 1, f"key-{i}") for i in range(1, 201)])
    assert run().written == 200
    source.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id <= 30")  # 15 % > 10 %
    new = source.insert_key(key_id=500, project_id=1)

    refused = run()
    assert refused.ok
    assert (refused.written, refused.stale, refused.deleted) == (1, 30, 0)
    assert refused.delete_verdict is DeleteVerdict.REFUSED_MASS_DELETE
    assert len(table_items(aws)) == 201
    assert hash_key(new) in table_items(aws)
    refusal = json.loads(sync_logs.getvalue().splitlines()[-1])
    assert (refusal["message"], refusal["deletes"], refusal["stale"]) == (
        "key sync refused to delete stale keys",
        "refused_mass_delete",
        30,
    )
    assert "--allow-mass-delete" in refusal["hint"]

    batch_writes.clear()
    allowed = run(allow_mass_delete=True)
    assert (allowed.written, allowed.deleted) == (0, 30)
    assert sum(len(call["RequestItems"][aws.keys_table]) for call in batch_writes) == 30
    assert len(table_items(aws)) == 171


def test_mass_delete_share_comes_from_the_environment(aws, source, monkeypatch):
    source.execute("INSERT INTO organizations (id) VALUES (1)")
    source.execute("INSERT INTO projects (id, organization_id) VALUES (1, 1)")
    source.executemany(INSERT_KEYS, [(i, 1, f"key-{i}") for i in range(1, 101)])
    run()
    source.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id <= 40")
    monkeypatch.setenv("LOOKOUT_EDGE_MASS_DELETE_SHARE", "0.5")
    settings.cache_clear()
    assert run().deleted == 40


def test_five_thousand_keys(aws, source, batch_writes):
    source.executemany("INSERT INTO organizations (id, billing_status) VALUES (%s, %s)", [(1, "ok"), (2, "late")])
    source.executemany(
        "INSERT INTO projects (id, organization_id, rate_limit_per_minute) VALUES (%s, %s, %s)",
        [(p, 1 + p % 2, None if p % 3 else 100 * p) for p in range(1, 51)],
    )
    source.executemany(INSERT_KEYS, [(i, 1 + i % 50, f"bulk-key-{i:05d}") for i in range(1, 5001)])

    result = run()
    assert result.ok
    assert (result.scanned, result.written) == (5000, 5000)
    assert len(batch_writes) == 200
    items = table_items(aws)
    assert len(items) == 5000
    for key_id in (1, 2, 3, 2500, 5000):
        project = 1 + key_id % 50
        item = items[hash_key(f"bulk-key-{key_id:05d}")]
        assert item["key_id"] == {"S": str(key_id)}
        assert item["project_id"] == {"S": str(project)}
        assert item["organization_id"] == {"S": str(1 + project % 2)}
        assert item["billing_ok"] == {"BOOL": project % 2 == 0}
        assert item.get("rate_limit_per_minute") == (None if project % 3 else {"N": str(100 * project)})

    batch_writes.clear()
    again = run()
    assert (again.written, again.unchanged, again.deleted) == (0, 5000, 0)
    assert batch_writes == []


def test_scan_reads_only_hash_and_content_hash(aws, put_key):
    put_key("legacy", billing_ok=False)  # an item written before the sync existed
    assert dict(scan_content_hashes(aws.keys_table, client("dynamodb")).items()) == {hash_key("legacy"): ""}


def test_edge_accepts_a_key_after_one_scheduled_sync_and_refuses_it_once_revoked(aws, source, http):
    """Done when: a key inserted in MariaDB and one sync → 202; revoked → 401 after the next."""

    raw = source.insert_key(key_id=1)
    other = source.insert_key(key_id=2)
    assert post_error(http, raw) == 401
    key_cache.cache_clear()
    with chalice_client() as test_client:
        summary = invoke_schedule(test_client)
        assert (summary["ok"], summary["written"]) == (True, 2)
        assert post_error(http, raw) == 202

        source.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id = 1")
        summary = invoke_schedule(test_client)
        assert (summary["deleted"], summary["deletes"]) == (1, "allowed")
    key_cache.cache_clear()
    assert post_error(http, raw) == 401
    assert post_error(http, other) == 202


# -- a first load bigger than one run ------------------------------------------------------------
class Countdown:
    """A Lambda context's remaining time that drops by `step_ms` each time it is read."""

    def __init__(self, start_ms: int, step_ms: int):
        self.left, self.step = start_ms, step_ms

    def __call__(self) -> int:
        self.left -= self.step
        return max(0, self.left)


def test_a_run_out_of_time_stops_writes_nothing_stale_away_and_the_next_run_finishes(aws, source):
    source.execute("INSERT INTO organizations (id) VALUES (1)")
    source.execute("INSERT INTO projects (id, organization_id) VALUES (1, 1)")
    source.executemany(INSERT_KEYS, [(i, 1, f"key-{i}") for i in range(1, 501)])
    assert run().written == 500
    source.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id <= 20")  # stale now
    source.executemany(INSERT_KEYS, [(i, 1, f"key-{i}") for i in range(501, 1501)])  # 1,000 new

    # 100 s at the start, a margin of 10 s; each read of the clock (every 25 rows) costs 2 s: ~45 reads.
    partial = run(remaining_ms=Countdown(100_000, 2_000))
    assert (partial.ok, partial.complete, partial.deleted) == (True, False, 0)
    assert partial.delete_verdict is DeleteVerdict.DEFERRED
    assert 0 < partial.written < 1000
    assert len(table_items(aws)) == 500 + partial.written  # what it wrote stays; nothing deleted

    rest = run(remaining_ms=Countdown(10**9, 1))
    assert (rest.complete, rest.written, rest.deleted) == (True, 1000 - partial.written, 20)
    assert set(table_items(aws)) == {hash_key(f"key-{i}") for i in range(21, 1501)}
    assert run().written == 0


def test_the_scheduled_handler_passes_its_lambda_clock(aws, source, monkeypatch):
    from chalicelib.keysync import job

    seen = {}
    real_run = job.run

    def spy(**kwargs):
        seen.update(kwargs)
        return real_run(**kwargs)

    monkeypatch.setattr(job, "run", spy)
    with chalice_client() as test_client:
        assert invoke_schedule(test_client)["complete"] is True
    assert seen["remaining_ms"].__name__ == "get_remaining_time_in_millis"


def test_batches_are_written_concurrently(aws):
    import threading

    class SlowDynamoDB:
        """Counts how many BatchWriteItem calls overlap."""

        def __init__(self, real):
            self._real, self._lock = real, threading.Lock()
            self.running = self.most = 0

        def batch_write_item(self, RequestItems):
            with self._lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.05)
            try:
                return self._real.batch_write_item(RequestItems=RequestItems)
            finally:
                with self._lock:
                    self.running -= 1

    slow = SlowDynamoDB(client("dynamodb"))
    writer = BatchWriter(aws.keys_table, slow, workers=4)
    try:
        for i in range(400):
            writer.put({"key_hash": {"S": f"{i:064x}"}, "project_id": {"S": "1"}})
        writer.flush()
    finally:
        writer.close()
    assert slow.most == 4
    assert len(table_items(aws)) == 400
