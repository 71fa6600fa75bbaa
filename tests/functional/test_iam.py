"""Least privilege: every function gets exactly its actions, on its own resources (wildcards only where AWS
requires them), and the AWS calls of every test are judged against those policies (edgectl/iam_enforce.py)."""

from __future__ import annotations

import json
import os
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
from edgectl.iam_enforce import DEFAULT_ACCOUNT as MOTO_ACCOUNT
from edgectl.iam_enforce import DEPLOY_PATHS, allows, rendered_policies, required_permissions, resolve

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
        # A claim of a request refused with 429 is deleted (idempotency.forget).
        "dynamodb:DeleteItem": {ARN.format("dynamodb", "table/lookout-edge-idempotency")},
        "sqs:SendMessage": {ARN.format("sqs", "lookout-edge-events")},
    },
    "forward_events": {
        "sqs:ReceiveMessage": {ARN.format("sqs", "lookout-edge-events")},
        "sqs:DeleteMessage": {ARN.format("sqs", "lookout-edge-events")},
        "sqs:ChangeMessageVisibility": {ARN.format("sqs", "lookout-edge-events")},
        "sqs:GetQueueAttributes": {ARN.format("sqs", "lookout-edge-events")},
        # The DLQ copy, and the copy that replaces a partly delivered message (settle.execute).
        "sqs:SendMessage": {ARN.format("sqs", "lookout-edge-events-dlq"), ARN.format("sqs", "lookout-edge-events")},
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
            "api_handler": [
                "HasHomeRegion",
                "HasFallbackQueue",
                "SpillsToHomeRegion",
                "HasQueueKmsKey",
                "HasTableKmsKey",
            ],
            "forward_events": [
                "HasSinksParameter",
                "HasSecretsKmsKey",
                "HasQueueKmsKey",
                "ForwarderRunsInVpc",
                "ForwarderRunsInVpc",
            ],
            "sync_keys": ["HasDbSecret", "HasSecretsKmsKey", "HasTableKmsKey", "SyncInVpc", "SyncInVpc"],
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


# --- the calls the functions make, judged as AWS judges them (edgectl.iam_enforce, tests/conftest.py `iam`) ---


def test_a_429_releases_its_idempotency_claim_under_the_edges_policy(http, put_key, aws, iam) -> None:
    """The edge deletes the claim of a request it refused with 429 (DeleteItem on the idempotency
    table): denied, the claim would stay pending and the client's retry would get 409."""
    put_key("lk_iam_429", rate_limit_per_minute=1)
    headers = {"content-type": "application/json", "x-api-key": "lk_iam_429"}
    assert http.post("/api/ingest", body=b'{"n": 1}', headers=headers).status_code == 202
    retry = {**headers, "idempotency-key": "retried-after-429"}
    first = http.post("/api/ingest", body=b'{"n": 2}', headers=retry)
    again = http.post("/api/ingest", body=b'{"n": 2}', headers=retry)
    assert (first.status_code, again.status_code) == (429, 429)  # not 409: the claim was released
    assert ("api_handler", "dynamodb:DeleteItem", arn_of_table(aws.idempotency_table)) in iam.calls
    assert iam.denials == []


def test_a_partly_delivered_fan_out_is_requeued_under_the_forwarders_policy(aws, iam, monkeypatch) -> None:
    """Lookout took the event, a sink did not: the forwarder sends a copy recording that to the main
    queue (SendMessage there). Denied, it would retry the original and Lookout would get it again."""
    from tests.fake_lookout import FakeLookout, enqueue, forward_like_lambda, queue_message, sqs_event
    from tests.fake_sinks import StrictLoki

    lookout, loki = FakeLookout().start(), StrictLoki().start()
    loki.down = 503
    try:
        monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", lookout.url)
        monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", "edge-token-iam")
        monkeypatch.setenv(
            "LOOKOUT_EDGE_SINKS", json.dumps([{"name": "loki", "type": "loki", "url": loki.url, "signals": ["log"]}])
        )
        enqueue(aws.queue_url, [queue_message({"entries": [{"message": "m"}]}, signal="log", path="/api/ingest/log")])
        assert forward_like_lambda(sqs_event(aws.queue_url)) == {"batchItemFailures": []}
    finally:
        lookout.stop()
        loki.stop()
    queue = f"arn:aws:sqs:us-east-1:{MOTO_ACCOUNT}:{aws.queue_url.rsplit('/', 1)[-1]}"
    assert ("forward_events", "sqs:SendMessage", queue) in iam.calls
    assert iam.denials == []


def arn_of_table(name: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:{MOTO_ACCOUNT}:table/{name}"


def test_each_call_needs_the_action_and_resource_aws_checks() -> None:
    queue = "https://sqs.eu-west-1.amazonaws.com/210987654321/lookout-edge-events"
    assert required_permissions("sqs", "SendMessageBatch", {"QueueUrl": queue}, "eu-west-1", ACCOUNT) == [
        ("sqs:SendMessage", "arn:aws:sqs:eu-west-1:210987654321:lookout-edge-events")
    ]
    assert required_permissions("sqs", "DeleteMessageBatch", {"QueueUrl": queue}, REGION, ACCOUNT)[0][0] == (
        "sqs:DeleteMessage"
    )
    writes = {"RequestItems": {"keys": [], "other": []}}
    assert required_permissions("dynamodb", "BatchWriteItem", writes, REGION, ACCOUNT) == [
        ("dynamodb:BatchWriteItem", ARN.format("dynamodb", "table/keys")),
        ("dynamodb:BatchWriteItem", ARN.format("dynamodb", "table/other")),
    ]
    assert required_permissions("ssm", "GetParameter", {"Name": "/a/b"}, REGION, ACCOUNT) == [
        ("ssm:GetParameter", ARN.format("ssm", "parameter/a/b"))
    ]
    assert required_permissions("ssm", "GetParameter", {"Name": "flat"}, REGION, ACCOUNT) == [
        ("ssm:GetParameter", ARN.format("ssm", "parameter/flat"))
    ]
    # No resource-level permissions: IAM checks these against "*".
    assert required_permissions("cloudwatch", "PutMetricData", {}, REGION, ACCOUNT) == [
        ("cloudwatch:PutMetricData", "*")
    ]


def test_patterns_match_as_iam_reads_them() -> None:
    table = ARN.format("dynamodb", "table/keys")
    document = {
        "Statement": [
            {"Effect": "Allow", "Action": "dynamodb:Get*", "Resource": ARN.format("dynamodb", "table/k?ys")},
            {"Effect": "Allow", "Action": ["SQS:sendmessage"], "Resource": "*"},
            {"Effect": "Deny", "Action": "sqs:SendMessage", "Resource": "arn:aws:sqs:*:*:secret-*"},
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": "ssm.eu-west-1.amazonaws.com"}},
            },
        ]
    }
    assert allows(document, "dynamodb:GetItem", table)
    assert not allows(document, "dynamodb:GetItem", table + "-2")  # no trailing match without a `*`
    assert not allows(document, "dynamodb:PutItem", table)
    assert allows(document, "sqs:SendMessage", ARN.format("sqs", "events"))  # actions are case-insensitive
    assert not allows(document, "sqs:SendMessage", ARN.format("sqs", "secret-queue"))  # a Deny wins
    assert not allows(document, "kms:Decrypt", "arn:aws:kms:eu-west-1:1:key/k")  # not called via SSM


def test_cloudformation_intrinsics_resolve_as_the_stack_does() -> None:
    document = {
        "Statement": [
            {"Resource": {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${QueueName}"}},
            {"Fn::If": ["HasHomeRegion", {"Resource": {"Ref": "HomeRegion"}}, {"Ref": "AWS::NoValue"}]},
        ]
    }
    values = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "QueueName": "q"}
    assert resolve(document, {**values, "HomeRegion": "us-east-1"}, {"HasHomeRegion": True}) == {
        "Statement": [{"Resource": ARN.format("sqs", "q")}, {"Resource": "us-east-1"}]
    }
    assert resolve(document, values, {"HasHomeRegion": False}) == {"Statement": [{"Resource": ARN.format("sqs", "q")}]}


FALLBACK = f"https://sqs.ap-southeast-2.amazonaws.com/{ACCOUNT}/spill-here"
STAGE_ENVIRONMENTS = {
    "single region": {},
    "multi-region, sinks in SSM": {
        "LOOKOUT_EDGE_HOME_REGION": "us-east-1",
        "LOOKOUT_EDGE_SINKS_PARAM": "/lookout-edge/prod/sinks",
    },
    "a fallback queue": {"LOOKOUT_EDGE_FALLBACK_QUEUE_URL": FALLBACK},
    "multi-region and a fallback queue": {
        "LOOKOUT_EDGE_HOME_REGION": "us-east-1",
        "LOOKOUT_EDGE_FALLBACK_QUEUE_URL": FALLBACK,
    },
    "the home region": {"LOOKOUT_EDGE_HOME_REGION": REGION},
}


@pytest.mark.parametrize("extra", STAGE_ENVIRONMENTS.values(), ids=STAGE_ENVIRONMENTS.keys())
def test_both_deploy_paths_grant_the_same(extra: dict[str, str]) -> None:
    """`chalice deploy`'s concrete policies and `chalice package`'s, resolved by the stack, are one policy."""
    environment = {
        "LOOKOUT_EDGE_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/events",
        "LOOKOUT_EDGE_DLQ_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/events-dlq",
        "LOOKOUT_INGEST_EDGE_TOKEN_PARAM": "/lookout-edge/prod/ingest-edge-token",
        **extra,
    }
    documents = rendered_policies(environment, ACCOUNT, REGION)
    assert set(documents) == set(FUNCTIONS)
    for function, paths in documents.items():
        assert set(paths) == set(DEPLOY_PATHS)
        assert paths["chalice deploy"] == paths["chalice package"], function
    home = "arn:aws:dynamodb:us-east-1:123456789012:table/lookout-edge-keys"
    edge = documents["api_handler"]["chalice deploy"]
    assert allows(edge, "dynamodb:GetItem", home) == (extra.get("LOOKOUT_EDGE_HOME_REGION") == "us-east-1")
    # Spilling: SendMessage on exactly one queue beside its own, the one the edge picks.
    spill_to = {
        "a fallback queue": f"arn:aws:sqs:ap-southeast-2:{ACCOUNT}:spill-here",
        "multi-region and a fallback queue": f"arn:aws:sqs:ap-southeast-2:{ACCOUNT}:spill-here",
        "multi-region, sinks in SSM": f"arn:aws:sqs:us-east-1:{ACCOUNT}:events",  # the home region's own queue
    }.get(next(name for name, value in STAGE_ENVIRONMENTS.items() if value == extra))
    own = ARN.format("sqs", "events")
    assert grants(edge)["sqs:SendMessage"] == {own} | ({spill_to} if spill_to else set())


def test_a_permission_taken_out_of_the_policy_fails_the_call_as_in_aws(http, put_key, aws, iam, tmp_path, monkeypatch):
    """What AWS does to a missing permission, the harness does: the call is AccessDenied, the test fails."""
    from edgectl import cmd_render_policies

    source = json.loads(cmd_render_policies.POLICIES.read_text())
    edge = source["Functions"]["api_handler"]
    source["Functions"]["api_handler"] = [s for s in edge if "sqs:SendMessage" not in s["Action"]]
    stripped = tmp_path / "policies.json"
    stripped.write_text(json.dumps(source))
    monkeypatch.setattr(cmd_render_policies, "POLICIES", stripped)
    put_key("lk_iam_stripped")
    headers = {"content-type": "application/json", "x-api-key": "lk_iam_stripped"}
    assert http.post("/api/ingest", body=b'{"n": 1}', headers=headers).status_code == 503
    queue = f"arn:aws:sqs:us-east-1:{MOTO_ACCOUNT}:{aws.queue_url.rsplit('/', 1)[-1]}"
    assert {(d.function, d.action, d.resource, d.paths) for d in iam.denials} == {
        ("api_handler", "sqs:SendMessage", queue, DEPLOY_PATHS)
    }
    iam.denials.clear()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_function_may_put_metrics_they_go_to_its_own_log_as_emf(function: str) -> None:
    """Metrics are Powertools' embedded metric format on stdout: Lambda writes them to the function's
    log group, CloudWatch extracts them; no function needs (or has) cloudwatch:PutMetricData."""
    environment = {"LOOKOUT_EDGE_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/events"}
    for document in rendered_policies(environment, ACCOUNT, REGION)[function].values():
        assert not allows(document, "cloudwatch:PutMetricData", "*")


def test_moto_with_iam_access_control_judges_sqs_calls_as_the_harness_does(aws) -> None:
    """moto's own IAM check (set_initial_no_auth_action_count) judges SQS by queue ARN: with users
    holding exactly each function's rendered policy, it agrees with edgectl.iam_enforce on every
    single-message queue operation of each function on both queues. (It judges the batch APIs by
    their own names, which AWS does not, and DynamoDB and SSM against resource "*" only.)"""
    import boto3
    from botocore.exceptions import ClientError
    from moto.core import set_initial_no_auth_action_count

    documents = rendered_policies(os.environ, MOTO_ACCOUNT, "us-east-1")
    queues = {"queue": aws.queue_url, "dlq": aws.dlq_url}
    operations = {
        "sqs:SendMessage": lambda sqs, url: sqs.send_message(QueueUrl=url, MessageBody="{}"),
        "sqs:ReceiveMessage": lambda sqs, url: sqs.receive_message(QueueUrl=url, VisibilityTimeout=0),
        "sqs:DeleteMessage": lambda sqs, url: sqs.delete_message(QueueUrl=url, ReceiptHandle="none"),
        "sqs:ChangeMessageVisibility": lambda sqs, url: sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle="none", VisibilityTimeout=0
        ),
        "sqs:GetQueueAttributes": lambda sqs, url: sqs.get_queue_attributes(QueueUrl=url),
    }

    @set_initial_no_auth_action_count(3 * len(FUNCTIONS))  # creating the users is not judged
    def verdicts() -> dict[tuple[str, str, str], tuple[bool, bool]]:
        iam_client = boto3.client("iam", region_name="us-east-1")
        clients = {}
        for function in FUNCTIONS:
            iam_client.create_user(UserName=function)
            document = json.dumps(documents[function]["chalice deploy"])
            iam_client.put_user_policy(UserName=function, PolicyName="own", PolicyDocument=document)
            key = iam_client.create_access_key(UserName=function)["AccessKey"]
            clients[function] = boto3.client(
                "sqs",
                region_name="us-east-1",
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=key["SecretAccessKey"],
            )
        found = {}
        for function, sqs in clients.items():
            for name, url in queues.items():
                resource = f"arn:aws:sqs:us-east-1:{MOTO_ACCOUNT}:{url.rsplit('/', 1)[-1]}"
                for action, call in operations.items():
                    try:
                        call(sqs, url)
                        moto_denies = False
                    except ClientError as exc:
                        moto_denies = exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
                    ours = not allows(documents[function]["chalice deploy"], action, resource)
                    found[(function, name, action)] = (moto_denies, ours)
        return found

    judged = verdicts()
    assert {k: v for k, v in judged.items() if v[0] != v[1]} == {}
    allowed = sorted(k for k, (denied, _) in judged.items() if not denied)
    assert allowed == sorted(
        [("api_handler", "queue", "sqs:SendMessage"), ("ship_logs", "queue", "sqs:SendMessage")]
        + [("forward_events", "dlq", "sqs:SendMessage"), ("forward_events", "queue", "sqs:SendMessage")]
        + [("forward_events", "queue", a) for a in operations if a != "sqs:SendMessage"]
    )


PIECE = """
from botocore.exceptions import ClientError
from chalicelib.contract.keys_item import fetch_key_item
from edgectl.iam_enforce import enforce_if_asked
enforce_if_asked()
try:
    fetch_key_item("not-the-keys-table", "h")
except ClientError as exc:
    print("answered", exc.response["Error"]["Code"], flush=True)
"""


def test_the_local_stacks_pieces_judge_their_calls_and_the_stack_keeps_what_they_refused(tmp_path) -> None:
    """`make dev` and the end-to-end tests: a piece started with the stack's environment judges its own
    calls (edgectl.cmd_local calls enforce_if_asked), prints what it refused, and the stack keeps it
    for the `iam` fixture. The call is refused before it leaves the process: no AWS is needed."""
    import io
    import subprocess
    import sys

    from edgectl.devstack import ROOT, DevStack, StackOptions
    from edgectl.iam_enforce import LOCAL_ENFORCE_VARIABLE

    stack = DevStack(StackOptions(state_dir=tmp_path), out=io.StringIO())
    environment = {**stack.environment(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    assert environment[LOCAL_ENFORCE_VARIABLE] == "enforce"
    piece = subprocess.Popen(
        [sys.executable, "-c", PIECE],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack._pump("piece", piece)
    assert piece.wait(30) == 0
    assert len(stack.iam_denials) == 1 and "dynamodb:GetItem" in stack.iam_denials[0]
    assert "table/not-the-keys-table" in stack.iam_denials[0]
    assert "answered AccessDeniedException" in stack.out.getvalue()
    stack.iam_denials.clear()  # refused on purpose
