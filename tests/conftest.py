"""Shared fixtures: a clean environment per test, moto AWS with the stack's resources, keys."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib import aws as aws_clients
from chalicelib import ingest
from chalicelib.config import ENV_NAMES, settings
from chalicelib.keys import hash_key
from edgectl.resources import StackNames, create_resources

REGION = "us-east-1"


def reset_container_state() -> None:
    """What a new Lambda container would start from."""
    settings.cache_clear()
    aws_clients.reset_clients()
    ingest.reset()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("LOOKOUT_", "AWS_")) or name in ENV_NAMES.values():
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LookoutEdge")
    reset_container_state()
    yield
    reset_container_state()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[StackNames]:
    """moto in-process with the tables and queues of infra/resources.json, env pointed at them."""
    with mock_aws():
        names = create_resources(boto3.Session(region_name=REGION))
        for key, value in names.environment().items():
            monkeypatch.setenv(key, value)
        reset_container_state()
        yield names


def key_item(raw_key: str, project_id: str = "42", organization_id: str = "7", **attributes: Any) -> dict:
    """A keys-table item in low-level form; extra keyword attributes are typed by value."""
    item: dict[str, Any] = {
        "key_hash": {"S": hash_key(raw_key)},
        "key_id": {"S": "9"},
        "project_id": {"S": project_id},
        "organization_id": {"S": organization_id},
        "billing_ok": {"BOOL": True},
    }
    for name, value in attributes.items():
        if isinstance(value, bool):
            item[name] = {"BOOL": value}
        elif isinstance(value, (int, float)):
            item[name] = {"N": str(value)}
        elif isinstance(value, (list, tuple)):
            item[name] = {"L": [{"S": v} for v in value]}
        elif value is None:
            item.pop(name, None)
        else:
            item[name] = {"S": str(value)}
    return item


@pytest.fixture
def put_key(aws: StackNames) -> Callable[..., dict]:
    """Write a key item: put_key("raw", billing_ok=False, ip_allowlist=["10.0.0.0/8"])."""

    def put(raw_key: str, **attributes: Any) -> dict:
        item = key_item(raw_key, **attributes)
        boto3.client("dynamodb", region_name=REGION).put_item(TableName=aws.keys_table, Item=item)
        return item

    return put


def drain_queue(queue_url: str, wait: int = 0) -> list[dict[str, Any]]:
    """Every message on a queue (body parsed), deleting as it reads."""
    sqs = boto3.client("sqs", region_name=REGION)
    messages = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=wait
        ).get("Messages", [])
        if not got:
            return messages
        for message in got:
            body = json.loads(message["Body"])
            body["_attributes"] = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
            messages.append(body)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def http(aws: StackNames) -> Iterator[Any]:
    """Chalice's test client for the real `app`, on moto."""
    from chalice.test import Client

    from app import app

    with Client(app) as client:
        yield client.http


@pytest.fixture
def lookout_db() -> Iterator[Any]:
    """A fresh, uniquely named MariaDB database (127.0.0.1:3306) with the CONTRACT §7 schema.

    Yields an edgectl.lookoutdb.LookoutDatabase: `.url` (mysql://root:@127.0.0.1:3306/<db>),
    `.execute(sql, params)`, `.executemany`, `.query`, `.insert_key(...)` → raw key.
    The database is dropped afterwards.
    """
    import uuid

    from edgectl.lookoutdb import LOCAL_SERVER_URL, LookoutDatabase, create_database, drop_database

    name = f"lookout_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = create_database(LOCAL_SERVER_URL, name)
    try:
        database = LookoutDatabase(url)
        yield database
        database.close()
    finally:
        drop_database(LOCAL_SERVER_URL, name)
