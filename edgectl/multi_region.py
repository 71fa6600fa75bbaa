"""infra/multi-region/global.json: the global pieces of a multi-region edge, generated here.

One stack, deployed once in the home region: the keys table as a DynamoDB global table with
a replica in every region, a replication-lag alarm per replica, and for every region a Route 53
health check and a latency record for the one hostname (docs/multi-region.md).

Deployed twice (docs/multi-region.md, rollout): first with the regions only, which makes the
table and its replicas the regional edge stacks read; then, once every region's stack has its
custom domain, with the regional domain names, which adds the health checks and the records.

CloudFormation cannot loop over a list parameter where a list of objects is needed (the
table's `Replicas`), so the template has a fixed number of region slots, each under a
condition that its region was given. Writing those slots by hand would be copy-paste;
`python -m edgectl.multi_region` writes them from one description, and a test checks that
the committed file is current (`--check`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgectl.resources import load_template

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_TEMPLATE = ROOT / "infra" / "multi-region" / "global.json"
# Regions besides the home region that the template has slots for (CloudFormation has no loops).
MAX_REPLICAS = 4
NO_VALUE = {"Ref": "AWS::NoValue"}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _slot(list_parameter: str, index: int) -> dict[str, Any]:
    """Item `index` of a comma list parameter, or "" when the list is shorter (padded first:
    Fn::Select past the end fails the whole deployment)."""
    padding = [""] * (MAX_REPLICAS + 1)
    padded = {"Fn::Join": [",", [{"Fn::Join": [",", _ref(list_parameter)]}, *padding]]}
    return {"Fn::Select": [index, {"Fn::Split": [",", padded]}]}


def _region(index: int) -> Any:
    """Slot 0 is the home region (where this stack runs), slots 1.. the replica regions."""
    return _ref("AWS::Region") if index == 0 else _slot("ReplicaRegions", index - 1)


def _has_region(index: int) -> str:
    return f"HasRegion{index}"


def _dns_in(index: int) -> str:
    """The slot's health checks and record exist once the regional domains are given (phase 2)."""
    return "HasRecords" if index == 0 else f"DnsIn{index}"


def _error_alarm_in(index: int) -> str:
    return f"ErrorAlarmIn{index}"


def _alarm_actions() -> dict[str, Any]:
    return {"Fn::If": ["HasAlarmTopic", [_ref("AlarmTopicArn")], NO_VALUE]}


def _parameters() -> dict[str, Any]:
    keys_table = load_template()["Parameters"]["KeysTableName"]
    return {
        "HomeRegion": {
            "Type": "String",
            "AllowedPattern": "^[a-z]{2}(-gov)?-[a-z]+-\\d$",
            "Description": "the region whose MySQL-fed key sync writes the keys table; deploy this stack there",
        },
        "ReplicaRegions": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": f"the other edge regions, at most {MAX_REPLICAS}, e.g. eu-west-1,ap-southeast-2",
        },
        "KeysTableName": {**keys_table, "Description": "the same name every region's edge stack is given"},
        "DomainName": {
            "Type": "String",
            "Default": "",
            "Description": "the one edge hostname, e.g. edge.example.com; every region's stack has a custom "
            "domain of this name with its own regional certificate (its CertificateArn parameter)",
        },
        "HostedZoneId": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": "^(Z[A-Z0-9]+)?$",
            "Description": "the Route 53 public hosted zone of DomainName",
        },
        "RegionalDomainNames": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "each region's EdgeDomainTarget (FrontDoor rest) or EdgeHttpDomainTarget (http) output, "
            "d-....execute-api.REGION.amazonaws.com, home first, then in ReplicaRegions order; empty (the first "
            "deployment): the table only, no DNS",
        },
        "RegionalHostedZoneIds": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "each region's EdgeDomainHostedZoneId (or EdgeHttpDomainHostedZoneId), same order",
        },
        "HealthCheckHosts": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "each region's API host without the custom domain (ID.execute-api.REGION.amazonaws.com, "
            "the host of EndpointURL or EdgeHttpApiEndpoint; the custom domain answers only to DomainName), same order",
        },
        "HealthCheckPath": {
            "Type": "String",
            "Default": "/api/health",
            "Description": "GET path answering 200 on those hosts: /api/health for the REST API's stage api, "
            "/health for an HTTP API ($default stage)",
        },
        "EdgeErrorsAlarmNames": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "optional: each region's edge 5xx alarm (EdgeServerErrorsAlarm), same order; a region "
            "whose alarm fires leaves DNS even while /health answers (its queue or key store is down)",
        },
        "ReplicationLagAlarmMilliseconds": {
            "Type": "Number",
            "Default": 60000,
            "MinValue": 1,
            "Description": "alarm when replication to a region lags more than this (new keys answer there "
            "through the home-region fallback meanwhile)",
        },
        "AlarmTopicArn": {"Type": "String", "Default": "", "Description": "SNS topic for alarms; empty: none"},
    }


def _conditions() -> dict[str, Any]:
    conditions: dict[str, Any] = {
        "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [_ref("AlarmTopicArn"), ""]}]},
        "HasErrorAlarms": {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": [",", _ref("EdgeErrorsAlarmNames")]}, ""]}]},
        "HasRecords": {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": [",", _ref("RegionalDomainNames")]}, ""]}]},
    }
    for index in range(MAX_REPLICAS + 1):
        if index:
            conditions[_has_region(index)] = {"Fn::Not": [{"Fn::Equals": [_region(index), ""]}]}
            conditions[_dns_in(index)] = {"Fn::And": [{"Condition": "HasRecords"}, {"Condition": _has_region(index)}]}
        conditions[_error_alarm_in(index)] = {
            "Fn::And": [{"Condition": "HasErrorAlarms"}, {"Condition": _dns_in(index)}]
        }
    return conditions


def _keys_table() -> dict[str, Any]:
    base = load_template()["Resources"]["KeysTable"]["Properties"]
    replicas: list[Any] = []
    for index in range(MAX_REPLICAS + 1):
        replica = {
            "Region": _region(index),
            "PointInTimeRecoverySpecification": base["PointInTimeRecoverySpecification"],
        }
        replicas.append(replica if index == 0 else {"Fn::If": [_has_region(index), replica, NO_VALUE]})
    return {
        "Type": "AWS::DynamoDB::GlobalTable",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "TableName": _ref("KeysTableName"),
            "BillingMode": base["BillingMode"],
            "AttributeDefinitions": base["AttributeDefinitions"],
            "KeySchema": base["KeySchema"],
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
            "Replicas": replicas,
        },
    }


def _region_resources(index: int) -> dict[str, Any]:
    """One region's health checks and latency record (and, for a replica, its lag alarm)."""
    condition = {"Condition": _dns_in(index)}
    region = _region(index)
    name = {"Fn::Sub": ["${DomainName} in ${Region}", {"Region": region}]}
    endpoint_check = {
        "Type": "AWS::Route53::HealthCheck",
        **condition,
        "Properties": {
            "HealthCheckConfig": {
                "Type": "HTTPS",
                "FullyQualifiedDomainName": _slot("HealthCheckHosts", index),
                "ResourcePath": _ref("HealthCheckPath"),
                "Port": 443,
                "EnableSNI": True,
                "RequestInterval": 30,
                "FailureThreshold": 3,
            },
            "HealthCheckTags": [{"Key": "Name", "Value": name}],
        },
    }
    alarm_condition = _error_alarm_in(index)
    alarm_check = {
        "Type": "AWS::Route53::HealthCheck",
        "Condition": alarm_condition,
        "Properties": {
            "HealthCheckConfig": {
                "Type": "CLOUDWATCH_METRIC",
                "AlarmIdentifier": {"Name": _slot("EdgeErrorsAlarmNames", index), "Region": region},
                "InsufficientDataHealthStatus": "LastKnownStatus",
            },
            "HealthCheckTags": [
                {"Key": "Name", "Value": {"Fn::Sub": ["${DomainName} 5xx in ${Region}", {"Region": region}]}}
            ],
        },
    }
    both_check = {
        "Type": "AWS::Route53::HealthCheck",
        "Condition": alarm_condition,
        "Properties": {
            "HealthCheckConfig": {
                "Type": "CALCULATED",
                "ChildHealthChecks": [_ref(f"EndpointHealth{index}"), _ref(f"ErrorAlarmHealth{index}")],
                "HealthThreshold": 2,
            },
            "HealthCheckTags": [{"Key": "Name", "Value": name}],
        },
    }
    record = {
        "Type": "AWS::Route53::RecordSet",
        **condition,
        "Properties": {
            "HostedZoneId": _ref("HostedZoneId"),
            "Name": _ref("DomainName"),
            "Type": "A",
            "SetIdentifier": region,
            "Region": region,
            "HealthCheckId": {
                "Fn::If": [alarm_condition, _ref(f"RegionHealth{index}"), _ref(f"EndpointHealth{index}")]
            },
            "AliasTarget": {
                "DNSName": _slot("RegionalDomainNames", index),
                "HostedZoneId": _slot("RegionalHostedZoneIds", index),
                "EvaluateTargetHealth": False,
            },
        },
    }
    resources = {
        f"EndpointHealth{index}": endpoint_check,
        f"ErrorAlarmHealth{index}": alarm_check,
        f"RegionHealth{index}": both_check,
        f"LatencyRecord{index}": record,
    }
    if index:
        resources[f"ReplicationLagAlarm{index}"] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Condition": _has_region(index),
            "Properties": {
                "AlarmDescription": {
                    "Fn::Sub": [
                        "Keys replicate to ${Region} late: new keys there are answered by the home-region "
                        "fallback, revocations take effect late.",
                        {"Region": region},
                    ]
                },
                "Namespace": "AWS/DynamoDB",
                "MetricName": "ReplicationLatency",
                "Dimensions": [
                    {"Name": "TableName", "Value": _ref("KeysTable")},
                    {"Name": "ReceivingRegion", "Value": region},
                ],
                "Statistic": "Maximum",
                "Period": 300,
                "EvaluationPeriods": 1,
                "Threshold": _ref("ReplicationLagAlarmMilliseconds"),
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": _alarm_actions(),
                "OKActions": _alarm_actions(),
            },
        }
    return resources


def global_template() -> dict[str, Any]:
    resources: dict[str, Any] = {"KeysTable": _keys_table()}
    for index in range(MAX_REPLICAS + 1):
        resources.update(_region_resources(index))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Lookout Edge for AWS, multi-region: the keys global table and one hostname by Route 53 "
        "latency records with health checks per region. Deploy once, in the home region, after every region's "
        "edge stack (docs/multi-region.md). GENERATED by `python -m edgectl.multi_region`.",
        "Parameters": _parameters(),
        "Rules": {
            "DeployedInTheHomeRegion": {
                "Assertions": [
                    {
                        "Assert": {"Fn::Equals": [_ref("HomeRegion"), _ref("AWS::Region")]},
                        "AssertDescription": "deploy this stack in HomeRegion: the key sync writes the table there",
                    }
                ]
            }
        },
        "Conditions": _conditions(),
        "Resources": resources,
        "Outputs": {
            "KeysTableName": {"Value": _ref("KeysTable")},
            "KeysTableArn": {"Value": {"Fn::GetAtt": ["KeysTable", "Arn"]}},
            "HomeRegion": {"Value": _ref("HomeRegion")},
        },
    }


def template_text() -> str:
    return json.dumps(global_template(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgectl.multi_region", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed template is stale")
    args = parser.parse_args(argv)
    text = template_text()
    if args.check:
        if GLOBAL_TEMPLATE.exists() and GLOBAL_TEMPLATE.read_text() == text:
            return 0
        print(f"{GLOBAL_TEMPLATE} is stale: run python -m edgectl.multi_region", file=sys.stderr)
        return 1
    GLOBAL_TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    GLOBAL_TEMPLATE.write_text(text)
    print(f"wrote {GLOBAL_TEMPLATE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
