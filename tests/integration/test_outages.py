"""Outages the other suites do not already cover (see tests/functional/test_ingest.py and
tests/integration/test_keysync_job.py).

- SQS unreachable: 503 with Retry-After, never a 202, nothing queued; back up, the same
  request with its Idempotency-Key is accepted once.
- The idempotency table down: 503 for requests that carry a key, nothing queued.
- The Lookout database dying in the middle of the key query: nothing deleted, the rows
  read so far written, a clear error and the `sync_failed` metric.
- The backend down for a whole run: every event ends in the DLQ, none lost; backend up,
  `dlq redrive`, and every event is stored exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from chalicelib.contract.keys_item import hash_key
from chalicelib.runtime import aws as aws_clients
from edgectl.devstack import free_port
from edgectl.lambda_shim import poll_once
from edgectl.resources import StackNames
from tests.conftest import REGION, drain_queue, reset_container_state

KEY = "lk_outage_secret_key_42"


def post(http: Any, path: str, body: bytes, **headers: str) -> Any:
    return http.post(path, body=body, headers={"Content-Type": "application/json", "X-Api-Key": KEY, **headers})


def unreachable_sqs() -> Any:
    """An SQS client whose endpoint refuses connections, as a regional outage looks from Lambda."""
    return boto3.client(
        "sqs",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )


# --- SQS and the idempotency table ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "content_type", "events"),
    [
        ("/api/ingest", b'{"message": "m"}', "application/json", 1),
        ("/api/ingest/event", b"\n".join(b'{"n": %d}' % i for i in range(12)), "application/x-ndjson", 12),
    ],
    ids=["one-event", "ndjson-12"],
)
def test_sqs_unreachable_is_503_never_202_and_nothing_is_half_accepted(
    http, put_key, aws: StackNames, monkeypatch: pytest.MonkeyPatch, path, body, content_type, events
) -> None:
    put_key(KEY)
    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", lambda _name, **_: unreachable_sqs())
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", 1.5)  # resends until then
    headers = {"Content-Type": content_type, "Idempotency-Key": f"outage-{events}"}
    for _ in range(2):  # the SDK retries: still 503, still nothing
        refused = post(http, path, body, **headers)
        assert refused.status_code == 503, refused.body
        assert set(refused.json_body) == {"error", "message"}
        assert int(refused.headers["Retry-After"]) > 0
    assert drain_queue(aws.queue_url) == []

    monkeypatch.setattr("chalicelib.runtime.sqs_batch.client", aws_clients.client)  # SQS is back
    accepted = post(http, path, body, **headers)
    replay = post(http, path, body, **headers)
    assert accepted.status_code == replay.status_code == 202
    assert accepted.json_body == replay.json_body
    ids = accepted.json_body.get("event_ids") or [accepted.json_body["event_id"]]
    assert sorted(m["event_id"] for m in drain_queue(aws.queue_url)) == sorted(ids)
    assert len(ids) == events


def test_idempotency_table_down_is_503_for_keyed_requests_and_queues_nothing(http, put_key, aws: StackNames) -> None:
    put_key(KEY)
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=aws.idempotency_table)
    refused = post(http, "/api/ingest", b'{"message": "m"}', **{"Idempotency-Key": "k-1"})
    assert (refused.status_code, refused.json_body["error"]) == (503, "service_unavailable")
    assert "Retry-After" in refused.headers
    assert drain_queue(aws.queue_url) == []
    # Requests without a key do not need that table.
    assert post(http, "/api/ingest", b'{"message": "m"}').status_code == 202
    assert len(drain_queue(aws.queue_url)) == 1


# --- key sync: the database dies mid-query ---------------------------------------------------


def test_database_lost_mid_stream_deletes_nothing_and_keeps_what_it_read(
    aws: StackNames, lookout_db: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import pymysql

    from chalicelib.keysync import job as keysync_job
    from chalicelib.keysync import source_mysql as source
    from chalicelib.runtime.config import settings
    from chalicelib.runtime.observability import flush

    keys = [lookout_db.insert_key(key_id=i, project_id=1) for i in range(1, 41)]
    monkeypatch.setenv("LOOKOUT_DB_URL", lookout_db.url)
    settings.cache_clear()
    assert keysync_job.run().ok
    lookout_db.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id > 30")  # 10 really gone
    new_key = lookout_db.insert_key(key_id=99, project_id=1)
    real_stream = source.stream_rows

    def dies_after_five(connection: Any, query: str, batch_size: int = 1000):
        for number, row in enumerate(real_stream(connection, query, batch_size=1), start=1):
            if number > 5:
                raise pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")
            yield row

    monkeypatch.setattr(source, "stream_rows", dies_after_five)
    flush(keysync_job.SERVICE)  # the first run's invocation
    capsys.readouterr()
    result = keysync_job.run()
    flush(keysync_job.SERVICE)  # what the scheduled handler does after run()

    assert not result.ok and "Lost connection" in (result.error or "")
    assert result.deleted == 0 and result.delete_verdict.refused
    stored = {
        item["key_hash"]["S"]
        for item in boto3.client("dynamodb", region_name=REGION).scan(TableName=aws.keys_table)["Items"]
    }
    assert {hash_key(k) for k in keys} <= stored  # the 10 revoked keys wait for a clean run
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m.get("sync_failed") for m in emf if "sync_failed" in m] == [[1.0]]

    monkeypatch.setattr(source, "stream_rows", real_stream)
    assert keysync_job.run().ok  # the database is back: now the revoked keys go, the new one comes
    stored = {
        item["key_hash"]["S"]
        for item in boto3.client("dynamodb", region_name=REGION).scan(TableName=aws.keys_table)["Items"]
    }
    assert stored == {hash_key(k) for k in keys[:30]} | {hash_key(new_key)}


# --- the backend down for the whole run ------------------------------------------------------


@pytest.fixture
def small_queues(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A queue pair like the template's but with maxReceiveCount 3, and a 1 s retry backoff."""
    sqs = boto3.client("sqs", region_name=REGION)
    dlq_url = sqs.create_queue(QueueName="outage-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    queue_url = sqs.create_queue(
        QueueName="outage-events", Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "30"}
    )["QueueUrl"]
    for name, value in {
        "LOOKOUT_EDGE_QUEUE_URL": queue_url,
        "LOOKOUT_EDGE_DLQ_URL": dlq_url,
        "LOOKOUT_INGEST_EDGE_TOKEN": "edge-token-for-outage-tests",
        "LOOKOUT_EDGE_RETRY_BASE_SECONDS": "1",
        "LOOKOUT_EDGE_RETRY_MAX_SECONDS": "1",
        "LOOKOUT_EDGE_FORWARD_READ_TIMEOUT": "2",
    }.items():
        monkeypatch.setenv(name, value)
    reset_container_state()
    return queue_url, dlq_url


def run_forwarder_until(done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Feed the queue to the real handler as Lambda would, until `done()`."""
    from app import forward_events
    from chalicelib.runtime.config import settings

    queue_url = settings().require("queue_url")
    sqs = aws_clients.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the forwarder did not get there in time"
        count, _ = poll_once(sqs, queue_url, arn, forward_events, wait_seconds=0)
        if not count:
            time.sleep(0.2)


def depth(url: str) -> int:
    attributes = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


@pytest.mark.parametrize("outage", ["connection_refused", "token_unset_503"])
def test_backend_down_all_run_dead_letters_everything_then_redrive_stores_each_once(
    http, put_key, small_queues: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outage: str, capsys
) -> None:
    from edgectl import cli
    from edgectl.receiver import start_receiver
    from edgectl.receiver.store import SQLiteStore

    queue_url, dlq_url = small_queues
    put_key(KEY)
    store = SQLiteStore(str(tmp_path / "lookout.sqlite3"))
    down = None
    if outage == "connection_refused":
        monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", f"http://127.0.0.1:{free_port()}")
    else:
        down = start_receiver(store, token=None)  # Lookout answers 503 until its token is set
        monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", down.url)
    from chalicelib.runtime.config import settings

    settings.cache_clear()
    accepted: set[str] = set()
    for i in range(6):
        answer = post(http, "/api/ingest", json.dumps({"message": f"outage {i}"}).encode()).json_body
        accepted.add(answer["event_id"])
    lines = b"\n".join(b'{"n": %d}' % i for i in range(14))
    accepted.update(
        post(http, "/api/ingest/event", lines, **{"Content-Type": "application/x-ndjson"}).json_body["event_ids"]
    )

    run_forwarder_until(lambda: depth(queue_url) == 0)
    if down is not None:
        down.stop()
    dead = drain_queue_keep(dlq_url)
    assert {m["event_id"] for m in dead} == accepted and len(dead) == len(accepted)  # all there, none lost
    assert store.stats()["events"] == 0

    capsys.readouterr()
    assert cli.main(["dlq", "status"]) == 0
    assert f"max_receives                 {len(accepted)}" in capsys.readouterr().out

    with start_receiver(store, token="edge-token-for-outage-tests") as lookout:  # the backend is back
        monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", lookout.url)
        settings.cache_clear()
        assert cli.main(["dlq", "redrive"]) == 0
        assert depth(dlq_url) == 0
        run_forwarder_until(lambda: depth(queue_url) == 0)
    assert store.stats() == {**store.stats(), "events": len(accepted), "duplicates": 0}
    assert all(store.event(event_id) is not None for event_id in accepted)
    store.close()


def drain_queue_keep(url: str) -> list[dict[str, Any]]:
    """Every message body on a queue, left in place (hidden only while reading, then visible again)."""
    sqs = boto3.client("sqs", region_name=REGION)
    bodies, handles = [], []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
        "Messages", []
    ):
        bodies += [json.loads(m["Body"]) for m in messages]
        handles += [m["ReceiptHandle"] for m in messages]
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return bodies
