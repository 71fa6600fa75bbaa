"""Storage of the reference receiver: events once per `event_id`, and job runs / cron check-ins.

`MySQLStore` (pymysql, the Lookout database engine) and `SQLiteStore` (stdlib, no
server) share every statement and all the logic in `ReceiverStore`; a `Dialect`
holds the few words the two SQL flavours spell differently.

Callers hand `ingest` an event already validated against CONTRACT §5 (the
receiver does that) and read back plain dicts. Every method is thread-safe:
connections come from a small pool, one per concurrent caller.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib.contract.envelope import dumps, utc_now_iso
from chalicelib.contract.signals import ASSIGNED_ID_FIELDS

# A run or check-in status that is not one of these is final (ok, error, failed, timeout...).
NON_FINAL_STATUSES = frozenset({"in_progress", "running", "started", "start", "pending", "queued"})
DEFAULT_STATUS = "in_progress"
MAX_LIST_LIMIT = 1000


@dataclass(frozen=True)
class RunUpdate:
    """What one `job`/`cron` event says about its run or check-in.

    `status_key` orders updates independently of arrival: a final status beats a
    non-final one, then the later `received_at` wins. The store keeps the status
    of the highest key, so a start that arrives after its finish changes nothing.
    """

    kind: str
    run_id: str
    project_id: str
    status: str
    status_key: str

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> RunUpdate | None:
        """The update a validated event carries, or None (not job/cron, or no id at all)."""
        id_field = ASSIGNED_ID_FIELDS.get(event["signal"])
        if id_field is None:
            return None
        payload = event["payload"]
        run_id = _id_text((event.get("assigned_ids") or {}).get(id_field)) or _id_text(payload.get(id_field))
        if run_id is None:
            return None
        status = payload.get("status")
        status = status.strip().lower() if isinstance(status, str) and status.strip() else DEFAULT_STATUS
        rank = 0 if status in NON_FINAL_STATUSES else 1
        received_at = datetime.fromisoformat(event["received_at"])
        received = utc_now_iso(received_at.astimezone(UTC) if received_at.tzinfo else received_at)
        return cls(event["signal"], run_id, event["project_id"], status, f"{rank}|{received}")


def _id_text(value: Any) -> str | None:
    """An id as the edge accepts it (a non-blank string or an integer), else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text[:64] or None


@dataclass(frozen=True)
class Dialect:
    """The SQL words that differ between MySQL/MariaDB and SQLite."""

    text: str  # column type for JSON documents
    table_options: str
    upsert: str  # the clause that turns an INSERT into an update of the row with the same `{key}`
    new_value: str  # template naming the value the INSERT proposed, `{}` = column
    greatest: str
    begin_write: str
    begin_read: str
    placeholder: str


MYSQL = Dialect(
    text="LONGTEXT",
    table_options=" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    upsert="ON DUPLICATE KEY UPDATE",
    new_value="VALUES({})",
    greatest="GREATEST",
    begin_write="START TRANSACTION",
    begin_read="START TRANSACTION",
    placeholder="%s",
)
SQLITE = Dialect(
    text="TEXT",
    table_options="",
    upsert="ON CONFLICT ({key}) DO UPDATE SET",
    new_value="excluded.{}",
    greatest="MAX",
    begin_write="BEGIN IMMEDIATE",  # take the write lock first: no upgrade deadlocks
    begin_read="BEGIN",
    placeholder="?",
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        event_id VARCHAR(32) NOT NULL PRIMARY KEY,
        `signal` VARCHAR(32) NOT NULL,
        project_id VARCHAR(64) NOT NULL,
        organization_id VARCHAR(64) NULL,
        received_at VARCHAR(40) NOT NULL,
        envelope {text} NOT NULL,
        payload {text} NOT NULL,
        stored_at VARCHAR(40) NOT NULL,
        times_seen INT NOT NULL DEFAULT 1
    ){table_options}""",
    """CREATE TABLE IF NOT EXISTS runs (
        kind VARCHAR(16) NOT NULL,
        id VARCHAR(64) NOT NULL,
        project_id VARCHAR(64) NOT NULL,
        status VARCHAR(32) NOT NULL,
        status_key VARCHAR(64) NOT NULL,
        first_event_id VARCHAR(32) NOT NULL,
        last_event_id VARCHAR(32) NOT NULL,
        event_count INT NOT NULL DEFAULT 1,
        created_at VARCHAR(40) NOT NULL,
        updated_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (kind, id)
    ){table_options}""",
)

_EVENT_COLUMNS = (
    "event_id, `signal`, project_id, organization_id, received_at, envelope, payload, stored_at, times_seen"
)
_RUN_COLUMNS = "kind, id, project_id, status, first_event_id, last_event_id, event_count, created_at, updated_at"


class ReceiverStore:
    """Events and runs in SQL; subclasses only say how to connect and which dialect they speak."""

    dialect: Dialect

    def __init__(self, pool_size: int = 8) -> None:
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=pool_size)
        self._create_schema()

    # -- what subclasses provide -------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    # -- writes ---------------------------------------------------------------------------
    def ingest(self, event: dict[str, Any]) -> str:
        """Store a validated §5 event once: "accepted" the first time, then "duplicate".

        A duplicate only counts (`times_seen`); it never changes the stored event
        nor its run. The event and its run change commit together.
        """
        now = utc_now_iso()
        envelope = {k: v for k, v in event.items() if k != "payload"}
        with self._transaction() as cursor:
            # One upsert, then read the count back: the row lock is taken once, in exclusive mode
            # (insert-if-absent followed by an update deadlocks concurrent duplicates on InnoDB).
            self._execute(
                cursor,
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) "
                f"{self.dialect.upsert.format(key='event_id')} times_seen = events.times_seen + 1",
                (
                    event["event_id"],
                    event["signal"],
                    event["project_id"],
                    event.get("organization_id"),
                    event["received_at"],
                    dumps(envelope),
                    dumps(event["payload"]),
                    now,
                ),
            )
            self._execute(cursor, "SELECT times_seen FROM events WHERE event_id = ?", (event["event_id"],))
            if cursor.fetchone()[0] != 1:
                return "duplicate"
            run = RunUpdate.from_event(event)
            if run is not None:
                self._apply_run(cursor, run, event["event_id"], now)
            return "accepted"

    def _apply_run(self, cursor: Any, run: RunUpdate, event_id: str, now: str) -> None:
        # MySQL assigns left to right: `status` must read the old `status_key` before it moves.
        new = self.dialect.new_value.format
        self._execute(
            cursor,
            "INSERT INTO runs (kind, id, project_id, status, status_key, first_event_id, last_event_id,"
            " event_count, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
            f"{self.dialect.upsert.format(key='kind, id')} "
            f"status = CASE WHEN {new('status_key')} >= runs.status_key THEN {new('status')} ELSE runs.status END, "
            f"last_event_id = CASE WHEN {new('status_key')} >= runs.status_key"
            f" THEN {new('last_event_id')} ELSE runs.last_event_id END, "
            f"status_key = {self.dialect.greatest}(runs.status_key, {new('status_key')}), "
            f"event_count = runs.event_count + 1, updated_at = {new('updated_at')}",
            (run.kind, run.run_id, run.project_id, run.status, run.status_key, event_id, event_id, now, now),
        )

    # -- reads ------------------------------------------------------------------------------
    def event(self, event_id: str) -> dict[str, Any] | None:
        """The stored event as forwarded (§5 message) plus `stored_at` and `times_seen`, or None."""
        rows = self._query(f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id = ?", (event_id,))
        return _event_out(rows[0]) if rows else None

    def events(self, project_id: str | None = None, signal: str | None = None, limit: int = 50) -> list[dict]:
        """The most recently stored events, newest first, optionally of one project and/or signal."""
        where: list[str] = []
        args: list[str | int] = []
        for column, value in (("project_id", project_id), ("`signal`", signal)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY stored_at DESC, event_id DESC LIMIT ?"
        args.append(max(1, min(int(limit), MAX_LIST_LIMIT)))
        return [_event_out(row) for row in self._query(sql, tuple(args))]

    def run(self, run_id: str, kind: str | None = None) -> dict[str, Any] | None:
        """A job run (`kind` "job") or cron check-in ("cron") by id; without `kind`, the latest updated."""
        sql, args = f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        rows = self._query(sql + " ORDER BY updated_at DESC LIMIT 1", tuple(args))
        return rows[0] if rows else None

    def stats(self) -> dict[str, Any]:
        """Counts: distinct events, duplicate deliveries, events per signal, runs per kind and status."""
        totals = self._query("SELECT COUNT(*) AS events, COALESCE(SUM(times_seen - 1), 0) AS duplicates FROM events")
        by_signal = self._query("SELECT `signal`, COUNT(*) AS n FROM events GROUP BY `signal`")
        runs = self._query("SELECT kind, status, COUNT(*) AS n FROM runs GROUP BY kind, status")
        runs_by_kind: dict[str, dict[str, int]] = {}
        for row in runs:
            runs_by_kind.setdefault(row["kind"], {})[row["status"]] = int(row["n"])
        return {
            "events": int(totals[0]["events"]),
            "duplicates": int(totals[0]["duplicates"]),
            "by_signal": {row["signal"]: int(row["n"]) for row in by_signal},
            "runs": runs_by_kind,
        }

    def close(self) -> None:
        """Close the pooled connections (the store opens new ones if used again)."""
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    # -- plumbing -------------------------------------------------------------------------
    def _create_schema(self) -> None:
        with self._transaction() as cursor:
            for statement in _SCHEMA:
                cursor.execute(statement.format(text=self.dialect.text, table_options=self.dialect.table_options))

    def _execute(self, cursor: Any, sql: str, args: tuple = ()) -> None:
        cursor.execute(sql.replace("?", self.dialect.placeholder), args)

    def _query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._transaction(write=False) as cursor:
            self._execute(cursor, sql, args)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back (connection dropped) on error."""
        try:
            connection = self._pool.get_nowait()
        except queue.Empty:
            connection = self._connect()
        cursor = connection.cursor()
        try:
            cursor.execute(self.dialect.begin_write if write else self.dialect.begin_read)
            yield cursor
            connection.commit()
        except BaseException:
            try:
                connection.rollback()
            finally:
                connection.close()
            raise
        finally:
            cursor.close()
        try:
            self._pool.put_nowait(connection)
        except queue.Full:
            connection.close()


def _event_out(row: dict[str, Any]) -> dict[str, Any]:
    event = json.loads(row["envelope"])
    event["payload"] = json.loads(row["payload"])
    event["stored_at"] = row["stored_at"]
    event["times_seen"] = int(row["times_seen"])
    return event


class SQLiteStore(ReceiverStore):
    """The store in one SQLite file (WAL mode, so readers never block the writer)."""

    dialect = SQLITE

    def __init__(self, path: str, pool_size: int = 8) -> None:
        self.path = str(path)
        super().__init__(pool_size)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def _connect(self) -> Any:
        import sqlite3

        # Autocommit mode: the store issues BEGIN IMMEDIATE itself, so writers queue up instead of deadlocking.
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection


class MySQLStore(ReceiverStore):
    """The store in a MySQL/MariaDB database, created if missing (InnoDB, utf8mb4)."""

    dialect = MYSQL

    def __init__(self, url: str, pool_size: int = 8) -> None:
        from chalicelib.keysync.source_mysql import connect_args, redact_url

        self._connect_args = connect_args(url)
        self.database = self._connect_args["database"]
        if not self.database or "`" in self.database:
            raise ValueError("the MySQL URL must name a database: mysql://user:pass@host:port/DATABASE")
        self.location = redact_url(url)
        self._create_database()
        super().__init__(pool_size)

    def __repr__(self) -> str:
        return f"MySQLStore({self.location!r})"

    def _connect(self, database: bool = True) -> Any:
        import pymysql

        args = dict(self._connect_args, database=self.database if database else None)
        return pymysql.connect(**args, autocommit=False)

    def _create_database(self) -> None:
        connection = self._connect(database=False)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4")
        finally:
            connection.close()
