"""One key sync run (CONTRACT §7): Lookout MySQL → the DynamoDB keys table, diffed.

The scheduled Lambda (`app.sync_keys`) and `python -m edgectl sync-keys` both call
`run`. Order matters for safety: the table is scanned first, then rows stream from
MySQL and only new or changed items are written as they pass; deletes come last,
and only when the source finished cleanly (see `keysync.judge_deletes`).

A first load of a million keys does not fit one 300 s Lambda run. A run that is
given the time it has left (`remaining_ms`, the Lambda context's) stops writing
before the timeout, deletes nothing, and reports itself incomplete; the next run
carries on. The table is the cursor: what a run wrote, the next run's scan finds
unchanged and skips, so no separate position can go stale against a custom key
query (which need not have a stable order). Writes go out from WRITE_WORKERS
threads at once; memory is ~41 bytes per stored key (StoredHashes).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from chalicelib.contract.keys_item import CONTENT_HASH, KEY_HASH, table_key
from chalicelib.keysync.plan import (
    BadRow,
    DeleteVerdict,
    DuplicateKey,
    SyncPlanner,
    SyncResult,
    item_from_row,
    judge_deletes,
)
from chalicelib.keysync.stored_hashes import StoredHashes
from chalicelib.runtime.config import ConfigError, settings
from chalicelib.runtime.observability import count, logger

SERVICE = "sync"
BATCH_LIMIT = 25  # BatchWriteItem's maximum
WRITE_WORKERS = 8  # concurrent BatchWriteItem calls
STOP_MARGIN_SECONDS = 30.0  # a run stops writing this long before its Lambda timeout (at most)
PROGRESS_EVERY = 10_000  # rows between progress callbacks
REFUSAL_HINTS = {
    DeleteVerdict.REFUSED_NO_ROWS: "the key query returned no rows: check the database and LOOKOUT_EDGE_KEYS_QUERY",
    DeleteVerdict.REFUSED_MASS_DELETE: "check the source, then run `python -m edgectl sync-keys --allow-mass-delete`",
}


class WriteFailed(RuntimeError):
    """DynamoDB kept items unprocessed after every retry."""


def scan_content_hashes(table: str, dynamodb: Any) -> StoredHashes:
    """Every item's key_hash and content hash (none: it is rewritten), compactly. Only the
    two attributes travel, and each page is folded in and dropped as it arrives."""
    paginator = dynamodb.get_paginator("scan")
    pages = paginator.paginate(
        TableName=table,
        ProjectionExpression=f"{KEY_HASH}, {CONTENT_HASH}",
        PaginationConfig={"PageSize": 5000},
    )
    return StoredHashes(
        (item[KEY_HASH]["S"], item.get(CONTENT_HASH, {}).get("S", ""))
        for page in pages
        for item in page.get("Items", [])
    )


class BatchWriter:
    """Puts and deletes in BatchWriteItem calls of 25, up to `workers` calls at once;
    UnprocessedItems are retried with exponential backoff, and what DynamoDB still refuses
    raises WriteFailed (from the next put, delete or flush). Call `close()` when done."""

    def __init__(
        self,
        table: str,
        dynamodb: Any,
        max_attempts: int = 8,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        workers: int = 1,
    ):
        self._table = table
        self._dynamodb = dynamodb
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._pending: list[dict[str, Any]] = []
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keysync-write")
        self._in_flight: deque[Future] = deque()
        self._max_in_flight = 2 * workers  # bounded: the rows stream no faster than they are written

    def put(self, item: dict[str, Any]) -> None:
        self._add({"PutRequest": {"Item": item}})

    def delete(self, key_hash: str) -> None:
        self._add({"DeleteRequest": {"Key": table_key(key_hash)}})

    def _add(self, request: dict[str, Any]) -> None:
        self._pending.append(request)
        if len(self._pending) >= BATCH_LIMIT:
            self._submit()

    def _submit(self) -> None:
        requests, self._pending = self._pending, []
        if requests:
            while len(self._in_flight) >= self._max_in_flight:
                self._in_flight.popleft().result()
            self._in_flight.append(self._executor.submit(self._send, requests))

    def flush(self) -> None:
        """Send what is pending and wait for every call (nothing is sent when nothing is pending)."""
        self._submit()
        while self._in_flight:
            self._in_flight.popleft().result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _send(self, requests: list[dict[str, Any]]) -> None:
        for attempt in range(1, self._max_attempts + 1):
            if not requests:
                return
            if attempt > 1:
                self._sleep(min(self._max_delay, self._base_delay * 2 ** (attempt - 2)))
            response = self._dynamodb.batch_write_item(RequestItems={self._table: requests})
            requests = response.get("UnprocessedItems", {}).get(self._table, [])
        if requests:
            raise WriteFailed(f"{len(requests)} item(s) stayed unprocessed after {self._max_attempts} attempts")


def run(
    db_url: str | None = None,
    allow_mass_delete: bool = False,
    progress: Callable[[SyncResult], None] | None = None,
    remaining_ms: Callable[[], int] | None = None,
) -> SyncResult:
    """Sync once from the settings' database (or `db_url`); never raises: failures are in
    `result.error`, logged, and counted as `sync_failed`. With `remaining_ms` (the Lambda
    context's `get_remaining_time_in_millis`), stop in time and leave the rest to the next run."""
    from chalicelib.keysync import source_mysql
    from chalicelib.runtime.aws import client

    conf = settings()
    dynamodb = client("dynamodb")
    started = time.monotonic()
    result = SyncResult()
    if conf.home_region and conf.home_region != dynamodb.meta.region_name:
        # A multi-region edge: the table here is a replica of the home region's (docs/multi-region.md).
        logger(SERVICE).info("key sync skipped: not the home region", extra={"home_region": conf.home_region})
        return result
    try:
        existing = scan_content_hashes(conf.keys_table, dynamodb)
    except Exception as exc:
        result.error = f"cannot scan keys table {conf.keys_table}: {type(exc).__name__}: {exc}"
        return _finish(result, started)
    writer = BatchWriter(conf.keys_table, dynamodb, workers=WRITE_WORKERS)
    connection = None
    out_of_time = None
    budget_ms = remaining_ms() if remaining_ms is not None else 0
    if remaining_ms is not None and budget_ms > 0:  # (a test double's clock may have none)
        # A tenth of the run's time for a short timeout (tests, a CLI run given a small budget).
        margin_ms = min(STOP_MARGIN_SECONDS * 1000, budget_ms / 10)
        out_of_time = lambda: remaining_ms() < margin_ms  # noqa: E731
    try:
        url = source_mysql.db_url(conf, db_url)
        connection = source_mysql.connect(url)
        rows = source_mysql.stream_rows(connection, conf.keys_query or source_mysql.DEFAULT_KEYS_QUERY)
        sync_rows(
            rows,
            existing,
            writer,
            result,
            conf.mass_delete_share,
            allow_mass_delete,
            int(time.time()),
            progress,
            out_of_time,
        )
    except Exception as exc:
        known = (source_mysql.SourceUnavailable, WriteFailed, ConfigError)
        result.error = str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
        if result.deleted == 0 and result.delete_verdict is not DeleteVerdict.ALLOWED:
            result.delete_verdict = DeleteVerdict.REFUSED_SOURCE_FAILED
        # Finish what was already decided: written rows are correct whatever comes next.
        try:
            writer.flush()
        except Exception as flush_exc:
            result.error += f"; pending writes lost: {type(flush_exc).__name__}"
    finally:
        writer.close()
        if connection is not None:
            connection.close()
    return _finish(result, started)


def sync_rows(
    rows: Iterable[Mapping[str, Any]],
    existing: StoredHashes | Mapping[str, str],
    writer: BatchWriter,
    result: SyncResult,
    max_share: float,
    allow_mass_delete: bool,
    synced_at: int,
    progress: Callable[[SyncResult], None] | None = None,
    out_of_time: Callable[[], bool] | None = None,
) -> None:
    """Write new and changed items as rows stream past, then delete what the verdict allows.
    An exception from `rows` (the source failed) propagates before any delete. When
    `out_of_time` says so, stop after what was written: no deletes, `result.complete` false."""
    planner = SyncPlanner(existing)
    result.table_size = planner.table_size
    for row in rows:
        if out_of_time is not None and result.scanned % BATCH_LIMIT == 0 and out_of_time():
            writer.flush()
            result.complete = False
            result.delete_verdict = DeleteVerdict.DEFERRED
            return
        result.scanned += 1
        try:
            item = item_from_row(row, synced_at)
            changed = planner.needs_write(item)
        except (BadRow, DuplicateKey) as exc:
            if isinstance(exc, BadRow) and exc.key_hash:
                planner.keep(exc.key_hash)
            result.skipped += 1
            logger(SERVICE).warning("key sync skipped a row", extra={"key_id": _key_id(row), "reason": str(exc)})
            continue
        if changed:
            writer.put(item)
            result.written += 1
        else:
            result.unchanged += 1
        if progress is not None and result.scanned % PROGRESS_EVERY == 0:
            progress(result)
    writer.flush()
    stale = planner.stale_keys()
    result.stale = len(stale)
    result.delete_verdict = judge_deletes(len(stale), planner.table_size, result.scanned, max_share, allow_mass_delete)
    if result.delete_verdict is DeleteVerdict.ALLOWED:
        for key_hash in stale:
            writer.delete(key_hash)
        writer.flush()
        result.deleted = len(stale)


def _key_id(row: Mapping[str, Any]) -> str | None:
    value = row.get("key_id")
    return None if value is None else str(value)


def _finish(result: SyncResult, started: float) -> SyncResult:
    """Log the summary line and record the metrics."""
    result.duration = time.monotonic() - started
    summary = result.summary()
    count("sync_scanned", result.scanned, SERVICE)
    count("sync_written", result.written, SERVICE)
    count("sync_deleted", result.deleted, SERVICE)
    count("sync_skipped", result.skipped, SERVICE)
    count("sync_failed", 0 if result.ok else 1, SERVICE)
    count("sync_deletes_refused", result.stale if result.delete_verdict.refused else 0, SERVICE)
    count("sync_duration", result.duration, SERVICE, unit="Seconds")
    if not result.ok:
        logger(SERVICE).error("key sync failed", extra=summary)
    elif result.delete_verdict.refused:
        logger(SERVICE).error(
            "key sync refused to delete stale keys", extra={**summary, "hint": REFUSAL_HINTS[result.delete_verdict]}
        )
    elif not result.complete:
        logger(SERVICE).warning("key sync stopped before its timeout; the next run carries on", extra=summary)
    else:
        logger(SERVICE).info("key sync finished", extra=summary)
    return result
