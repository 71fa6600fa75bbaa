"""Customer managed KMS keys for the queues and the tables: the stacks use them when given, and
each function gets exactly the key grants its calls need, only through the service that uses the key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from edgectl.cli import main
from edgectl.cmd_render_policies import FUNCTIONS, RenderError, merge_template, render_stage
from edgectl.resources import create_resources, load_template
from tests.functional import test_iam

chalice_dir = test_iam.chalice_dir  # the fixture: a scratch copy of .chalice/config.json
ACCOUNT = "123456789012"
REGION = "eu-west-1"
QUEUE_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
TABLE_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/66666666-7777-8888-9999-000000000000"
# Sending to an encrypted queue makes a data key and reads it back; receiving reads it. DynamoDB
# decrypts the table key with the caller's rights (and describes the key).
QUEUE_GRANTS = {"kms:Decrypt", "kms:GenerateDataKey"}
TABLE_GRANTS = {"kms:Decrypt", "kms:DescribeKey"}
USES = {  # function: (sends to or receives from the queues, reads or writes the tables)
    "api_handler": (True, True),
    "forward_events": (True, False),
    "sync_keys": (False, True),
    "ship_logs": (True, True),
}


def kms_statements(chalice_dir: Path, function: str) -> dict[str, tuple[set[str], Any, Any]]:
    document = json.loads((chalice_dir / f"policy-prod-{function}.json").read_text())
    return {
        s["Sid"]: (set(s["Action"]), s["Resource"], s.get("Condition"))
        for s in document["Statement"]
        if any(a.startswith("kms:") for a in s["Action"])
    }


def test_chalice_deploy_policies_grant_each_key_only_to_its_users_and_only_via_its_service(chalice_dir: Path) -> None:
    render_stage(
        chalice_dir, "prod", account=ACCOUNT, region=REGION, queue_kms_key_arn=QUEUE_KEY, table_kms_key_arn=TABLE_KEY
    )
    for function, (queues, tables) in USES.items():
        expected = {}
        if queues:
            via = {"StringEquals": {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"}}
            expected["QueueKmsKey"] = (QUEUE_GRANTS, QUEUE_KEY, via)
        if tables:
            via = {"StringEquals": {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"}}
            expected["TableKmsKey"] = (TABLE_GRANTS, TABLE_KEY, via)
        assert kms_statements(chalice_dir, function) == expected, function


def test_without_keys_no_function_may_use_kms(chalice_dir: Path) -> None:
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION)
    assert all(kms_statements(chalice_dir, function) == {} for function in FUNCTIONS)


def test_a_key_that_is_not_a_key_arn_is_refused(chalice_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alias = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/edge"
    with pytest.raises(RenderError, match="--queue-kms-key-arn must be a KMS key ARN"):
        render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION, queue_kms_key_arn=alias)
    args = ["render-policies", "--stage", "prod", "--account", ACCOUNT, "--region", REGION]
    assert main([*args, "--chalice-dir", str(chalice_dir), "--table-kms-key-arn", "my-key"]) == 2
    assert "--table-kms-key-arn must be a KMS key ARN" in capsys.readouterr().err


def test_the_package_stack_grants_under_the_keys_conditions(chalice_dir: Path) -> None:
    render_stage(chalice_dir, "prod", cloudformation=True)
    for function, (queues, tables) in USES.items():
        document = json.loads((chalice_dir / f"policy-prod-{function}.json").read_text())
        conditional = {s["Fn::If"][0]: s["Fn::If"][1] for s in document["Statement"] if "Fn::If" in s}
        assert ("HasQueueKmsKey" in conditional) == queues and ("HasTableKmsKey" in conditional) == tables
        for condition, parameter, service in (
            ("HasQueueKmsKey", "QueueKmsKeyArn", "sqs"),
            ("HasTableKmsKey", "TableKmsKeyArn", "dynamodb"),
        ):
            if condition in conditional:
                statement = conditional[condition]
                assert statement["Resource"] == {"Ref": parameter}
                assert statement["Condition"] == {
                    "StringEquals": {"kms:ViaService": {"Fn::Sub": service + ".${AWS::Region}.amazonaws.com"}}
                }


@pytest.mark.parametrize("stack", ["standalone", "merged"])
def test_both_stacks_encrypt_queues_and_tables_with_the_key_when_given(stack: str) -> None:
    template = load_template() if stack == "standalone" else merge_template()
    for name in ("EventsQueue", "DeadLetterQueue"):
        assert template["Resources"][name]["Properties"]["KmsMasterKeyId"] == {
            "Fn::If": ["HasQueueKmsKey", {"Ref": "QueueKmsKeyArn"}, {"Ref": "AWS::NoValue"}]
        }
    for name in ("KeysTable", "IdempotencyTable"):
        assert template["Resources"][name]["Properties"]["SSESpecification"] == {
            "Fn::If": [
                "HasTableKmsKey",
                {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "TableKmsKeyArn"}},
                {"Ref": "AWS::NoValue"},
            ]
        }
    for parameter in ("QueueKmsKeyArn", "TableKmsKeyArn"):
        spec = template["Parameters"][parameter]
        assert spec["Default"] == ""  # the AWS-owned / SQS-managed key
        pattern = re.compile(spec["AllowedPattern"])
        assert pattern.match("") and pattern.match(QUEUE_KEY)
        assert not pattern.match(f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/edge") and not pattern.match("my-key")
        assert spec["ConstraintDescription"].startswith(f"{parameter} must be empty or a KMS key ARN")


def test_the_local_stack_creates_the_queues_with_the_key() -> None:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        names = create_resources(session, overrides={"QueueKmsKeyArn": QUEUE_KEY})
        sqs = session.client("sqs")
        for url in (names.queue_url, names.dlq_url):
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])["Attributes"]
            assert attributes["KmsMasterKeyId"] == QUEUE_KEY
        plain = create_resources(session, prefix="plain-")
        attributes = sqs.get_queue_attributes(QueueUrl=plain.queue_url, AttributeNames=["All"])["Attributes"]
        assert "KmsMasterKeyId" not in attributes
