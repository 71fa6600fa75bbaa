"""`chalice package --merge-template` produces a template cfn-lint accepts, wired to the stack's own resources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.forward.sinks.registry import NAME_PATTERN
from chalicelib.runtime.config import ENV_NAMES
from edgectl.cmd_render_policies import MERGE_TEMPLATE, ROOT, merge_template_text, render_stage

BIN = Path(sys.executable).parent
RESOURCE_VARIABLES = [ENV_NAMES[n] for n in ("keys_table", "idempotency_table", "queue_url", "dlq_url")]


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cfn-lint"), str(path)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real app packaged for prod. Empty requirements: the template does not depend on the
    zip's contents, and this keeps the test off the network and fast."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "app.py", project / "app.py")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    shutil.copy(ROOT / ".chalice" / "config.json", project / ".chalice" / "config.json")
    (project / "requirements.txt").write_text("")
    render_stage(project / ".chalice", "prod", cloudformation=True)
    out = project / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [str(BIN / "chalice"), "package", "--stage", "prod", "--merge-template", str(MERGE_TEMPLATE), str(out)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return out / "sam.json"


@pytest.fixture(scope="module")
def template(packaged: Path) -> dict[str, Any]:
    return json.loads(packaged.read_text())


def test_the_committed_merge_template_is_generated_from_the_standalone_stack() -> None:
    assert MERGE_TEMPLATE.read_text() == merge_template_text(), "run: python -m edgectl render-merge-template"


def test_the_packaged_template_passes_cfn_lint(packaged: Path) -> None:
    result = cfn_lint(packaged)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_standalone_stack_passes_cfn_lint() -> None:
    result = cfn_lint(ROOT / "infra" / "resources.json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_forwarder_reports_batch_item_failures_from_the_stacks_queue(template: dict[str, Any]) -> None:
    source = template["Resources"]["ForwardEvents"]["Properties"]["Events"]["ForwardEventsSqsEventSource"]
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["Properties"]["BatchSize"] == 10
    assert list(source["Properties"]["Queue"]) == ["Fn::Sub"]
    assert "${EventsQueue.QueueName}" in source["Properties"]["Queue"]["Fn::Sub"]


def test_functions_read_resource_names_from_the_stack_not_from_hard_coded_urls(template: dict[str, Any]) -> None:
    expected = {
        "LOOKOUT_EDGE_KEYS_TABLE": {"Ref": "KeysTableName"},  # the table or, multi-region, its replica
        "LOOKOUT_EDGE_IDEMPOTENCY_TABLE": {"Ref": "IdempotencyTable"},
        "LOOKOUT_EDGE_QUEUE_URL": {"Ref": "EventsQueue"},
        "LOOKOUT_EDGE_DLQ_URL": {"Ref": "DeadLetterQueue"},
        "LOOKOUT_INGEST_EDGE_BACKEND_URL": {"Ref": "BackendUrl"},
        "LOOKOUT_INGEST_EDGE_TOKEN_PARAM": {"Ref": "EdgeTokenParameterName"},
        "LOOKOUT_DB_URL_PARAM": {"Ref": "DbUrlParameterName"},
        "LOOKOUT_EDGE_HOME_REGION": {"Ref": "HomeRegion"},
    }
    for name in ("APIHandler", "ForwardEvents", "SyncKeys"):
        variables = template["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert {k: variables[k] for k in expected} == expected
        assert variables["POWERTOOLS_TRACE_DISABLED"] == "true"
        assert "LOOKOUT_INGEST_EDGE_TOKEN" not in variables and "LOOKOUT_DB_URL" not in variables


def test_sizes_timeouts_and_tracing_follow_the_config(template: dict[str, Any]) -> None:
    props = {name: template["Resources"][name]["Properties"] for name in ("APIHandler", "ForwardEvents", "SyncKeys")}
    assert {n: (p["MemorySize"], p["Timeout"]) for n, p in props.items()} == {
        "APIHandler": (512, 10),
        "ForwardEvents": (256, 60),
        "SyncKeys": (512, 300),
    }
    assert props["SyncKeys"]["ReservedConcurrentExecutions"] == 1
    assert "ReservedConcurrentExecutions" not in props["ForwardEvents"]  # throttled SQS batches would dead-letter
    assert {p["Tracing"] for p in props.values()} == {"PassThrough"}
    queue = template["Resources"]["EventsQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * props["ForwardEvents"]["Timeout"]


def test_each_function_has_its_own_role_with_stack_relative_arns(template: dict[str, Any]) -> None:
    roles = {"APIHandler": "ApiHandlerRole", "ForwardEvents": "ForwardEventsRole", "SyncKeys": "SyncKeysRole"}
    for function, role in roles.items():
        assert template["Resources"][function]["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}
        text = json.dumps(template["Resources"][role]["Properties"]["Policies"])
        assert '"Resource": "*"' not in text and "000000000000" not in text
    assert "DefaultRole" not in template["Resources"]


def test_custom_domain_serves_the_edge_at_the_root_only_when_asked(template: dict[str, Any]) -> None:
    domain, mapping = template["Resources"]["EdgeDomain"], template["Resources"]["EdgeRootMapping"]
    assert domain["Condition"] == mapping["Condition"] == "RestDomain"
    assert "BasePath" not in mapping["Properties"]  # empty base path: SDKs drop DSN paths
    assert template["Parameters"]["DomainName"]["Default"] == ""


def test_alarms_watch_this_stacks_queue_forwarder_and_api(template: dict[str, Any]) -> None:
    resources = template["Resources"]

    def dimensions(name: str) -> dict[str, Any]:
        return {d["Name"]: d["Value"] for d in resources[name]["Properties"]["Dimensions"]}

    assert dimensions("DeadLetterQueueNotEmptyAlarm") == {"QueueName": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
    assert dimensions("OldestEventAgeAlarm") == {"QueueName": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}}
    assert dimensions("ForwarderErrorsAlarm") == {"FunctionName": {"Ref": "ForwardEvents"}}
    rest_dimensions = resources["EdgeServerErrorsAlarm"]["Properties"]["Dimensions"]["Fn::If"][1]  # FrontDoor rest
    assert {d["Name"]: d["Value"] for d in rest_dimensions}["ApiName"] == {"Ref": "AWS::StackName"}
    assert resources["RestAPI"]["Properties"]["Name"] == {"Ref": "AWS::StackName"}
    assert "ForwarderFunctionName" not in template["Parameters"] and "EdgeApiName" not in template["Parameters"]


@pytest.mark.parametrize("which", ["standalone", "packaged"])
def test_each_named_sink_gets_its_own_alarm_in_both_stacks(which: str, template: dict[str, Any]) -> None:
    """AlarmSink1..3 name sinks of LOOKOUT_EDGE_SINKS; each named one gets an alarm, an empty one none,
    and Lookout (whose metrics carry no sink dimension) is refused at deploy time."""
    stack = json.loads((ROOT / "infra" / "resources.json").read_text()) if which == "standalone" else template
    for slot in (1, 2, 3):
        parameter = stack["Parameters"][f"AlarmSink{slot}"]
        assert parameter["Default"] == ""
        assert parameter["AllowedPattern"] == f"^({NAME_PATTERN.pattern})?$"  # the names LOOKOUT_EDGE_SINKS takes
        assert stack["Conditions"][f"AlarmsSink{slot}"] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": f"AlarmSink{slot}"}, ""]}]
        }
        alarm = stack["Resources"][f"Sink{slot}FailingAlarm"]
        assert alarm["Condition"] == f"AlarmsSink{slot}"
        assert (
            alarm["Properties"]["AlarmActions"]
            == stack["Resources"]["ForwarderErrorsAlarm"]["Properties"]["AlarmActions"]
        )
    assertions = stack["Rules"]["SinkAlarmsNameSinksBesideLookout"]["Assertions"]
    assert [a["Assert"] for a in assertions] == [
        {"Fn::Not": [{"Fn::Equals": [{"Ref": f"AlarmSink{slot}"}, "lookout"]}]} for slot in (1, 2, 3)
    ]


def test_unmatched_paths_answer_the_contracts_json_404(template: dict[str, Any]) -> None:
    """API Gateway's own 403 "Missing Authentication Token" would break the contract for /api/ingest/a/b/c."""
    response = template["Resources"]["UnknownPathIsNotFound"]
    assert response["Type"] == "AWS::ApiGateway::GatewayResponse"
    properties = response["Properties"]
    assert properties["RestApiId"] == {"Ref": "RestAPI"}
    assert (properties["ResponseType"], properties["StatusCode"]) == ("MISSING_AUTHENTICATION_TOKEN", "404")
    body = json.loads(properties["ResponseTemplates"]["application/json"])
    assert set(body) == {"error", "message"} and body["error"] == "not_found"


def test_the_rest_api_hands_every_body_over_untouched(template: dict[str, Any]) -> None:
    """Every media type binary: a gzip body arrives base64 and whole whatever its Content-Type
    (JSON answers stay text: chalicelib.edge.front_doors.FrontDoorApp, tests/test_front_doors.py)."""
    swagger = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    assert swagger["x-amazon-apigateway-binary-media-types"] == ["*/*"]


def test_every_function_runs_on_graviton(template: dict[str, Any]) -> None:
    """`lambda_architecture: arm64` in .chalice/config.json: the same for `chalice deploy`."""
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) >= 3
    assert {tuple(f["Properties"]["Architectures"]) for f in functions} == {("arm64",)}


def test_functions_log_json_without_lambdas_per_invocation_lines(template: dict[str, Any]) -> None:
    """System log level WARN: no START/END/REPORT lines, which would out-weigh an accepted event's log."""
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert {json.dumps(f["Properties"]["LoggingConfig"], sort_keys=True) for f in functions} == {
        json.dumps({"LogFormat": "JSON", "SystemLogLevel": "WARN"}, sort_keys=True)
    }


def test_front_door_parameter_picks_one_way_in(template: dict[str, Any]) -> None:
    """CONTRACT §8: REST (what `chalice deploy` makes), HTTP API or function URL, one stack parameter."""
    parameter = template["Parameters"]["FrontDoor"]
    assert parameter["AllowedValues"] == ["rest", "http", "url"] and parameter["Default"] == "rest"
    resources = template["Resources"]
    doors = {
        "RestDoor": ["RestAPI", "APIHandlerInvokePermission", "UnknownPathIsNotFound"],
        "HttpDoor": ["EdgeHttpApi", "EdgeHttpApiInvokePermission"],
        "UrlDoor": ["EdgeFunctionUrl", "EdgeFunctionUrlPublic", "EdgeFunctionUrlInvoke"],
    }
    for condition, names in doors.items():
        assert {resources[name]["Condition"] for name in names} == {condition}
        assert template["Conditions"][condition] == {"Fn::Equals": [{"Ref": "FrontDoor"}, condition[:-4].lower()]}
    assert resources["APIHandler"]["Properties"]["Handler"] == "app.app"  # one entry point for every door


def test_http_api_sends_every_request_to_the_function_at_the_root(template: dict[str, Any]) -> None:
    """Quick create: a `$default` route and a `$default` stage (served at `/`, no stage prefix),
    payload 2.0; no CORS configuration, so the app's own CORS answers reach the browser."""
    api = template["Resources"]["EdgeHttpApi"]["Properties"]
    assert api["ProtocolType"] == "HTTP" and api["Target"] == {"Fn::GetAtt": ["APIHandler", "Arn"]}
    assert "CorsConfiguration" not in api and "RouteKey" not in api
    mapping = template["Resources"]["EdgeHttpRootMapping"]
    assert mapping["Condition"] == "HttpDomain" and mapping["Properties"]["Stage"] == "$default"
    assert "ApiMappingKey" not in mapping["Properties"]  # the root of the host: SDKs drop DSN paths
    permission = template["Resources"]["EdgeHttpApiInvokePermission"]["Properties"]
    assert (
        permission["Principal"] == "apigateway.amazonaws.com" and "${EdgeHttpApi}" in permission["SourceArn"]["Fn::Sub"]
    )


def test_function_url_is_public_and_leaves_cors_to_the_app(template: dict[str, Any]) -> None:
    url = template["Resources"]["EdgeFunctionUrl"]["Properties"]
    assert url["AuthType"] == "NONE" and "Cors" not in url
    public = template["Resources"]["EdgeFunctionUrlPublic"]["Properties"]
    assert (public["Action"], public["Principal"], public["FunctionUrlAuthType"]) == (
        "lambda:InvokeFunctionUrl",
        "*",
        "NONE",
    )
    invoke = template["Resources"]["EdgeFunctionUrlInvoke"]["Properties"]
    assert (invoke["Action"], invoke["InvokedViaFunctionUrl"]) == ("lambda:InvokeFunction", True)
    assert template["Outputs"]["EdgeFunctionUrl"]["Condition"] == "UrlDoor"


def test_the_5xx_alarm_reads_the_chosen_doors_metric(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["EdgeServerErrorsAlarm"]["Properties"]
    rest, rest_else = alarm["MetricName"]["Fn::If"][1:]
    assert (rest, rest_else["Fn::If"][1:]) == ("5XXError", ["5xx", "Url5xxCount"])


def dashboard_metrics(stack: dict[str, Any]) -> dict[str, set[str]]:
    """Widget title → metric names of the stack's dashboard (its Fn::Sub body, substituted)."""
    import re

    body = stack["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for variable in re.findall(r"\$\{([^}]+)\}", body):
        assert variable.startswith("AWS::") or variable.split(".")[0] in stack["Resources"], variable
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    return {
        w["properties"]["title"]: {m[1] for m in w["properties"]["metrics"]} for w in widgets if w["type"] == "metric"
    }


@pytest.mark.parametrize("which", ["standalone", "packaged"])
def test_both_stacks_have_a_dashboard_operators_look_at_first(which: str, template: dict[str, Any]) -> None:
    stack = json.loads((ROOT / "infra" / "resources.json").read_text()) if which == "standalone" else template
    metrics = dashboard_metrics(stack)
    assert {"accepted", "NumberOfMessagesSent"} <= metrics["Edge: accepted events"]
    assert {f"rejected_{status}" for status in (400, 401, 403, 413, 429, 503)} <= metrics["Edge: refused, by status"]
    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"} <= metrics[
        "Queue: depth and oldest event"
    ]
    assert "ApproximateNumberOfMessagesVisible" in metrics["Dead-letter queue"]
    assert {"forwarded", "dead_lettered", "retried", "auth_failed"} <= metrics["Forwarder outcomes"]
    assert {"sync_written", "sync_deleted", "sync_failed"} <= metrics["Key sync results"]
