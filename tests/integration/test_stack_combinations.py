"""Both stacks pass cfn-lint with every parameter at its default and at each of its other values,
each combination rendered (conditions decided, Fn::If branches taken) as CloudFormation would;
impossible values are refused by the template with a message that names the parameter."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgectl.cmd_package import chalice_package
from edgectl.cmd_render_policies import ROOT
from edgectl.resources import NO_VALUE, condition_holds, load_template

REGION = "us-east-1"
KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
VPC = {"SyncSubnetIds": "subnet-0a1b2c3d,subnet-0e1f2a3b", "SyncSecurityGroupIds": "sg-0a1b2c3d"}
# The other values of the parameters that decide something (a condition), where AllowedValues
# alone would break a rule or say nothing.
ALTERNATIVES: dict[str, list[dict[str, Any]]] = {
    "AlarmTopicArn": [{"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:ops"}],
    "AlarmSink1": [{"AlarmSink1": "influx"}],
    "AlarmSink2": [{"AlarmSink2": "loki"}],
    "AlarmSink3": [{"AlarmSink3": "otlp"}],
    "HomeRegion": [{"HomeRegion": REGION}, {"HomeRegion": "eu-west-1"}],  # the home region, and a replica's
    "QueueKmsKeyArn": [{"QueueKmsKeyArn": KEY}],
    "TableKmsKeyArn": [{"TableKmsKeyArn": KEY}],
    "SecretsKmsKeyArn": [{"SecretsKmsKeyArn": KEY}],
    "SinksParameterName": [{"SinksParameterName": "/lookout-edge/prod/sinks"}],
    "FallbackQueueArn": [{"FallbackQueueArn": "arn:aws:sqs:eu-west-1:123456789012:lookout-edge-events"}],
    "ShipLogGroup1": [{"ShipLogGroup1": "/aws/lambda/app"}],
    "ShipLogGroup2": [{"ShipLogGroup2": "/aws/lambda/app2"}],
    "ShipLogGroup3": [{"ShipLogGroup3": "/aws/lambda/app3"}],
    "DomainName": [
        {"DomainName": "edge.example.com", "CertificateArn": CERT, "FrontDoor": door}
        for CERT in ["arn:aws:acm:us-east-1:123456789012:certificate/abc-123"]
        for door in ("rest", "http")
    ],
    "EdgeReservedConcurrency": [{"EdgeReservedConcurrency": 0}, {"EdgeReservedConcurrency": 900}],
    "DbSecretArn": [{"DbSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-AbCdEf"}],
    "SyncSubnetIds": [VPC],
    "ForwarderInVpc": [VPC | {"ForwarderInVpc": "true"}],  # the rules need the subnets with it
    "CreateVpcEndpoints": [
        VPC | {"CreateVpcEndpoints": "true", "VpcId": "vpc-0a1b2c3d", "VpcRouteTableIds": "rtb-0a1b2c3d,rtb-0e1f2a3b"}
    ],
}
EVERYTHING_ON = {k: v for options in ALTERNATIVES.values() for k, v in options[-1].items()} | {
    "KeysTableReplicated": "true",
    "HomeRegion": REGION,
    "FrontDoor": "http",
}
IMPOSSIBLE = {  # parameter: a value CloudFormation must refuse before creating anything
    "EdgeReservedConcurrency": 1000,
    "QueueKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:alias/edge",
    "TableKmsKeyArn": "my-key",
    "SecretsKmsKeyArn": "alias/aws/ssm",
    "EdgeServerErrorSharePercent": 0,
    "HomeRegion": "Europe",
    "QueueName": "events.fifo",
    "AlarmTopicArn": "ops@example.com",
    "DomainName": "https://edge.example.com/",
    "CertificateArn": "arn:aws:iam::123456789012:server-certificate/x",
    "ForwarderMaxConcurrency": 1,
    "SyncSubnetIds": "subnet-0a1b2c3d, subnet-0e1f2a3b",
    "SyncSecurityGroupIds": "default",
    "DbSecretArn": "rds!db-AbCdEf",
    "FallbackQueueArn": "https://sqs.eu-west-1.amazonaws.com/123456789012/lookout-edge-events",
    "VpcRouteTableIds": "rtb-xyz",
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("package")
    chalice_package("prod", out)
    return {"standalone": load_template(), "packaged": json.loads((out / "sam.json").read_text())}


def _values(template: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    values = {name: spec.get("Default", "") for name, spec in template["Parameters"].items()}
    return values | chosen | {"AWS::Region": REGION}


def _resolve(value: Any, template: dict[str, Any], values: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] == "AWS::NoValue":
            return NO_VALUE
        if set(value) == {"Fn::If"}:
            condition, yes, no = value["Fn::If"]
            return _resolve(yes if condition_holds(template, condition, values) else no, template, values)
        resolved = {k: _resolve(v, template, values) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [v for v in (_resolve(v, template, values) for v in value) if v is not NO_VALUE]
    return value


def render(template: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation deploys it for these values: resources and outputs whose
    condition is false gone, every Fn::If decided, the values as the parameters' defaults."""
    values = _values(template, chosen)
    rendered = copy.deepcopy(template)
    rendered.pop("Conditions", None)
    rendered.pop("Metadata", None)  # its cfn-lint exceptions are for the undecided template only
    for name, value in chosen.items():
        rendered["Parameters"][name]["Default"] = value
    for section in ("Resources", "Outputs"):
        kept = {}
        for name, body in template.get(section, {}).items():
            if "Condition" in body and not condition_holds(template, body["Condition"], values):
                continue
            kept[name] = _resolve({k: v for k, v in body.items() if k != "Condition"}, template, values)
        rendered[section] = kept
    return rendered


def combinations(template: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [{}]
    for name, spec in template["Parameters"].items():
        if name in ALTERNATIVES:
            found += [options for options in ALTERNATIVES[name] if set(options) <= set(template["Parameters"])]
            continue
        for value in spec.get("AllowedValues", []):
            if value != spec.get("Default"):
                found.append({name: value})
    found.append({k: v for k, v in EVERYTHING_ON.items() if k in template["Parameters"]})
    return found


def test_every_parameter_a_condition_reads_has_its_other_values_rendered(stacks: dict[str, dict[str, Any]]) -> None:
    for template in stacks.values():
        read = set(re.findall(r'"Ref": "([A-Za-z0-9]+)"', json.dumps(template["Conditions"])))
        covered = {n for n, s in template["Parameters"].items() if "AllowedValues" in s} | set(ALTERNATIVES)
        assert read - {"AWS"} <= covered, read - covered


def test_both_stacks_pass_cfn_lint_at_every_parameters_values(
    stacks: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    paths = []
    for which, template in stacks.items():
        for index, chosen in enumerate(combinations(template)):
            path = tmp_path / f"{which}-{index:02d}.json"
            path.write_text(json.dumps(render(template, chosen), indent=1))
            paths.append(path)
    assert len(paths) > 30
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    # W2001 "parameter not used": rendering decided the conditions that were its only use.
    command = [str(cfn_lint), "--ignore-checks", "W2001", "--", *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_rendering_takes_the_chosen_branches(stacks: dict[str, dict[str, Any]]) -> None:
    packaged = stacks["packaged"]
    url = render(packaged, {})
    assert "EdgeFunctionUrl" in url["Resources"] and "RestAPI" not in url["Resources"]
    assert url["Resources"]["APIHandler"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Ref": "EdgeReservedConcurrency"
    }
    unreserved = render(packaged, {"EdgeReservedConcurrency": 0})["Resources"]["APIHandler"]["Properties"]
    assert "ReservedConcurrentExecutions" not in unreserved
    replica = render(stacks["standalone"], {"HomeRegion": "eu-west-1", "KeysTableReplicated": "true"})
    assert "KeySyncFailedAlarm" not in replica["Resources"] and "KeysTable" not in replica["Resources"]
    assert "KeySyncFailedAlarm" in render(stacks["standalone"], {"HomeRegion": REGION})["Resources"]


def refusal(spec: dict[str, Any], value: Any) -> str | None:
    """CloudFormation's parameter checks: None when `value` is allowed, else its message."""
    text = str(value)
    allowed = (
        ("AllowedValues" not in spec or text in map(str, spec["AllowedValues"]))
        and ("AllowedPattern" not in spec or re.fullmatch(spec["AllowedPattern"], text) is not None)
        and ("MinValue" not in spec or float(text) >= spec["MinValue"])
        and ("MaxValue" not in spec or float(text) <= spec["MaxValue"])
    )
    return None if allowed else spec.get("ConstraintDescription", "failed to satisfy constraint")


def test_impossible_values_are_refused_with_a_message_naming_the_parameter(stacks: dict[str, dict[str, Any]]) -> None:
    packaged = stacks["packaged"]["Parameters"]
    for name, value in IMPOSSIBLE.items():
        message = refusal(packaged[name], value)
        assert message is not None and message.startswith(f"{name} must"), (name, message)
    for name, spec in packaged.items():  # and every default is possible
        assert refusal(spec, spec.get("Default", "")) is None or "Default" not in spec, name


@pytest.mark.parametrize("which", ["standalone", "packaged"])
def test_every_constrained_parameter_says_what_it_accepts(which: str, stacks: dict[str, dict[str, Any]]) -> None:
    for name, spec in stacks[which]["Parameters"].items():
        if {"AllowedPattern", "MinValue", "MaxValue"} & set(spec):
            assert spec.get("ConstraintDescription", "").startswith(f"{name} must"), name


def test_a_domain_without_its_certificate_is_refused(stacks: dict[str, dict[str, Any]]) -> None:
    rule = stacks["packaged"]["Rules"]["DomainNeedsCertificate"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "DomainName"}, ""]}]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "CertificateArn"}, ""]}]}
    assert rule["Assertions"][0]["AssertDescription"].startswith("CertificateArn is required with DomainName")


def test_cfn_lint_over_the_repository_is_clean_and_skips_only_fragments() -> None:
    """`make lint` runs cfn-lint with .cfnlintrc: every template under infra/, not the fragments."""
    config = (ROOT / ".cfnlintrc").read_text()
    ignored = sorted(re.findall(r"^  - (infra/\S+)$", config.split("ignore_templates:")[1], re.M))
    assert ignored == ["infra/chalice-overrides.json", "infra/merge-template.json", "infra/policies.json"]
    for fragment in ignored:  # not templates: resources without a Type, or no resources at all
        resources = json.loads((ROOT / fragment).read_text()).get("Resources", {})
        assert not resources or any("Type" not in r for r in resources.values()), fragment
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cfn-lint" in (ROOT / "Makefile").read_text().split("\nlint:")[1].split("\n\n")[0]
