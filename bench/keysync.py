"""4. Key sync: BENCH_KEYS keys in a MariaDB database of its own → the keys table on moto server,
through the real sync (`chalicelib.keysync.job.run`): first sync, no-change sync, 1 % changed.

The first load runs in a process of its own, as the Lambda would, in 300 s runs with the
Lambda's clock (a run stops in time and the next carries on), so its peak memory (RSS) is
the sync's alone. The million-key row is extrapolated from BENCH_KEYS linearly (time and
memory per key) unless BENCH_KEYS is a million: moto holds a table in one Python process
and scans it far slower than DynamoDB, so a real million on moto takes most of an hour.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.stack import ROOT, Stack, env_int, quiet_stdout, say
from edgectl.lookout_fixture_db import LOCAL_SERVER_URL, LookoutDatabase, create_database, drop_database

KEYS_PER_PROJECT = 10
CHUNK = 5000
LAMBDA_TIMEOUT = 300  # the sync function's timeout (infra)
MILLION = 1_000_000


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


def first_load(url: str) -> dict[str, Any]:
    """In this process: Lambda-sized runs until the sync is complete; time, runs, memory."""
    from chalicelib.keysync import job as keysync_job
    from edgectl.lambda_shim import LambdaContext

    with patient_dynamodb():  # what every run loads whatever the size: modules, clients, the pool
        from chalicelib.keysync import source_mysql
        from chalicelib.runtime.aws import client

        client("dynamodb").describe_table(TableName=os.environ["LOOKOUT_EDGE_KEYS_TABLE"])
        source_mysql.connect(url).close()
    baseline_mb = _rss_mb()
    samples: list[tuple[int, float]] = []  # (rows read, RSS MB) every 10,000 rows of a run
    started = time.perf_counter()
    runs, written = 0, 0
    with quiet_stdout(), patient_dynamodb():
        while True:
            runs += 1
            context = LambdaContext("sync_keys", LAMBDA_TIMEOUT)
            result = keysync_job.run(
                db_url=url,
                remaining_ms=context.get_remaining_time_in_millis,
                progress=lambda step: samples.append((step.scanned, _rss_mb())),
            )
            if not result.ok:
                raise RuntimeError(f"key sync failed: {result.error}")
            written += result.written
            if result.complete:
                break
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = time.perf_counter() - started
    # Memory per key from the second half of the last run: the fixed costs (pages, batches in
    # flight, buffers) are paid by then, what still grows is what a key costs.
    half = [(rows, mb) for rows, mb in samples if rows >= samples[-1][0] / 2] if samples else []
    per_key = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    return {
        "seconds": round(seconds, 2),
        "written": written,
        "runs": runs,
        "baseline_mb": round(baseline_mb, 1),
        "peak_mb": round(peak_mb, 1),
        "bytes_per_key": round(max(0.0, per_key) * 2**20),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed_first_load(stack: Stack, url: str, keys: int) -> dict[str, Any]:
    """`first_load` in a child process (its RSS is the sync's), and the million-key estimate."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.keysync", url],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    step = json.loads(done.stdout.strip().splitlines()[-1])
    scale = MILLION / keys
    seconds = step["seconds"] * scale
    step["million"] = {
        "measured": keys == MILLION,
        "seconds": round(seconds, 1),
        # A run writes until 30 s before its timeout: 270 s of work each.
        "runs": max(1, math.ceil(seconds / (LAMBDA_TIMEOUT - 30))),
        "peak_mb": round(step["peak_mb"] + step["bytes_per_key"] * max(0, MILLION - keys) / 2**20, 1),
    }
    return step


def run(stack: Stack) -> dict[str, Any]:
    keys = env_int("BENCH_KEYS", 100_000)
    name = f"lookout_bench_{secrets.token_hex(4)}"
    url = create_database(LOCAL_SERVER_URL, name)
    db = LookoutDatabase(url)
    try:
        say(f"key sync: seeding {keys} keys in MariaDB database {name}")
        seed(db, keys)
        say("key sync: first sync (a process of its own, in 300 s Lambda runs)")
        first = timed_first_load(stack, url, keys)
        if os.environ.get("BENCH_KEYSYNC_FIRST_ONLY"):  # a million keys: the later syncs take an hour on moto
            return {"keys": keys, "first": first}
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


if __name__ == "__main__":
    print(json.dumps(first_load(sys.argv[1])))
