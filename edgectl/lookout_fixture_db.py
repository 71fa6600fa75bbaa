"""A stand-in Lookout database for the local stack and tests (never deployed).

It holds just the three tables the key query reads (CONTRACT §7, schema verbatim).
Typical use:

    url = create_database("mysql://root:@127.0.0.1:3306", "lookout_dev")  # with the schema
    db = LookoutDatabase(url)
    raw_key = db.insert_key(project_id=1, organization_id=1)
    ...
    db.close(); drop_database("mysql://root:@127.0.0.1:3306", "lookout_dev")
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chalicelib.keysync.source_mysql import connect

LOCAL_SERVER_URL = "mysql://root:@127.0.0.1:3306"

SCHEMA = """\
CREATE TABLE organizations (id BIGINT PRIMARY KEY, name VARCHAR(255),
  billing_status VARCHAR(32) NOT NULL DEFAULT 'ok', ingest_ip_allowlist TEXT NULL);
CREATE TABLE projects (id BIGINT PRIMARY KEY, organization_id BIGINT NOT NULL,
  name VARCHAR(255), trace_enabled BOOL NOT NULL DEFAULT 1,
  rum_enabled BOOL NOT NULL DEFAULT 1, rate_limit_per_minute INT NULL,
  deleted_at DATETIME NULL);
CREATE TABLE project_api_keys (id BIGINT PRIMARY KEY, project_id BIGINT NOT NULL,
  `key` VARCHAR(128) NOT NULL UNIQUE, revoked_at DATETIME NULL);
"""
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def database_url(server_url: str, name: str) -> str:
    """`server_url` (any path dropped) pointing at database `name`."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{_checked(name)}"))


def create_database(server_url: str, name: str, schema: bool = True) -> str:
    """Create database `name` on the server (with the contract schema unless `schema=False`)
    and return its URL. Fails if it exists: a test must never reuse someone else's data."""
    with _admin(server_url) as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{_checked(name)}` CHARACTER SET utf8mb4")
    url = database_url(server_url, name)
    if schema:
        with connect(url, streaming=False) as conn:
            apply_schema(conn)
    return url


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` if it exists."""
    with _admin(server_url) as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{_checked(name)}`")


def apply_schema(conn: Any) -> None:
    """Create the three tables of CONTRACT §7 in the connection's database."""
    with conn.cursor() as cursor:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                cursor.execute(statement)


def insert_demo_key(
    conn: Any,
    *,
    key_id: int,
    project_id: int = 1,
    organization_id: int = 1,
    raw_key: str | None = None,
    billing_status: str = "ok",
    ip_allowlist: str | None = None,
    trace_enabled: bool = True,
    rum_enabled: bool = True,
    rate_limit_per_minute: int | None = None,
) -> str:
    """Insert one live API key (and its organization and project when they do not exist yet)
    and return the raw key. `ip_allowlist` is the column's JSON text, e.g. '["10.0.0.0/8"]'.
    An existing organization or project is left as it is: change it with SQL."""
    raw_key = raw_key or new_raw_key()
    with conn.cursor() as cursor:
        cursor.execute(
            "INSERT IGNORE INTO organizations (id, name, billing_status, ingest_ip_allowlist) VALUES (%s, %s, %s, %s)",
            (organization_id, f"Org {organization_id}", billing_status, ip_allowlist),
        )
        cursor.execute(
            "INSERT IGNORE INTO projects (id, organization_id, name, trace_enabled, rum_enabled, rate_limit_per_minute)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (project_id, organization_id, f"Project {project_id}", trace_enabled, rum_enabled, rate_limit_per_minute),
        )
        cursor.execute(
            "INSERT INTO project_api_keys (id, project_id, `key`) VALUES (%s, %s, %s)", (key_id, project_id, raw_key)
        )
    return raw_key


def new_raw_key() -> str:
    """A fresh random API key in Lookout's style."""
    return "lk_" + secrets.token_hex(20)


class LookoutDatabase:
    """A connection to one Lookout database, for seeding and changing it (autocommit)."""

    def __init__(self, url: str):
        self.url = url
        self.name = urlsplit(url).path.lstrip("/")
        self.conn = connect(url, streaming=False)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run one statement; returns the affected row count."""
        with self.conn.cursor() as cursor:
            return cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement for many parameter rows (fast bulk inserts)."""
        with self.conn.cursor() as cursor:
            return cursor.executemany(sql, list(rows))

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a SELECT, as dicts."""
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def insert_key(self, **kwargs: Any) -> str:
        """`insert_demo_key` on this database; `key_id` defaults to the next free id."""
        if "key_id" not in kwargs:
            kwargs["key_id"] = self.query("SELECT COALESCE(MAX(id), 0) + 1 AS next FROM project_api_keys")[0]["next"]
        return insert_demo_key(self.conn, **kwargs)

    def close(self) -> None:
        self.conn.close()


def _admin(server_url: str) -> Any:
    """A connection to the server without selecting a database."""
    parts = urlsplit(server_url)
    return connect(urlunsplit(parts._replace(path="")), streaming=False)


def _checked(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"database name must be letters, digits and underscores: {name!r}")
    return name
