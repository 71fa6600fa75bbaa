"""A private Lookout: the key sync (optionally the forwarder) in the operator's subnets, with
exactly the network-interface rights Lambda needs, endpoints on request, and database
credentials from an RDS-managed secret (both deploy paths)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgectl.cmd_render_policies import FUNCTIONS, merge_template, render_stage
from tests.functional import test_iam

chalice_dir = test_iam.chalice_dir  # the fixture: a scratch copy of .chalice/config.json
ACCOUNT = "123456789012"
REGION = "eu-west-1"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!cluster-0a1b2c-AbCdEf"
ENI_ACTIONS = {
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:UnassignPrivateIpAddresses",
}
DESCRIBE_ACTIONS = {"ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}  # EC2 grants these only on "*"
SPLIT = {"SubnetIds": {"Fn::Split": [",", {"Ref": "SyncSubnetIds"}]}}


def statements(chalice_dir: Path, function: str) -> dict[str, dict[str, Any]]:
    document = json.loads((chalice_dir / f"policy-prod-{function}.json").read_text())
    return {s["Sid"]: s for s in document["Statement"]}


def test_the_sync_and_optionally_the_forwarder_join_the_subnets() -> None:
    resources = merge_template()["Resources"]
    vpc = {**SPLIT, "SecurityGroupIds": {"Fn::Split": [",", {"Ref": "SyncSecurityGroupIds"}]}}
    assert resources["SyncKeys"]["Properties"]["VpcConfig"] == {"Fn::If": ["SyncInVpc", vpc, {"Ref": "AWS::NoValue"}]}
    assert resources["ForwardEvents"]["Properties"]["VpcConfig"] == {
        "Fn::If": ["ForwarderRunsInVpc", vpc, {"Ref": "AWS::NoValue"}]
    }
    assert "VpcConfig" not in resources.get("APIHandler", {}).get("Properties", {})  # the edge stays public
    conditions = merge_template()["Conditions"]
    assert conditions["SyncInVpc"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SyncSubnetIds"}, ""]}]}
    assert conditions["ForwarderRunsInVpc"] == {
        "Fn::And": [{"Condition": "SyncInVpc"}, {"Fn::Equals": [{"Ref": "ForwarderInVpc"}, "true"]}]
    }


def test_package_policies_grant_network_interfaces_only_in_a_vpc(chalice_dir: Path) -> None:
    render_stage(chalice_dir, "prod", cloudformation=True)
    arn = "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}"
    for function in FUNCTIONS:
        document = json.loads((chalice_dir / f"policy-prod-{function}.json").read_text())
        conditional = [(s["Fn::If"][0], s["Fn::If"][1]) for s in document["Statement"] if "Fn::If" in s]
        vpc = [(c, b) for c, b in conditional if c in ("SyncInVpc", "ForwarderRunsInVpc")]
        condition = {"sync_keys": "SyncInVpc", "forward_events": "ForwarderRunsInVpc"}.get(function)
        if condition is None:
            assert vpc == [], function
            continue
        assert [(c, b["Sid"], set(b["Action"]), b["Resource"]) for c, b in vpc] == [
            (
                condition,
                "VpcNetworkInterfaces",
                ENI_ACTIONS,
                [{"Fn::Sub": f"{arn}:{kind}/*"} for kind in ("network-interface", "security-group", "subnet")],
            ),
            (condition, "VpcDescribe", DESCRIBE_ACTIONS, "*"),
        ]
        secret = [b for c, b in conditional if c == "HasDbSecret"]
        assert secret == (
            [
                {
                    "Effect": "Allow",
                    "Sid": "ReadDatabaseSecret",
                    "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": {"Ref": "DbSecretArn"},
                }
            ]
            if function == "sync_keys"
            else []
        )


def test_chalice_deploy_policies_follow_the_stages_subnets_and_secret(chalice_dir: Path) -> None:
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION)
    for function in FUNCTIONS:
        assert not {"VpcNetworkInterfaces", "VpcDescribe", "ReadDatabaseSecret"} & set(
            statements(chalice_dir, function)
        )
    config = json.loads((chalice_dir / "config.json").read_text())
    stage = config["stages"]["prod"]
    stage["lambda_functions"]["sync_keys"] |= {"subnet_ids": ["subnet-0a1b2c3d"], "security_group_ids": ["sg-0a1b2c3d"]}
    stage["environment_variables"]["LOOKOUT_DB_SECRET_ARN"] = SECRET
    (chalice_dir / "config.json").write_text(json.dumps(config))
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=REGION)
    sync = statements(chalice_dir, "sync_keys")
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
    assert (set(sync["VpcNetworkInterfaces"]["Action"]), sync["VpcNetworkInterfaces"]["Resource"]) == (
        ENI_ACTIONS,
        [f"{arn}:network-interface/*", f"{arn}:security-group/*", f"{arn}:subnet/*"],
    )
    assert (set(sync["VpcDescribe"]["Action"]), sync["VpcDescribe"]["Resource"]) == (DESCRIBE_ACTIONS, "*")
    assert (sync["ReadDatabaseSecret"]["Action"], sync["ReadDatabaseSecret"]["Resource"]) == (
        ["secretsmanager:GetSecretValue"],
        SECRET,
    )
    for function in ("api_handler", "forward_events", "ship_logs"):  # only the function in the VPC
        assert not {"VpcNetworkInterfaces", "VpcDescribe", "ReadDatabaseSecret"} & set(
            statements(chalice_dir, function)
        )


def test_endpoints_are_created_on_request_for_what_the_functions_call() -> None:
    template = merge_template()
    resources = template["Resources"]
    dynamodb = resources["DynamoDbGatewayEndpoint"]
    assert (dynamodb["Condition"], dynamodb["Properties"]["VpcEndpointType"]) == ("CreatesVpcEndpoints", "Gateway")
    assert dynamodb["Properties"]["RouteTableIds"] == {"Fn::Split": [",", {"Ref": "VpcRouteTableIds"}]}
    for name, service, condition in (
        ("SsmEndpoint", "ssm", "CreatesVpcEndpoints"),
        ("SecretsManagerEndpoint", "secretsmanager", "CreatesSecretsEndpoint"),
        ("SqsEndpoint", "sqs", "CreatesSqsEndpoint"),
    ):
        endpoint = resources[name]
        assert endpoint["Condition"] == condition
        assert endpoint["Properties"]["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}." + service}
        assert endpoint["Properties"]["PrivateDnsEnabled"] is True
        assert endpoint["Properties"]["SubnetIds"] == SPLIT["SubnetIds"]
    assert template["Conditions"]["CreatesSecretsEndpoint"] == {
        "Fn::And": [{"Condition": "CreatesVpcEndpoints"}, {"Condition": "HasDbSecret"}]
    }
    rules = template["Rules"]
    assert rules["VpcNeedsSecurityGroups"]["Assertions"][0]["AssertDescription"].startswith(
        "SyncSecurityGroupIds is required with SyncSubnetIds"
    )
    assert "CreateVpcEndpoints needs" in rules["EndpointsNeedTheVpc"]["Assertions"][0]["AssertDescription"]


def test_the_functions_are_told_the_secret_only_when_there_is_one() -> None:
    resources = merge_template()["Resources"]
    variables = resources["SyncKeys"]["Properties"]["Environment"]["Variables"]
    assert variables["LOOKOUT_DB_SECRET_ARN"] == {
        "Fn::If": ["HasDbSecret", {"Ref": "DbSecretArn"}, {"Ref": "AWS::NoValue"}]
    }
