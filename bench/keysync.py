"""4. Key sync: BENCH_KEYS keys in a MariaDB database of its own → the keys table on moto server,
through the real sync (`chalicelib.keysync.job.run`): first sync, no-change sync, 1 % changed."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

from bench.stack import Stack, env_int, quiet_stdout, say
from edgectl.lookoutdb import LOCAL_SERVER_URL, LookoutDatabase, create_database, drop_database

KEYS_PER_PROJECT = 10
CHUNK = 5000


def seed(db: LookoutDatabase, keys: int) -> None:
    """One organization per 10 projects, 10 keys per project; executemany in chunks."""
    projects = max(1, keys // KEYS_PER_PROJECT)
    organizations = max(1, projects // 10)
    db.executemany(
        "INSERT INTO organizations (id, name, billing_status) VALUES (%s, %s, 'ok')",
        [(o, f"org {o}") for o in range(1, organizations + 1)],
    )
    db.executemany(
        "INSERT INTO projects (id, organization_id, name) VALUES (%s, %s, %s)",
        [(p, (p - 1) % organizations + 1, f"project {p}") for p in range(1, projects + 1)],
    )
    for start in range(0, keys, CHUNK):
        rows = [
            (k, k % projects + 1, f"lk_{secrets.token_hex(20)}") for k in range(start + 1, min(keys, start + CHUNK) + 1)
        ]
        db.executemany("INSERT INTO project_api_keys (id, project_id, `key`) VALUES (%s, %s, %s)", rows)


@contextlib.contextmanager
def patient_dynamodb() -> Iterator[None]:
    """The sync's own client has the edge's 2 s read timeout; moto's Scan of a 100,000-item
    table is far slower than DynamoDB's, so the bench hands the sync a client with a 120 s one."""
    from botocore.config import Config

    from chalicelib.runtime import aws

    shared = aws.client
    patient = aws._session().create_client("dynamodb", config=Config(read_timeout=120, retries={"max_attempts": 1}))
    aws.client = lambda service: patient if service == "dynamodb" else shared(service)  # type: ignore[assignment]
    try:
        yield
    finally:
        aws.client = shared


def timed_sync(url: str) -> dict[str, Any]:
    from chalicelib.keysync import job as keysync_job

    started = time.perf_counter()
    with quiet_stdout(), patient_dynamodb():
        result = keysync_job.run(db_url=url)
    if not result.ok:
        raise RuntimeError(f"key sync failed: {result.error}")
    return {"seconds": round(time.perf_counter() - started, 2), "written": result.written, "deleted": result.deleted}


def run(stack: Stack) -> dict[str, Any]:
    keys = env_int("BENCH_KEYS", 100_000)
    name = f"lookout_bench_{secrets.token_hex(4)}"
    url = create_database(LOCAL_SERVER_URL, name)
    db = LookoutDatabase(url)
    try:
        say(f"key sync: seeding {keys} keys in MariaDB database {name}")
        seed(db, keys)
        say("key sync: first sync")
        first = timed_sync(url)
        say("key sync: second sync, nothing changed")
        unchanged = timed_sync(url)
        # 1 % of the projects get a rate limit: exactly 1 % of the keys change content.
        db.execute("UPDATE projects SET rate_limit_per_minute = 600 WHERE MOD(id, 100) = 0")
        say("key sync: third sync, 1 % of the keys changed")
        changed = timed_sync(url)
    finally:
        db.close()
        drop_database(LOCAL_SERVER_URL, name)
    return {"keys": keys, "first": first, "unchanged": unchanged, "one_percent_changed": changed}
