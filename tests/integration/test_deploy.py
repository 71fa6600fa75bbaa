"""`chalice package --merge-template` produces a template cfn-lint accepts, wired to the stack's own resources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.forward.sinks.registry import NAME_PATTERN
from chalicelib.runtime.config import ENV_NAMES
from edgectl.cmd_package import chalice_package
from edgectl.cmd_render_policies import MERGE_TEMPLATE, ROOT, merge_template_text

BIN = Path(sys.executable).parent
RESOURCE_VARIABLES = [ENV_NAMES[n] for n in ("keys_table", "idempotency_table", "queue_url", "dlq_url")]


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cfn-lint"), str(path)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real app's stack for prod, as `make package` writes it (`chalice package` of a clean
    copy with the merge template, then the REST routes pointed at the alias). The zip is not
    rebuilt: the template does not depend on its contents."""
    out = tmp_path_factory.mktemp("package")
    chalice_package("prod", out)
    return out / "sam.json"


@pytest.fixture(scope="module")
def template(packaged: Path) -> dict[str, Any]:
    return json.loads(packaged.read_text())


STATEFUL_TYPES = ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable", "AWS::SQS::Queue")


def stack_of(which: str, template: dict[str, Any]) -> dict[str, Any]:
    """The standalone stack (infra/resources.json, for `chalice deploy`) or the packaged one."""
    return json.loads((ROOT / "infra" / "resources.json").read_text()) if which == "standalone" else template


@pytest.mark.parametrize("which", ["standalone", "packaged"])
def test_queues_and_tables_outlive_a_stack_deletion_or_replacement(which: str, template: dict[str, Any]) -> None:
    """Accepted but undelivered events, keys and idempotency records are kept when the stack is
    deleted or a name change replaces the resource (docs/deploy.md, "Retained resources")."""
    resources = stack_of(which, template)["Resources"]
    stateful = {name: r for name, r in resources.items() if r["Type"] in STATEFUL_TYPES}
    assert set(stateful) == {"KeysTable", "IdempotencyTable", "EventsQueue", "DeadLetterQueue"}
    for name, resource in stateful.items():
        assert (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")) == ("Retain", "Retain"), name


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
    assert source["Properties"]["BatchSize"] == {"Ref": "ForwarderBatchSize"}
    assert source["Properties"]["MaximumBatchingWindowInSeconds"] == {"Ref": "ForwarderBatchingWindowSeconds"}
    assert list(source["Properties"]["Queue"]) == ["Fn::Sub"]
    assert "${EventsQueue.QueueName}" in source["Properties"]["Queue"]["Fn::Sub"]


def test_the_forwarder_batch_parameters_default_to_what_chalice_deploy_uses(template: dict[str, Any]) -> None:
    """Up to 100 messages (CONTRACT §6) filled for at most a second; Lambda requires a window of at
    least 1 s above 10 messages, and a window much longer than the function's timeout would eat
    into the queue's visibility timeout."""
    import app

    size, window = (
        template["Parameters"]["ForwarderBatchSize"],
        template["Parameters"]["ForwarderBatchingWindowSeconds"],
    )
    assert (size["Default"], size["MinValue"], size["MaxValue"]) == (app.FORWARDER_BATCH_SIZE, 1, 100) == (100, 1, 100)
    assert (window["Default"], window["MinValue"], window["MaxValue"]) == (app.FORWARDER_BATCH_WINDOW, 1, 20)


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


def test_the_fallback_queue_url_is_the_queue_of_fallback_queue_arn(template: dict[str, Any]) -> None:
    """The edge spills to the queue the stack's FallbackQueueArn names (docs/reliability.md): its URL
    is built from the ARN's region, account and name; without one the variable is unset."""
    variables = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    condition, given, absent = variables["LOOKOUT_EDGE_FALLBACK_QUEUE_URL"]["Fn::If"]
    assert (condition, absent) == ("HasFallbackQueue", {"Ref": "AWS::NoValue"})
    text, parts = given["Fn::Sub"]
    arn = "arn:aws:sqs:eu-west-1:210987654321:lookout-edge-events"
    for name, select in parts.items():
        index, split = select["Fn::Select"]
        assert split == {"Fn::Split": [":", {"Ref": "FallbackQueueArn"}]}
        text = text.replace(f"${{{name}}}", arn.split(":")[index])
    url = text.replace("${AWS::URLSuffix}", "amazonaws.com")
    assert url == "https://sqs.eu-west-1.amazonaws.com/210987654321/lookout-edge-events"


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
        policies = template["Resources"][role]["Properties"]["Policies"]
        assert "000000000000" not in json.dumps(policies)
        for statement in (s for p in policies for s in p["PolicyDocument"]["Statement"]):
            body = statement["Fn::If"][1] if "Fn::If" in statement else statement
            if body["Resource"] == "*":  # only EC2's Describe actions, which take no resource, and only in a VPC
                assert body["Sid"] == "VpcDescribe" and statement["Fn::If"][0] in ("SyncInVpc", "ForwarderRunsInVpc")
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
    stack = stack_of(which, template)
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
    (JSON answers stay text: chalicelib.edge.gateways.GatewayApp, tests/functional/test_front_doors.py)."""
    swagger = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    assert swagger["x-amazon-apigateway-binary-media-types"] == ["*/*"]


def test_every_function_runs_python_3_13_on_graviton(template: dict[str, Any]) -> None:
    """`lambda_architecture: arm64` in .chalice/config.json, and the runtime Chalice names after the
    virtualenv's Python (3.13, see the Makefile): the same for `chalice deploy` from that virtualenv."""
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) >= 3
    assert {tuple(f["Properties"]["Architectures"]) for f in functions} == {("arm64",)}
    assert {f["Properties"]["Runtime"] for f in functions} == {"python3.13"}


def test_functions_log_json_without_lambdas_per_invocation_lines(template: dict[str, Any]) -> None:
    """System log level WARN: no START/END/REPORT lines, which would out-weigh an accepted event's log."""
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert {json.dumps(f["Properties"]["LoggingConfig"], sort_keys=True) for f in functions} == {
        json.dumps({"LogFormat": "JSON", "SystemLogLevel": "WARN"}, sort_keys=True)
    }


def test_front_door_parameter_picks_one_way_in(template: dict[str, Any]) -> None:
    """CONTRACT §8: REST (what `chalice deploy` makes), HTTP API or function URL, one stack parameter."""
    parameter = template["Parameters"]["FrontDoor"]
    assert parameter["AllowedValues"] == ["rest", "http", "url"]
    assert parameter["Default"] == "url"  # the cheapest door, the docs' recommendation
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
    assert api["ProtocolType"] == "HTTP" and api["Target"] == {"Ref": "APIHandler.Alias"}  # the canary's alias
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
    stack = stack_of(which, template)
    metrics = dashboard_metrics(stack)
    assert {"accepted", "NumberOfMessagesSent", "keys_table_unavailable", "spilled"} <= metrics["Edge: accepted events"]
    assert {f"rejected_{status}" for status in (400, 401, 403, 413, 429, 503)} <= metrics["Edge: refused, by status"]
    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"} <= metrics[
        "Queue: depth and oldest event"
    ]
    assert "ApproximateNumberOfMessagesVisible" in metrics["Dead-letter queue"]
    assert {"forwarded", "dead_lettered", "retried", "auth_failed"} <= metrics["Forwarder outcomes"]
    assert {"sync_written", "sync_deleted", "sync_failed"} <= metrics["Key sync results"]


# Alarm: (namespace, metric, statistic, period, evaluation periods, threshold, missing data).
LAMBDA_ALARMS = {
    "EdgeErrorsAlarm": ("AWS/Lambda", "Errors", "Sum", 300, 1, 0, "notBreaching"),
    "EdgeThrottlesAlarm": ("AWS/Lambda", "Throttles", "Sum", 300, 1, 0, "notBreaching"),
    # Any spilled event: this region's SQS failed and the fallback region took the events.
    "EdgeSpillingAlarm": ("LookoutEdge", "spilled", "Sum", 300, 1, 0, "notBreaching"),
    "ForwarderThrottlesAlarm": ("AWS/Lambda", "Throttles", "Sum", 300, 1, 0, "notBreaching"),
    "ForwarderErrorsAlarm": ("AWS/Lambda", "Errors", "Sum", 300, 3, 0, "notBreaching"),
    # Liveness: the smallest sync_failed of 15 minutes is 0 when any run succeeded; no run at all is breaching.
    "KeySyncFailedAlarm": ("LookoutEdge", "sync_failed", "Minimum", 900, 1, 0, "breaching"),
}
FUNCTION_OF = {
    "EdgeErrorsAlarm": ("EdgeFunctionName", "APIHandler"),
    "EdgeThrottlesAlarm": ("EdgeFunctionName", "APIHandler"),
    "ForwarderThrottlesAlarm": ("ForwarderFunctionName", "ForwardEvents"),
    "ForwarderErrorsAlarm": ("ForwarderFunctionName", "ForwardEvents"),
}


@pytest.mark.parametrize("which", ["standalone", "packaged"])
def test_alarms_read_the_metric_statistic_and_threshold_their_runbook_describes(
    which: str, template: dict[str, Any]
) -> None:
    resources = stack_of(which, template)["Resources"]
    for name, (namespace, metric, statistic, period, periods, threshold, missing) in LAMBDA_ALARMS.items():
        alarm = resources[name]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"], alarm["Period"]) == (
            namespace,
            metric,
            statistic,
            period,
        ), name
        assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["Threshold"]) == (
            periods,
            periods,
            threshold,
        )
        assert (alarm["ComparisonOperator"], alarm["TreatMissingData"]) == ("GreaterThanThreshold", missing), name
        assert (
            alarm["AlarmActions"]
            == alarm["OKActions"]
            == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        )
        if name in FUNCTION_OF:
            parameter, function = FUNCTION_OF[name]
            assert alarm["Dimensions"] == [
                {"Name": "FunctionName", "Value": {"Ref": parameter if which == "standalone" else function}}
            ]
    assert "EdgeFunctionName" in stack_of("standalone", template)["Parameters"]
    assert "EdgeFunctionName" not in template["Parameters"]  # the stack's own function


def share_alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """The (namespace, metric, dimension names) of the `errors` and `requests` series, then the expression."""
    stats = {m["Id"]: m for m in alarm["Metrics"]}
    assert stats["share"]["ReturnData"] is True and stats["share"]["Expression"] == (
        "IF(requests >= 20, 100 * FILL(errors, 0) / requests, 0)"
    )
    assert not stats["errors"]["ReturnData"] and not stats["requests"]["ReturnData"]
    found = []
    for series in ("errors", "requests"):
        metric = stats[series]["MetricStat"]
        assert (metric["Period"], metric["Stat"]) == (300, "Sum")
        found.append(
            (
                metric["Metric"]["Namespace"],
                metric["Metric"]["MetricName"],
                [d["Name"] for d in metric["Metric"]["Dimensions"]],
            )
        )
    return found


def test_the_5xx_share_alarm_divides_each_doors_5xx_by_its_requests(template: dict[str, Any]) -> None:
    """More than EdgeServerErrorSharePercent (5) of 5 minutes' answers were 5xx, with at least 20
    requests (a quiet stage's one error of three is no outage)."""
    for stack in (stack_of("standalone", template), template):
        alarm = stack["Resources"]["EdgeServerErrorShareAlarm"]["Properties"]
        assert (alarm["Threshold"], alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (
            {"Ref": "EdgeServerErrorSharePercent"},
            1,
            "notBreaching",
        )
        assert stack["Parameters"]["EdgeServerErrorSharePercent"]["Default"] == 5
    standalone = stack_of("standalone", template)["Resources"]["EdgeServerErrorShareAlarm"]["Properties"]
    rest = [("AWS/ApiGateway", "5XXError", ["ApiName", "Stage"]), ("AWS/ApiGateway", "Count", ["ApiName", "Stage"])]
    assert share_alarm_metrics(standalone) == rest  # chalice deploy makes the REST API
    doors = template["Resources"]["EdgeServerErrorShareAlarm"]["Properties"]["Metrics"]["Fn::If"]
    assert doors[0] == "RestDoor" and doors[2]["Fn::If"][0] == "HttpDoor"
    assert share_alarm_metrics({"Metrics": doors[1]}) == rest
    assert share_alarm_metrics({"Metrics": doors[2]["Fn::If"][1]}) == [
        ("AWS/ApiGateway", "5xx", ["ApiId", "Stage"]),
        ("AWS/ApiGateway", "Count", ["ApiId", "Stage"]),
    ]
    assert share_alarm_metrics({"Metrics": doors[2]["Fn::If"][2]}) == [
        ("AWS/Lambda", "Url5xxCount", ["FunctionName"]),
        ("AWS/Lambda", "UrlRequestCount", ["FunctionName"]),
    ]


def alarm_state(alarm: dict[str, Any], values: list[float]) -> str:
    """CloudWatch's verdict on one evaluation period of a single-metric alarm holding `values`."""
    if not values:
        return {"breaching": "ALARM", "notBreaching": "OK"}[alarm["TreatMissingData"]]
    statistic = {"Minimum": min, "Maximum": max, "Sum": sum}[alarm["Statistic"]](values)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    return "ALARM" if statistic > alarm["Threshold"] else "OK"


def test_the_key_sync_alarm_fires_when_no_run_succeeded_for_15_minutes(
    template: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Fed the sync_failed values the sync itself writes: one success among failures is enough;
    only failures, or no run at all (schedule off, function broken), is an alarm."""
    from chalicelib.keysync.job import _finish
    from chalicelib.keysync.plan import SyncResult
    from chalicelib.runtime.observability import flush

    failed = SyncResult()
    failed.error = "MySQL error 2003"
    for result in (SyncResult(), failed):
        _finish(result, 0.0)
        flush("sync")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    written = [line["sync_failed"] for line in lines if line.get("service") == "lookout-edge-sync"]
    success, failure = (float(v[0] if isinstance(v, list) else v) for v in written)
    alarm = template["Resources"]["KeySyncFailedAlarm"]["Properties"]
    metric = lines[0]["_aws"]["CloudWatchMetrics"][0]
    assert metric["Namespace"] == alarm["Namespace"] and metric["Dimensions"] == [["service"]]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "lookout-edge-sync"}]
    assert alarm_state(alarm, [failure, success, failure]) == "OK"
    assert alarm_state(alarm, [failure, failure, failure]) == "ALARM"
    assert alarm_state(alarm, []) == "ALARM"


def test_the_key_sync_alarms_exist_only_where_the_sync_writes(template: dict[str, Any]) -> None:
    """A multi-region edge syncs in HomeRegion only; elsewhere the sync records nothing, which
    the liveness alarm would take for a stopped sync."""
    for stack in (stack_of("standalone", template), template):
        for name in ("KeySyncFailedAlarm", "KeySyncDeletesRefusedAlarm"):
            assert stack["Resources"][name]["Condition"] == "SyncsHere"
        assert stack["Conditions"]["SyncsHere"] == {
            "Fn::Or": [
                {"Fn::Not": [{"Condition": "HasHomeRegion"}]},
                {"Fn::Equals": [{"Ref": "HomeRegion"}, {"Ref": "AWS::Region"}]},
            ]
        }


def test_the_edge_has_reserved_concurrency_that_leaves_the_forwarder_its_share(template: dict[str, Any]) -> None:
    """A flood is throttled at the edge's reservation instead of taking the account's concurrency
    from the forwarder (unreserved, SQS MaximumConcurrency) and the key sync (reserved 1)."""
    parameter = template["Parameters"]["EdgeReservedConcurrency"]
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["lambda_functions"]["api_handler"]["reserved_concurrency"] == parameter["Default"] == 100
    assert (parameter["MinValue"], parameter["MaxValue"]) == (0, 900)  # Lambda keeps 100 of the default 1,000 free
    props = {name: template["Resources"][name]["Properties"] for name in ("APIHandler", "ForwardEvents", "SyncKeys")}
    assert props["APIHandler"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["ReservesEdgeConcurrency", {"Ref": "EdgeReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert template["Conditions"]["ReservesEdgeConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "EdgeReservedConcurrency"}, "0"]}]
    }
    forwarder_max = template["Parameters"]["ForwarderMaxConcurrency"]["Default"]
    assert parameter["Default"] + props["SyncKeys"]["ReservedConcurrentExecutions"] + forwarder_max <= 1000 - 100


def test_api_gateway_throttles_every_route_before_the_function_runs(template: dict[str, Any]) -> None:
    rate, burst = {"Ref": "EdgeThrottleRatePerSecond"}, {"Ref": "EdgeThrottleBurst"}
    assert template["Resources"]["RestAPI"]["Properties"]["MethodSettings"] == [
        {"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": rate, "ThrottlingBurstLimit": burst}
    ]
    overrides = template["Resources"]["EdgeHttpApiThrottle"]
    assert (overrides["Type"], overrides["Condition"]) == ("AWS::ApiGatewayV2::ApiGatewayManagedOverrides", "HttpDoor")
    assert overrides["Properties"]["ApiId"] == {"Ref": "EdgeHttpApi"}  # the quick-create $default stage
    assert overrides["Properties"]["Stage"]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": rate,
        "ThrottlingBurstLimit": burst,
    }


def test_each_edge_release_is_a_canary_that_rolls_back_on_the_edges_alarms(template: dict[str, Any]) -> None:
    """SAM publishes a version per release behind the alias `live`; CodeDeploy sends it 10 % for
    5 minutes and rolls back when the 5xx share or the function's errors alarm."""
    edge = template["Resources"]["APIHandler"]["Properties"]
    assert edge["AutoPublishAlias"] == "live"
    preference = edge["DeploymentPreference"]
    assert preference["Type"] == {"Ref": "EdgeRelease"}
    release = template["Parameters"]["EdgeRelease"]
    assert release["Default"] == "Canary10Percent5Minutes" and "AllAtOnce" in release["AllowedValues"]
    alarm_names = [template["Resources"][name]["Properties"]["AlarmName"] for name in ROLLBACK_ALARMS]
    assert (
        preference["Alarms"]
        == alarm_names
        == [
            {"Fn::Sub": "${AWS::StackName}-EdgeServerErrorShare"},
            {"Fn::Sub": "${AWS::StackName}-EdgeErrors"},
        ]
    )


ROLLBACK_ALARMS = ("EdgeServerErrorShareAlarm", "EdgeErrorsAlarm")


def test_every_door_calls_the_alias_the_canary_shifts(template: dict[str, Any]) -> None:
    """A door calling the function itself ($LATEST) would skip the canary and its rollback."""
    resources = template["Resources"]
    alias = {"Ref": "APIHandler.Alias"}
    uris = [
        operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
        for operations in resources["RestAPI"]["Properties"]["DefinitionBody"]["paths"].values()
        for operation in operations.values()
        if "x-amazon-apigateway-integration" in operation
    ]
    assert len(uris) > 10
    assert all("/functions/${APIHandlerAliaslive}/invocations" in uri for uri in uris)  # SAM's alias resource
    assert "${APIHandler.Arn}" not in json.dumps(resources["RestAPI"])
    assert resources["APIHandlerInvokePermission"]["Properties"]["FunctionName"] == alias
    assert resources["EdgeHttpApi"]["Properties"]["Target"] == alias
    assert resources["EdgeHttpApiInvokePermission"]["Properties"]["FunctionName"] == alias
    url = resources["EdgeFunctionUrl"]["Properties"]
    assert url["Qualifier"] == {"Fn::Select": [7, {"Fn::Split": [":", alias]}]}  # "live", after the alias exists
    for permission in ("EdgeFunctionUrlPublic", "EdgeFunctionUrlInvoke"):
        assert resources[permission]["Properties"]["FunctionName"] == alias


def references(value: Any) -> set[str]:
    """Logical ids a template value depends on (Ref, GetAtt, Fn::Sub variables), SAM's `X.Alias` as X's alias."""
    import re

    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner.replace(".Alias", "Aliaslive"))
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found |= {v.replace(".Alias", "Aliaslive").split(".")[0] for v in re.findall(r"\$\{([^}!]+)\}", text)}
                found |= references(inner[1]) if isinstance(inner, list) else set()
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def test_the_canary_wiring_has_no_dependency_cycle(template: dict[str, Any]) -> None:
    """After SAM's transform the alias waits for its CodeDeploy group, which names the rollback
    alarms: an alarm that depended on a door (the HTTP API's id) that calls the alias would be a
    cycle CloudFormation refuses. The group names the alarms by their AlarmName instead."""
    resources = dict(template["Resources"])
    graph = {name: references(r.get("Properties", {})) | set(r.get("DependsOn", [])) for name, r in resources.items()}
    preference = resources["APIHandler"]["Properties"]["DeploymentPreference"]
    graph["APIHandler"] -= references(preference)  # SAM moves it to the group, the function does not wait for it
    graph["APIHandlerAliaslive"] = {"APIHandler", "APIHandlerDeploymentGroup"}
    graph["APIHandlerDeploymentGroup"] = references(preference)
    graph = {name: {d for d in deps if d in graph} for name, deps in graph.items()}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in visiting, " -> ".join([*path, name])
        if name in done:
            return
        visiting.add(name)
        for dependency in graph[name]:
            visit(dependency, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])
    assert "EdgeHttpApi" in references(resources["EdgeServerErrorShareAlarm"]["Properties"])  # the HTTP door's metric
