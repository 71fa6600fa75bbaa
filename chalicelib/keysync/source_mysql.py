"""The Lookout MySQL database, read-only: where its URL comes from, and streaming the key rows.

The URL is `mysql://user:pass@host:port/db?ssl=true&ssl_ca=/path/ca.pem&connect_timeout=5`
(CONTRACT §2). It holds a password, so it is never logged; `redact_url` gives a
loggable form.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from chalicelib.runtime.config import ConfigError, Settings

DEFAULT_KEYS_QUERY = """\
SELECT k.id AS key_id, k.`key` AS api_key, p.id AS project_id,
       p.organization_id, (o.billing_status = 'ok') AS billing_ok,
       o.ingest_ip_allowlist AS ip_allowlist,  -- JSON array text or NULL
       p.trace_enabled, p.rum_enabled, p.rate_limit_per_minute
FROM project_api_keys k
JOIN projects p ON p.id = k.project_id
JOIN organizations o ON o.id = p.organization_id
WHERE k.revoked_at IS NULL AND p.deleted_at IS NULL
"""
SCHEMES = ("mysql", "mysql+pymysql", "mariadb")
TRUE_WORDS = ("1", "true", "yes", "on", "required")
FALSE_WORDS = ("0", "false", "no", "off", "")
# How long the SSM parameter is trusted in a warm container: short, so a rotated
# password is picked up by the next scheduled run or the one after.
PARAM_MAX_AGE = 60


class SourceUnavailable(RuntimeError):
    """The database could not be reached or the query failed; the message has no password."""


def db_url(conf: Settings, override: str | None = None) -> str:
    """The database URL: an explicit override, LOOKOUT_DB_URL, or the SSM SecureString named
    by LOOKOUT_DB_URL_PARAM (decrypted)."""
    if override:
        return override
    if conf.db_url:
        return conf.db_url
    if conf.db_url_param:
        return _ssm_parameter(conf.db_url_param)
    raise ConfigError("LOOKOUT_DB_URL or LOOKOUT_DB_URL_PARAM must be set for key sync")


def _ssm_parameter(name: str) -> str:
    from chalicelib.runtime.ssm import ParameterUnavailable, secure_parameter

    try:
        return secure_parameter(name, max_age=PARAM_MAX_AGE)
    except ParameterUnavailable as exc:
        raise SourceUnavailable(str(exc)) from None


def connect_args(url: str) -> dict[str, Any]:
    """pymysql.connect keyword arguments for a URL; unknown query options are an error
    (a typo in `ssl` must not quietly turn TLS off)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"database URL must start with mysql://, got {parts.scheme or 'nothing'}://")
    if not parts.hostname:
        raise ConfigError("database URL has no host")
    options = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    args: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")) or None,
        "connect_timeout": 5,
        "charset": "utf8mb4",
    }
    ssl_wanted = False
    ssl_ca = None
    for name, value in options.items():
        if name == "ssl":
            ssl_wanted = _truthy(name, value)
        elif name == "ssl_ca":
            ssl_ca, ssl_wanted = value, True
        elif name == "connect_timeout":
            args["connect_timeout"] = _number(name, value)
        else:
            raise ConfigError(f"database URL option {name!r} is not supported (ssl, ssl_ca, connect_timeout)")
    if ssl_wanted:
        import ssl

        # Verified TLS: the system CAs, or the given bundle (the RDS global bundle, say).
        try:
            args["ssl"] = ssl.create_default_context(cafile=ssl_ca or None)
        except OSError as exc:  # ssl.SSLError included
            raise ConfigError(f"database URL option ssl_ca: cannot load {ssl_ca}: {exc}") from None
    return args


def _truthy(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(f"database URL option {name} must be true or false")


def _number(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"database URL option {name} must be a whole number of seconds") from None


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def connect(url: str, streaming: bool = True) -> Any:
    """A pymysql connection. `streaming` gives an unbuffered dict cursor (rows are read as
    they arrive, so a million keys never sit in memory), and lets the server wait for a
    slow reader: the sync writes to DynamoDB between reads."""
    import pymysql
    import pymysql.cursors

    args = connect_args(url)
    cursor = pymysql.cursors.SSDictCursor if streaming else pymysql.cursors.DictCursor
    try:
        return pymysql.connect(
            **args,
            cursorclass=cursor,
            autocommit=True,
            read_timeout=300,
            init_command="SET SESSION net_write_timeout = 600" if streaming else None,
        )
    except pymysql.MySQLError as exc:
        raise SourceUnavailable(_describe(exc, args)) from None


def stream_rows(connection: Any, query: str, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Run the key query and yield each row as a dict; database errors become SourceUnavailable.

    Raises before yielding anything when the result lacks a contract column.
    """
    import pymysql

    from chalicelib.keysync.plan import missing_columns

    cursor = connection.cursor()
    try:
        cursor.execute(query)
        columns = [column[0] for column in cursor.description or ()]
        missing = missing_columns(columns)
        if missing:
            raise SourceUnavailable(f"key query result lacks column(s): {', '.join(missing)}")
        while rows := cursor.fetchmany(batch_size):
            yield from rows
    except pymysql.MySQLError as exc:
        raise SourceUnavailable(f"key query failed: {_describe(exc)}") from None
    finally:
        # When the connection is already broken, the original error is the one to report.
        with contextlib.suppress(pymysql.MySQLError):
            cursor.close()


def _describe(exc: Exception, args: dict[str, Any] | None = None) -> str:
    """A password-free description of a pymysql error."""
    where = f" at {args['host']}:{args['port']}" if args else ""
    code = exc.args[0] if exc.args else ""
    text = str(exc.args[1]) if len(exc.args) > 1 else type(exc).__name__
    if args and args.get("password"):
        text = text.replace(args["password"], "***")
    return f"MySQL error {code}{where}: {text}".replace("  ", " ")
