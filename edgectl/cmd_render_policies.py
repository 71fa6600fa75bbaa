"""`render-policies` and `render-merge-template`: deploy artefacts derived from one source each.

infra/policies.json holds every function's IAM statements once, with CloudFormation
`${...}` placeholders. `render-policies` writes them to the stage's
`.chalice/policy-<stage>-<function>.json`: with concrete ARNs for `chalice deploy`
(IAM needs real account/region), or as `Fn::Sub` for `chalice package`, where the
stack's parameters fill them in. `render-merge-template` builds
infra/merge-template.json from infra/resources.json and infra/chalice-overrides.json,
so the standalone stack and the merged one never drift (a test checks it is current).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chalicelib.edge import spill
from chalicelib.runtime.config import DEFAULT_IDEMPOTENCY_TABLE, DEFAULT_KEYS_TABLE, ENV_NAMES, load_settings
from edgectl.resources import load_template

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "infra" / "policies.json"
OVERRIDES = ROOT / "infra" / "chalice-overrides.json"
MERGE_TEMPLATE = ROOT / "infra" / "merge-template.json"
CHALICE_DIR = ROOT / ".chalice"

# Chalice function name -> logical id in the template `chalice package` generates.
FUNCTIONS = {
    "api_handler": "APIHandler",
    "forward_events": "ForwardEvents",
    "sync_keys": "SyncKeys",
    "ship_logs": "ShipLogs",
}
# Lambda's JSON log format with its own lines at WARN: no START/END/REPORT line per invocation
# (three lines, ~300 B, more than an accepted event's whole log; docs/performance.md).
LOGGING_CONFIG = {"LogFormat": "JSON", "SystemLogLevel": "WARN"}
# The contract variables the merged template points at its own resources and parameters.
STACK_ENVIRONMENT = {
    # The name, not the resource: in a multi-region edge the table is a global table's replica
    # that this stack does not create (KeysTableReplicated).
    ENV_NAMES["keys_table"]: {"Ref": "KeysTableName"},
    ENV_NAMES["idempotency_table"]: {"Ref": "IdempotencyTable"},
    ENV_NAMES["queue_url"]: {"Ref": "EventsQueue"},
    ENV_NAMES["dlq_url"]: {"Ref": "DeadLetterQueue"},
    ENV_NAMES["backend_url"]: {"Ref": "BackendUrl"},
    ENV_NAMES["token_param"]: {"Ref": "EdgeTokenParameterName"},
    ENV_NAMES["db_url_param"]: {"Ref": "DbUrlParameterName"},
    ENV_NAMES["tail_api_key_param"]: {"Ref": "TailApiKeyParameterName"},
    ENV_NAMES["sinks_param"]: {"Fn::If": ["HasSinksParameter", {"Ref": "SinksParameterName"}, {"Ref": "AWS::NoValue"}]},
    ENV_NAMES["home_region"]: {"Ref": "HomeRegion"},
    # The queue URL of the FallbackQueueArn parameter (arn:PARTITION:sqs:REGION:ACCOUNT:NAME).
    ENV_NAMES["fallback_queue_url"]: {
        "Fn::If": [
            "HasFallbackQueue",
            {
                "Fn::Sub": [
                    "https://sqs.${Region}.${AWS::URLSuffix}/${Account}/${Name}",
                    {
                        name: {"Fn::Select": [index, {"Fn::Split": [":", {"Ref": "FallbackQueueArn"}]}]}
                        for name, index in (("Region", 3), ("Account", 4), ("Name", 5))
                    },
                ]
            },
            {"Ref": "AWS::NoValue"},
        ]
    },
    ENV_NAMES["db_secret_arn"]: {"Fn::If": ["HasDbSecret", {"Ref": "DbSecretArn"}, {"Ref": "AWS::NoValue"}]},
}
# `OnlyIf` options the stack decides with a condition (Tracing is decided when rendering).
STACK_OPTIONS = {
    "SecretsKmsKey": "HasSecretsKmsKey",
    "HomeRegion": "HasHomeRegion",
    "FallbackQueue": "HasFallbackQueue",
    "SpillsToHomeRegion": "SpillsToHomeRegion",
    "SinksParameter": "HasSinksParameter",
    "QueueKmsKey": "HasQueueKmsKey",
    "TableKmsKey": "HasTableKmsKey",
    "DbSecret": "HasDbSecret",
    "SyncVpc": "SyncInVpc",
    "ForwarderVpc": "ForwarderRunsInVpc",
}
# For `chalice deploy`: the function whose subnets in .chalice/config.json turn on its VPC option.
VPC_OPTIONS = {"sync_keys": "SyncVpc", "forward_events": "ForwarderVpc"}
# Key options: the option, its stack parameter (a whole `Resource`, so a Ref) and `render-policies` flag.
KMS_KEYS = {
    "SecretsKmsKey": ("SecretsKmsKeyArn", "--kms-key-arn"),
    "QueueKmsKey": ("QueueKmsKeyArn", "--queue-kms-key-arn"),
    "TableKmsKey": ("TableKmsKeyArn", "--table-kms-key-arn"),
}
# Parameters that are a statement's whole Resource (an ARN the operator gives): a Ref, not a Sub.
WHOLE_ARN_PARAMETERS = {parameter for parameter, _ in KMS_KEYS.values()} | {"DbSecretArn", "FallbackQueueArn"}
# What the stacks' key parameters allow (AllowedPattern): a key ARN, not an alias, since IAM names the key.
KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9:]+)\}")
ACCOUNT = re.compile(r"^\d{12}$")
REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


class RenderError(ValueError):
    """The stage or the arguments cannot produce valid policies; the message says why."""


def load_policies() -> dict[str, list[dict[str, Any]]]:
    return json.loads(POLICIES.read_text())["Functions"]


def function_name(prefix: str, function: str) -> str:
    """Chalice's Lambda name: `<app>-<stage>` for the API handler, `<app>-<stage>-<function>` otherwise."""
    return prefix if function == "api_handler" else f"{prefix}-{function}"


def _allow(statement: dict[str, Any]) -> dict[str, Any]:
    """An IAM Allow statement from a source statement (without its `OnlyIf` marker)."""
    return {"Effect": "Allow", **{k: v for k, v in statement.items() if k != "OnlyIf"}}


def _statements(statements: list[dict[str, Any]], enabled: set[str]) -> list[dict[str, Any]]:
    """The statements whose `OnlyIf` option is on."""
    return [_allow(s) for s in statements if s.get("OnlyIf") is None or s["OnlyIf"] in enabled]


def _substitute(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise RenderError(f"no value for ${{{match.group(1)}}}")
            return values[match.group(1)]

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    return value


def concrete_policy(statements: list[dict[str, Any]], values: dict[str, str], enabled: set[str]) -> dict[str, Any]:
    """A policy document with every placeholder replaced (for `chalice deploy`)."""
    return {"Version": "2012-10-17", "Statement": _substitute(_statements(statements, enabled), values)}


def _sub(value: Any, function: str) -> Any:
    """Wrap placeholder strings in Fn::Sub; the function's own name comes from the stack name."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        if value in {f"${{{parameter}}}" for parameter in WHOLE_ARN_PARAMETERS}:
            return {"Ref": value[2:-1]}
        return {"Fn::Sub": value.replace("${FunctionName}", function_name("${AWS::StackName}", function))}
    if isinstance(value, dict):
        return {k: _sub(v, function) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub(v, function) for v in value]
    return value


def cloudformation_policy(statements: list[dict[str, Any]], function: str, tracing: bool) -> dict[str, Any]:
    """A policy document for `chalice package`: Fn::Sub ARNs, optional statements under their stack condition."""
    rendered: list[Any] = []
    for statement in statements:
        option = statement.get("OnlyIf")
        if option == "Tracing" and not tracing:
            continue
        body = _sub(_allow(statement), function)
        if option in STACK_OPTIONS:
            body = {"Fn::If": [STACK_OPTIONS[option], body, {"Ref": "AWS::NoValue"}]}
        rendered.append(body)
    return {"Version": "2012-10-17", "Statement": rendered}


def stage_values(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The stage's merged environment and options from .chalice/config.json."""
    if stage not in config.get("stages", {}):
        raise RenderError(f"stage {stage!r} is not in .chalice/config.json")
    stage_config = config["stages"][stage]
    environment = {**config.get("environment_variables", {}), **stage_config.get("environment_variables", {})}
    return {
        "environment": environment,
        "xray": bool(stage_config.get("xray", config.get("xray", False))),
        "prefix": f"{config['app_name']}-{stage}",
    }


def _queue_name(url: str | None, variable: str) -> str:
    name = urlsplit(url or "").path.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise RenderError(f"{variable} is not set for this stage")
    return name


def _parameter_name(environment: dict[str, str], variable: str) -> str:
    name = environment.get(variable, "")
    if not name.startswith("/"):
        raise RenderError(f"{variable} must be an SSM parameter name starting with '/', got {name!r}")
    return name


def in_vpc(config: dict[str, Any], stage: str, function: str) -> bool:
    """Whether Chalice puts the function in subnets: `subnet_ids` at the top, the stage or the
    function's own entry (the most specific one wins, as in Chalice)."""
    stage_config = config["stages"][stage]
    subnets = config.get("subnet_ids")
    for scope in (config.get("lambda_functions", {}).get(function, {}), stage_config):
        subnets = scope.get("subnet_ids", subnets)
    subnets = stage_config.get("lambda_functions", {}).get(function, {}).get("subnet_ids", subnets)
    return bool(subnets)


def deploy_values(environment: dict[str, str], account: str, region: str, partition: str) -> dict[str, str]:
    """Placeholder values for one stage in one account and region."""
    if not ACCOUNT.match(account):
        raise RenderError(f"--account must be 12 digits, got {account!r}")
    if not REGION.match(region):
        raise RenderError(f"--region does not look like an AWS region: {region!r}")
    return {
        "AWS::Partition": partition,
        "AWS::Region": region,
        "AWS::AccountId": account,
        "KeysTableName": environment.get(ENV_NAMES["keys_table"], DEFAULT_KEYS_TABLE),
        "IdempotencyTableName": environment.get(ENV_NAMES["idempotency_table"], DEFAULT_IDEMPOTENCY_TABLE),
        "QueueName": _queue_name(environment.get(ENV_NAMES["queue_url"]), ENV_NAMES["queue_url"]),
        "DeadLetterQueueName": _queue_name(environment.get(ENV_NAMES["dlq_url"]), ENV_NAMES["dlq_url"]),
        "EdgeTokenParameterName": _parameter_name(environment, ENV_NAMES["token_param"]),
        "DbUrlParameterName": _parameter_name(environment, ENV_NAMES["db_url_param"]),
        "TailApiKeyParameterName": _parameter_name(environment, ENV_NAMES["tail_api_key_param"]),
    }


def fallback_grant(environment: dict[str, str], region: str, partition: str = "aws") -> tuple[str | None, str]:
    """The edge's spill option for this stage and the queue ARN it grants: ("FallbackQueue", the
    ARN of LOOKOUT_EDGE_FALLBACK_QUEUE_URL), ("SpillsToHomeRegion", the home region's queue), or
    (None, "") when it does not spill. The queue is the one the edge itself picks (edge/spill.py)."""
    fallback = spill.fallback_queue(load_settings(environment), region)
    if fallback is None:
        return None, ""
    path = urlsplit(fallback.url).path.strip("/").split("/")
    if len(path) != 2 or not ACCOUNT.match(path[0]):
        raise RenderError(f"{ENV_NAMES['fallback_queue_url']} must be a queue URL ending in /ACCOUNT/NAME")
    arn = f"arn:{partition}:sqs:{fallback.region}:{path[0]}:{path[1]}"
    return ("FallbackQueue" if environment.get(ENV_NAMES["fallback_queue_url"]) else "SpillsToHomeRegion"), arn


def queue_url(region: str, account: str, name: str) -> str:
    return f"https://sqs.{region}.amazonaws.com/{account}/{name}"


def render_stage(
    chalice_dir: Path,
    stage: str,
    *,
    account: str | None = None,
    region: str | None = None,
    partition: str = "aws",
    kms_key_arn: str | None = None,
    queue_kms_key_arn: str | None = None,
    table_kms_key_arn: str | None = None,
    cloudformation: bool = False,
) -> list[Path]:
    """Write the stage's policy files (and, for `chalice deploy`, its queue URLs); return what was written."""
    config_path = chalice_dir / "config.json"
    config = json.loads(config_path.read_text())
    stage_info = stage_values(config, stage)
    functions = config["stages"][stage].get("lambda_functions", {})
    policies = load_policies()
    if cloudformation:
        documents = {fn: cloudformation_policy(policies[fn], fn, stage_info["xray"]) for fn in policies}
    else:
        if not account or not region:
            raise RenderError("give --account and --region (or --cloudformation for chalice package)")
        values = deploy_values(stage_info["environment"], account, region, partition)
        enabled = {"Tracing"} if stage_info["xray"] else set()
        home_region = stage_info["environment"].get(ENV_NAMES["home_region"])
        if home_region:
            enabled.add("HomeRegion")
            values["HomeRegion"] = home_region
        spills, fallback_arn = fallback_grant(stage_info["environment"], region, partition)
        if spills:
            enabled.add(spills)
            values["FallbackQueueArn"] = fallback_arn
        sinks_param = stage_info["environment"].get(ENV_NAMES["sinks_param"])
        if sinks_param:
            enabled.add("SinksParameter")
            values["SinksParameterName"] = _parameter_name(stage_info["environment"], ENV_NAMES["sinks_param"])
        secret_arn = stage_info["environment"].get(ENV_NAMES["db_secret_arn"])
        if secret_arn:
            enabled.add("DbSecret")
            values["DbSecretArn"] = secret_arn
        for function, option in VPC_OPTIONS.items():
            if in_vpc(config, stage, function):
                enabled.add(option)
        keys = {"SecretsKmsKey": kms_key_arn, "QueueKmsKey": queue_kms_key_arn, "TableKmsKey": table_kms_key_arn}
        for option, key_arn in keys.items():
            if key_arn:
                parameter, flag = KMS_KEYS[option]
                if not KMS_KEY_ARN.match(key_arn):
                    raise RenderError(
                        f"{flag} must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), got {key_arn!r}"
                    )
                enabled.add(option)
                values[parameter] = key_arn
        documents = {
            fn: concrete_policy(
                statements, {**values, "FunctionName": function_name(stage_info["prefix"], fn)}, enabled
            )
            for fn, statements in policies.items()
        }
    written = []
    for fn, document in documents.items():
        filename = functions.get(fn, {}).get("iam_policy_file")
        if not filename:
            raise RenderError(f"stages.{stage}.lambda_functions.{fn}.iam_policy_file is not set")
        path = chalice_dir / filename
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    if not cloudformation:
        environment = config["stages"][stage].setdefault("environment_variables", {})
        for key in ("QueueName", "DeadLetterQueueName"):
            variable = ENV_NAMES["queue_url" if key == "QueueName" else "dlq_url"]
            environment[variable] = queue_url(str(region), str(account), values[key])
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        written.append(config_path)
    return written


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def merge_template() -> dict[str, Any]:
    """infra/resources.json with infra/chalice-overrides.json merged over it (Chalice's own merge rules)."""
    from chalice.package import TemplateDeepMerger

    overrides = json.loads(OVERRIDES.read_text())
    resources = overrides.setdefault("Resources", {})
    for function, logical_id in FUNCTIONS.items():
        properties = resources.setdefault(logical_id, {}).setdefault("Properties", {})
        properties["FunctionName"] = {"Fn::Sub": function_name("${AWS::StackName}", function)}
        properties["Environment"] = {"Variables": copy.deepcopy(STACK_ENVIRONMENT)}
        properties["LoggingConfig"] = dict(LOGGING_CONFIG)
    base = load_template()
    overrides["Description"] = base["Description"] + " GENERATED by `python -m edgectl render-merge-template`."
    return _drop_nulls(TemplateDeepMerger().merge(overrides, base))


def merge_template_text() -> str:
    return json.dumps(merge_template(), indent=2) + "\n"


def _run_render_policies(args: argparse.Namespace) -> int:
    try:
        written = render_stage(
            Path(args.chalice_dir),
            args.stage,
            account=args.account,
            region=args.region,
            partition=args.partition,
            kms_key_arn=args.kms_key_arn,
            queue_kms_key_arn=args.queue_kms_key_arn,
            table_kms_key_arn=args.table_kms_key_arn,
            cloudformation=args.cloudformation,
        )
    except RenderError as exc:
        print(f"render-policies: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def _run_render_merge_template(args: argparse.Namespace) -> int:
    text = merge_template_text()
    if args.check:
        if MERGE_TEMPLATE.exists() and MERGE_TEMPLATE.read_text() == text:
            return 0
        print(f"{MERGE_TEMPLATE} is stale: run python -m edgectl render-merge-template", file=sys.stderr)
        return 1
    MERGE_TEMPLATE.write_text(text)
    print(f"wrote {MERGE_TEMPLATE}")
    return 0


def register(subparsers: Any) -> None:
    policies = subparsers.add_parser(
        "render-policies",
        help="write a stage's least-privilege IAM policy files from infra/policies.json",
        description="For chalice deploy: --account and --region (also sets the stage's queue URLs). "
        "For chalice package: --cloudformation (ARNs filled in by the stack).",
    )
    policies.add_argument("--stage", required=True)
    policies.add_argument("--account", help="12-digit AWS account id")
    policies.add_argument("--region", help="e.g. eu-west-1")
    policies.add_argument("--partition", default="aws", help="aws, aws-cn or aws-us-gov")
    policies.add_argument("--kms-key-arn", help="customer managed key of the SecureStrings (omit for aws/ssm)")
    policies.add_argument("--queue-kms-key-arn", help="the QueueKmsKeyArn the infra stack was given (omit: SSE-SQS)")
    policies.add_argument("--table-kms-key-arn", help="the TableKmsKeyArn the infra stack was given (omit: AWS owned)")
    policies.add_argument("--cloudformation", action="store_true", help="Fn::Sub policies for chalice package")
    policies.add_argument("--chalice-dir", default=str(CHALICE_DIR), help=argparse.SUPPRESS)
    policies.set_defaults(run=_run_render_policies)
    template = subparsers.add_parser(
        "render-merge-template", help="regenerate infra/merge-template.json for chalice package --merge-template"
    )
    template.add_argument("--check", action="store_true", help="exit 1 when the committed file is stale")
    template.set_defaults(run=_run_render_merge_template)
