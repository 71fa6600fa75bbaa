"""Least privilege: every function gets exactly its actions, on its own resources, with no wildcards."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgectl.cli import main
from edgectl.cmd_render_policies import (
    CHALICE_DIR,
    FUNCTIONS,
    RenderError,
    load_policies,
    merge_template,
    render_stage,
)

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ARN = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"

EXPECTED = {
    "api_handler": {
        "dynamodb:GetItem": {
            ARN.format("dynamodb", "table/lookout-edge-keys"),
            ARN.format("dynamodb", "table/lookout-edge-idempotency"),
        },
        "dynamodb:PutItem": {ARN.format("dynamodb", "table/lookout-edge-idempotency")},
        "dynamodb:UpdateItem": {ARN.format("dynamodb", "table/lookout-edge-idempotency")},
        "sqs:SendMessage": {ARN.format("sqs", "lookout-edge-events")},
    },
    "forward_events": {
        "sqs:ReceiveMessage": {ARN.format("sqs", "lookout-edge-events")},
        "sqs:DeleteMessage": {ARN.format("sqs", "lookout-edge-events")},
        "sqs:ChangeMessageVisibility": {ARN.format("sqs", "lookout-edge-events")},
        "sqs:GetQueueAttributes": {ARN.format("sqs", "lookout-edge-events")},
        "sqs:SendMessage": {ARN.format("sqs", "lookout-edge-events-dlq")},
        "ssm:GetParameter": {ARN.format("ssm", "parameter/lookout-edge/{stage}/ingest-edge-token")},
    },
    "sync_keys": {
        action: {ARN.format("dynamodb", "table/lookout-edge-keys")}
        for action in (
            "dynamodb:GetItem",
            "dynamodb:Scan",
            "dynamodb:BatchWriteItem",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            "dynamodb:DescribeTable",
        )
    }
    | {"ssm:GetParameter": {ARN.format("ssm", "parameter/lookout-edge/{stage}/db-url")}},
    "ship_logs": {
        "dynamodb:GetItem": {ARN.format("dynamodb", "table/lookout-edge-keys")},
        "sqs:SendMessage": {ARN.format("sqs", "lookout-edge-events")},
        "ssm:GetParameter": {ARN.format("ssm", "parameter/lookout-edge/{stage}/tail-api-key")},
    },
}
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}


def lambda_name(stage: str, function: str) -> str:
    return f"lookout-edge-{stage}" if function == "api_handler" else f"lookout-edge-{stage}-{function}"


@pytest.fixture
def chalice_dir(tmp_path: Path) -> Path:
    """A scratch copy of .chalice/config.json to render into."""
    target = tmp_path / ".chalice"
    target.mkdir()
    shutil.copy(CHALICE_DIR / "config.json", target / "config.json")
    return target


def grants(document: dict[str, Any]) -> dict[str, set[str]]:
    """action -> resources, flattened over the statements."""
    granted: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in statement["Action"]:
            granted.setdefault(action, set()).update(resources)
    return granted


def policy(chalice_dir: Path, stage: str, function: str) -> dict[str, Any]:
    return json.loads((chalice_dir / f"policy-{stage}-{function}.json").read_text())


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_function_gets_exactly_its_actions_on_its_resources(chalice_dir: Path, stage: str) -> None:
    render_stage(chalice_dir, stage, account=ACCOUNT, region=REGION)
    for function, expected in EXPECTED.items():
        granted = grants(policy(chalice_dir, stage, function))
        logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{lambda_name(stage, function)}:*"
        assert {action: granted.pop(action) for action in LOG_ACTIONS} == {action: {logs} for action in LOG_ACTIONS}
        assert granted == {action: {r.format(stage=stage) for r in arns} for action, arns in expected.items()}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_no_wildcards_beyond_the_own_log_streams(chalice_dir: Path, stage: str) -> None:
    render_stage(chalice_dir, stage, account=ACCOUNT, region=REGION)
    for function in FUNCTIONS:
        for action, resources in grants(policy(chalice_dir, stage, function)).items():
            assert "*" not in action
            for resource in resources:
                if action in LOG_ACTIONS:
                    # Lambda names its log streams at run time: only the stream part may be open.
                    assert resource.count("*") == 1 and resource.endswith(f"/{lambda_name(stage, function)}:*")
                else:
                    assert "*" not in resource and "?" not in resource


def test_rendering_for_chalice_deploy_points_the_stage_at_the_account_queues(chalice_dir: Path) -> None:
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION)
    env = json.loads((chalice_dir / "config.json").read_text())["stages"]["prod"]["environment_variables"]
    assert env["LOOKOUT_EDGE_QUEUE_URL"] == f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/lookout-edge-events"
    assert env["LOOKOUT_EDGE_DLQ_URL"] == f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/lookout-edge-events-dlq"


def test_a_customer_managed_key_adds_decrypt_only_via_ssm_and_only_where_secrets_are_read(chalice_dir: Path) -> None:
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0f6c2f0e-1111-2222-3333-444455556666"
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION, kms_key_arn=key)
    for function in FUNCTIONS:
        statements = [s for s in policy(chalice_dir, "prod", function)["Statement"] if "kms:Decrypt" in s["Action"]]
        if function == "api_handler":
            assert statements == []
        else:
            assert [(s["Resource"], s["Condition"]) for s in statements] == [
                (key, {"StringEquals": {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}})
            ]


def test_xray_permissions_only_when_the_stage_traces(chalice_dir: Path) -> None:
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION)
    assert not any(a.startswith("xray:") for a in grants(policy(chalice_dir, "prod", "api_handler")))
    config = json.loads((chalice_dir / "config.json").read_text())
    config["stages"]["prod"]["xray"] = True
    (chalice_dir / "config.json").write_text(json.dumps(config))
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION)
    for function in FUNCTIONS:
        granted = grants(policy(chalice_dir, "prod", function))
        # X-Ray has no resource-level permissions: AWS requires "*" here.
        assert granted["xray:PutTraceSegments"] == granted["xray:PutTelemetryRecords"] == {"*"}


def test_cloudformation_policies_take_every_arn_from_the_stack(chalice_dir: Path) -> None:
    render_stage(chalice_dir, "prod", cloudformation=True)
    template = merge_template()
    known = set(template["Parameters"]) | {"AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName"}
    for function in FUNCTIONS:
        text = json.dumps(policy(chalice_dir, "prod", function))
        assert ACCOUNT not in text and "000000000000" not in text
        assert set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", text)) <= known
        statements = policy(chalice_dir, "prod", function)["Statement"]
        conditional = [s for s in statements if "Fn::If" in s]
        expected = {
            "api_handler": ["HasHomeRegion", "HasQueueKmsKey", "HasTableKmsKey"],
            "forward_events": ["HasSinksParameter", "HasSecretsKmsKey", "HasQueueKmsKey"],
            "sync_keys": ["HasSecretsKmsKey", "HasTableKmsKey"],
            "ship_logs": ["HasSecretsKmsKey", "HasQueueKmsKey", "HasTableKmsKey"],
        }[function]
        assert [s["Fn::If"][0] for s in conditional] == expected
        for statement in statements:
            body = statement["Fn::If"][1] if "Fn::If" in statement else statement
            assert all("*" not in action for action in body["Action"])
    assert set(template["Conditions"]) >= {"HasSecretsKmsKey", "HasHomeRegion", "HasSinksParameter"}


def test_every_placeholder_in_the_policy_source_has_a_value() -> None:
    template = merge_template()
    known = set(template["Parameters"]) | {"AWS::Partition", "AWS::Region", "AWS::AccountId", "FunctionName"}
    used = set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", json.dumps(load_policies())))
    assert used <= known
    assert set(load_policies()) == set(FUNCTIONS)


def test_bad_arguments_are_refused_without_writing(chalice_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RenderError, match="12 digits"):
        render_stage(chalice_dir, "prod", account="1234", region=REGION)
    with pytest.raises(RenderError, match="stage 'qa'"):
        render_stage(chalice_dir, "qa", account=ACCOUNT, region=REGION)
    assert main(["render-policies", "--stage", "prod", "--chalice-dir", str(chalice_dir)]) == 2
    assert "--account" in capsys.readouterr().err
    assert sorted(p.name for p in chalice_dir.iterdir()) == ["config.json"]


def test_the_config_turns_off_policy_autogeneration_and_names_a_file_per_function() -> None:
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    assert config["app_name"] == "lookout-edge"
    assert config["autogen_policy"] is False
    for stage in ("dev", "prod"):
        functions = config["stages"][stage]["lambda_functions"]
        assert {fn: functions[fn]["iam_policy_file"] for fn in FUNCTIONS} == {
            fn: f"policy-{stage}-{fn}.json" for fn in FUNCTIONS
        }


def test_a_stage_with_sinks_in_ssm_lets_the_forwarder_read_them(chalice_dir: Path) -> None:
    config_path = chalice_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["stages"]["prod"]["environment_variables"]["LOOKOUT_EDGE_SINKS_PARAM"] = "/lookout-edge/prod/sinks"
    config_path.write_text(json.dumps(config))
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION)
    granted = grants(policy(chalice_dir, "prod", "forward_events"))
    assert granted["ssm:GetParameter"] == {
        ARN.format("ssm", "parameter/lookout-edge/prod/ingest-edge-token"),
        ARN.format("ssm", "parameter/lookout-edge/prod/sinks"),
    }
