"""Database credentials from an RDS-managed Secrets Manager secret (moto) against the real
MariaDB: used instead of the URL's, and re-read once when a rotation made the cached ones stale."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pymysql
import pytest

from chalicelib.keysync.source_mysql import SourceUnavailable, connect
from chalicelib.runtime.aws import client
from tests.conftest import REGION

ROOT_URL = "mysql://root:@127.0.0.1:3306/"


@pytest.fixture
def rotating_user() -> Iterator[dict[str, Any]]:
    """A MariaDB user of this test, whose password the test rotates."""
    name = f"edge_rot_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)

    def set_password(password: str) -> None:
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER USER '{name}'@'%%' IDENTIFIED BY %s", (password,))

    with admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'first-password'")
    try:
        yield {"name": name, "set_password": set_password}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        admin.close()


def secret_reads() -> list[str]:
    """GetSecretValue calls made by the container's Secrets Manager client from now on."""
    calls: list[str] = []
    client("secretsmanager").meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue", lambda params, **_: calls.append(params["SecretId"])
    )
    return calls


def current_user(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER() AS who")
        who = cursor.fetchone()["who"]
    connection.close()
    return who.split("@")[0]


def test_the_secrets_credentials_replace_the_urls_and_a_rotation_is_picked_up_once(
    aws: Any, rotating_user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(
        Name="rds!db-lookout",
        SecretString=json.dumps({"username": rotating_user["name"], "password": "first-password"}),
    )["ARN"]
    monkeypatch.setenv("LOOKOUT_DB_SECRET_ARN", arn)  # what the stack sets; the sync's policy names it
    reads = secret_reads()
    url = "mysql://ignored:not-the-password@127.0.0.1:3306/"  # the URL's credentials are not used
    assert current_user(connect(url, streaming=False, secret_arn=arn)) == rotating_user["name"]
    assert current_user(connect(url, streaming=False, secret_arn=arn)) == rotating_user["name"]
    assert reads == [arn]  # cached in the container between runs

    rotating_user["set_password"]("second-password")  # RDS rotates: database and secret change
    secrets.put_secret_value(
        SecretId=arn, SecretString=json.dumps({"username": rotating_user["name"], "password": "second-password"})
    )
    assert current_user(connect(url, streaming=False, secret_arn=arn)) == rotating_user["name"]
    assert reads == [arn, arn]  # the refused cached password cost exactly one re-read


def test_credentials_that_stay_wrong_fail_after_one_re_read_without_the_password(
    aws: Any, rotating_user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(
        Name="rds!db-wrong", SecretString=json.dumps({"username": rotating_user["name"], "password": "wrong-pw-42"})
    )["ARN"]
    monkeypatch.setenv("LOOKOUT_DB_SECRET_ARN", arn)
    reads = secret_reads()
    with pytest.raises(SourceUnavailable) as caught:
        connect(ROOT_URL, streaming=False, secret_arn=arn)
    assert "1045" in str(caught.value) and "wrong-pw-42" not in str(caught.value)
    assert reads == [arn, arn]


def test_a_secret_without_credentials_or_unreadable_is_a_clear_failure(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="not-rds", SecretString=json.dumps({"host": "db"}))["ARN"]
    monkeypatch.setenv("LOOKOUT_DB_SECRET_ARN", arn)
    with pytest.raises(SourceUnavailable, match="no string username and password"):
        connect(ROOT_URL, streaming=False, secret_arn=arn)
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:missing-AbCdEf"
    monkeypatch.setenv("LOOKOUT_DB_SECRET_ARN", missing)
    with pytest.raises(SourceUnavailable, match=f"cannot read secret {missing}"):
        connect(ROOT_URL, streaming=False, secret_arn=missing)


def test_the_secret_comes_from_the_environment(
    aws: Any, rotating_user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import reset_container_state

    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(
        Name="rds!db-env",
        SecretString=json.dumps({"username": rotating_user["name"], "password": "first-password"}),
    )["ARN"]
    monkeypatch.setenv("LOOKOUT_DB_SECRET_ARN", arn)
    reset_container_state()
    assert current_user(connect(ROOT_URL, streaming=False)) == rotating_user["name"]
