"""The local stack comes from the same template as the deployed one: tables, queues, redrive, TTL."""

from __future__ import annotations

import json

import boto3
from moto import mock_aws

from edgectl.resources import LOCAL_TYPES, create_resources, load_template

REGION = "us-east-1"


def test_creates_the_templates_tables_and_queues_with_their_settings() -> None:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        names = create_resources(session, prefix="t1-", overrides={"MaxReceiveCount": 4})
        dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
        assert names.keys_table == "t1-lookout-edge-keys"
        assert names.idempotency_table == "t1-lookout-edge-idempotency"
        keys = dynamodb.describe_table(TableName=names.keys_table)["Table"]
        assert keys["KeySchema"] == [{"AttributeName": "key_hash", "KeyType": "HASH"}]
        ttl = dynamodb.describe_time_to_live(TableName=names.idempotency_table)["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
        queue = sqs.get_queue_attributes(QueueUrl=names.queue_url, AttributeNames=["All"])["Attributes"]
        dlq = sqs.get_queue_attributes(QueueUrl=names.dlq_url, AttributeNames=["All"])["Attributes"]
        assert names.queue_url.endswith("/t1-lookout-edge-events")
        assert json.loads(queue["RedrivePolicy"]) == {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": 4}
        assert dlq["MessageRetentionPeriod"] == str(14 * 24 * 3600)
        assert queue["VisibilityTimeout"] == "360"


def test_is_idempotent_and_exports_the_contract_environment() -> None:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        first = create_resources(session)
        assert create_resources(session) == first
        assert first.environment() == {
            "LOOKOUT_EDGE_KEYS_TABLE": "lookout-edge-keys",
            "LOOKOUT_EDGE_IDEMPOTENCY_TABLE": "lookout-edge-idempotency",
            "LOOKOUT_EDGE_QUEUE_URL": first.queue_url,
            "LOOKOUT_EDGE_DLQ_URL": first.dlq_url,
        }


def test_aws_only_resources_such_as_alarms_are_left_to_cloudformation() -> None:
    template = load_template()
    other = {t["Type"] for t in template["Resources"].values()} - set(LOCAL_TYPES)
    assert "AWS::CloudWatch::Alarm" in other
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        create_resources(session)
        assert session.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
        assert len(session.client("sqs").list_queues()["QueueUrls"]) == 2
        assert len(session.client("dynamodb").list_tables()["TableNames"]) == 2


def test_keeps_the_logical_ids_and_parameters_the_tooling_relies_on() -> None:
    template = load_template()
    assert {"KeysTable", "IdempotencyTable", "EventsQueue", "DeadLetterQueue"} <= set(template["Resources"])
    assert {"KeysTableName", "IdempotencyTableName", "QueueName", "DeadLetterQueueName", "MaxReceiveCount"} <= set(
        template["Parameters"]
    )
