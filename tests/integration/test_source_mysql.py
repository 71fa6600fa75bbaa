"""The Lookout database side of key sync: URL parsing, SSM, TLS, streaming the key query."""

from __future__ import annotations

import os
import ssl

import boto3
import pymysql.cursors
import pytest

from chalicelib.keysync.source_mysql import (
    DEFAULT_KEYS_QUERY,
    SourceUnavailable,
    connect,
    connect_args,
    db_url,
    redact_url,
    stream_rows,
)
from chalicelib.runtime.config import ConfigError, load_settings
from tests.conftest import REGION

CLOSED_PORT_URL = "mysql://root:pw-that-must-not-leak@127.0.0.1:1/lookout"


def test_url_parts_become_connect_arguments():
    args = connect_args("mysql://lookout%40app:p%3Ass%2Fw@db.internal:3307/lookout_prod")
    assert {k: args[k] for k in ("host", "port", "user", "password", "database")} == {
        "host": "db.internal",
        "port": 3307,
        "user": "lookout@app",
        "password": "p:ss/w",
        "database": "lookout_prod",
    }


def test_tls_is_on_for_any_host_that_is_not_loopback_and_verifies_the_rds_ca():
    """Lookout's database is across a network (RDS in a VPC): TLS unless the URL says ssl=false."""
    from chalicelib.keysync.source_mysql import RDS_CA_BUNDLE

    rds_subjects = {
        dict(part[0] for part in cert["subject"])["commonName"]
        for cert in ssl.create_default_context(cafile=str(RDS_CA_BUNDLE)).get_ca_certs()
    }
    assert {"Amazon RDS eu-west-1 Root CA RSA2048 G1", "Amazon RDS us-east-1 Root CA RSA4096 G1"} <= rds_subjects
    for host in ("db.internal", "lookout.abc123.eu-west-1.rds.amazonaws.com", "10.0.3.7", "[fd00::7]"):
        context = connect_args(f"mysql://u:p@{host}:3306/lookout")["ssl"]
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True), host
        loaded = {dict(part[0] for part in cert["subject"]).get("commonName") for cert in context.get_ca_certs()}
        assert rds_subjects <= loaded, host
    for url in ("mysql://u:p@db.internal/lookout?ssl=false", "mysql://u:p@db.internal/lookout?ssl=0"):
        args = connect_args(url)
        assert "ssl" not in args and args["ssl_disabled"] is True  # not even the driver's unverified try
    for host in ("127.0.0.1", "localhost", "127.0.0.2", "[::1]"):
        assert "ssl" not in connect_args(f"mysql://u:p@{host}/lookout"), host
    assert "ssl" in connect_args("mysql://u:p@127.0.0.1/lookout?ssl=true")


def test_url_defaults():
    args = connect_args("mysql+pymysql://root@localhost")
    assert (args["port"], args["password"], args["database"], args["connect_timeout"]) == (3306, "", None, 5)


def test_ssl_true_verifies_certificate_and_host():
    context = connect_args("mysql://u:p@db:3306/x?ssl=true&connect_timeout=2")["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_ssl_ca_loads_the_bundle_and_implies_tls():
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    context = connect_args(f"mysql://u:p@db/x?ssl_ca={bundle}")["ssl"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0


def test_ssl_ca_that_cannot_be_read_is_a_config_error():
    with pytest.raises(ConfigError, match="ssl_ca"):
        connect_args("mysql://u:p@db/x?ssl_ca=/nonexistent/ca.pem")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://u:p@db/x", "mysql://"),
        ("mysql:///x", "no host"),
        ("mysql://u:p@db/x?sll=true", "'sll' is not supported"),
        ("mysql://u:p@db/x?ssl=maybe", "true or false"),
        ("mysql://u:p@db/x?connect_timeout=soon", "whole number"),
    ],
)
def test_bad_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError, match=message):
        connect_args(url)


def test_ssl_true_refuses_a_server_without_tls():
    """TLS asked for means TLS or nothing: never a quiet plaintext fallback."""
    with pytest.raises(SourceUnavailable, match="SSL"):
        connect("mysql://root:@127.0.0.1:3306/?ssl=true")


def test_unreachable_database_error_names_host_not_password():
    with pytest.raises(SourceUnavailable) as caught:
        connect(CLOSED_PORT_URL)
    message = str(caught.value)
    assert "127.0.0.1:1" in message
    assert "pw-that-must-not-leak" not in message


def test_wrong_password_error_has_no_password():
    with pytest.raises(SourceUnavailable) as caught:
        connect("mysql://nobody_here:wrong-secret-pw@127.0.0.1:3306/")
    assert "wrong-secret-pw" not in str(caught.value)
    assert "1045" in str(caught.value)  # access denied


def test_redact_url_hides_only_the_password():
    assert redact_url("mysql://app:s3cret@db:3306/x?ssl=true") == "mysql://app:***@db:3306/x?ssl=true"
    assert redact_url("mysql://app@db/x") == "mysql://app@db/x"


def test_db_url_order_override_then_variable_then_parameter():
    conf = load_settings({"LOOKOUT_DB_URL": "mysql://env@db/x", "LOOKOUT_DB_URL_PARAM": "/lookout/db"})
    assert db_url(conf, "mysql://cli@db/x") == "mysql://cli@db/x"
    assert db_url(conf) == "mysql://env@db/x"


def test_db_url_missing_names_both_variables():
    with pytest.raises(ConfigError, match="LOOKOUT_DB_URL or LOOKOUT_DB_URL_PARAM"):
        db_url(load_settings({}))


def test_db_url_from_ssm_secure_string(aws, monkeypatch):
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/lookout/edge/db-url", Value="mysql://app:from-ssm@db/x", Type="SecureString"
    )
    monkeypatch.setenv("LOOKOUT_DB_URL_PARAM", "/lookout/edge/db-url")  # the name its policy grants
    assert db_url(load_settings(os.environ)) == "mysql://app:from-ssm@db/x"


def test_missing_ssm_parameter_is_source_unavailable(aws, monkeypatch):
    monkeypatch.setenv("LOOKOUT_DB_URL_PARAM", "/lookout/edge/absent")
    with pytest.raises(SourceUnavailable, match="/lookout/edge/absent"):
        db_url(load_settings(os.environ))


def test_default_query_streams_live_keys_only(lookout_db):
    live = lookout_db.insert_key(key_id=1, project_id=1, organization_id=1, rate_limit_per_minute=60)
    revoked = lookout_db.insert_key(key_id=2, project_id=1)
    lookout_db.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id = 2")
    lookout_db.insert_key(key_id=3, project_id=2, organization_id=1)
    lookout_db.execute("UPDATE projects SET deleted_at = NOW() WHERE id = 2")
    lookout_db.insert_key(key_id=4, project_id=3, organization_id=2, billing_status="delinquent")

    with connect(lookout_db.url) as conn:
        assert conn.cursorclass is pymysql.cursors.SSDictCursor  # unbuffered: rows arrive as read
        rows = list(stream_rows(conn, DEFAULT_KEYS_QUERY, batch_size=1))

    assert [row["key_id"] for row in rows] == [1, 4]
    assert rows[0]["api_key"] == live != revoked
    assert (rows[0]["billing_ok"], rows[0]["rate_limit_per_minute"]) == (1, 60)
    assert (rows[1]["billing_ok"], rows[1]["rate_limit_per_minute"]) == (0, None)


def test_stream_is_lazy_and_survives_the_connection_for_many_rows(lookout_db):
    lookout_db.insert_key(key_id=1)
    lookout_db.executemany(
        "INSERT INTO project_api_keys (id, project_id, `key`) VALUES (%s, 1, %s)",
        [(i, f"bulk-{i}") for i in range(2, 3002)],
    )
    with connect(lookout_db.url) as conn:
        rows = stream_rows(conn, DEFAULT_KEYS_QUERY, batch_size=100)
        first = next(rows)
        assert first["key_id"] == 1
        assert sum(1 for _ in rows) == 3000


def test_query_missing_contract_columns_fails_before_any_row(lookout_db):
    lookout_db.insert_key(key_id=1)
    with connect(lookout_db.url) as conn, pytest.raises(SourceUnavailable, match="api_key, project_id"):
        next(stream_rows(conn, "SELECT id AS key_id FROM project_api_keys"))


def test_broken_query_is_source_unavailable(lookout_db):
    with connect(lookout_db.url) as conn, pytest.raises(SourceUnavailable, match="key query failed"):
        next(stream_rows(conn, "SELECT * FROM no_such_table"))
