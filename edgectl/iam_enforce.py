"""Each function's IAM policy, enforced on the AWS calls its code makes: in tests and the local stack.

AWS refuses what a function's role does not allow; moto allows everything unless its IAM
access control is on, and then it judges a request's resource only for SQS (queue ARN): a
DynamoDB or SSM request reaches its policy check as resource "*", so a table- or
parameter-scoped grant (all of ours) would deny every call. So this judges every call the
functions' shared botocore session makes (chalicelib.runtime.aws), in botocore's
`before-call` event: the IAM action and resource ARN the call needs, checked against the
function's policy as `edgectl render-policies` writes it for both deploy paths (concrete
ARNs for `chalice deploy`; Fn::Sub/Ref/Fn::If resolved with the same names for
`chalice package`). A denied call is answered AccessDenied, as AWS would, and recorded.

Which function made a call: the innermost frame on the stack in a function's own package
(chalicelib.edge, .forward, .keysync, .ship_logs); edgectl's Lambda shim is the forwarder's
event source mapping, which uses the forwarder's role; other edgectl code is the operator's.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chalicelib.runtime.config import DEFAULT_IDEMPOTENCY_TABLE, DEFAULT_KEYS_TABLE, ENV_NAMES

# moto's account (moto.core.DEFAULT_ACCOUNT_ID); a queue URL in the environment names it too.
DEFAULT_ACCOUNT = "123456789012"
FUNCTION_PACKAGES = {
    "chalicelib.edge": "api_handler",
    "chalicelib.forward": "forward_events",
    "chalicelib.keysync": "sync_keys",
    "chalicelib.ship_logs": "ship_logs",
}
# Lambda's SQS event source mapping polls and deletes with the forwarder's role: the local
# stack's stand-ins for it (module, function or None for the whole module).
EVENT_SOURCE_MAPPING = {("edgectl.lambda_shim", None), ("edgectl.cmd_local", "poll_forwarder")}
OPERATOR = "operator"  # edgectl commands run with the operator's credentials: not judged
DEPLOY_PATHS = ("chalice deploy", "chalice package")
# Batch APIs are authorized by their single-message action (SQS developer guide, "API permissions").
SQS_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
DENIED_MARKER = "iam-denied"


@dataclass(frozen=True)
class Denial:
    """One call a function's policy does not allow (on one deploy path at least)."""

    function: str
    action: str
    resource: str
    paths: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.function}: {self.action} on {self.resource} is not allowed ({', '.join(self.paths)})"


# --- the call's action and resources -----------------------------------------------------------


Permission = tuple[str, str]  # (IAM action, resource ARN)


def required_permissions(
    service: str, operation: str, params: Mapping[str, Any], region: str, account: str
) -> list[Permission]:
    """What AWS checks for this call: the action and resource of each table, queue or parameter it names."""
    arn = f"arn:aws:{service}:{region}:{account}"
    if service == "dynamodb":
        tables = list(params.get("RequestItems") or ()) or [params.get("TableName")]
        return [
            (f"dynamodb:{operation}", "*" if not t else t if t.startswith("arn:") else f"{arn}:table/{t}")
            for t in tables
        ]
    if service == "sqs":
        action = f"sqs:{SQS_ACTIONS.get(operation, operation)}"
        if "QueueUrl" in params:
            path = urlsplit(params["QueueUrl"]).path.strip("/").split("/")  # /<owner account>/<queue name>
            owner = path[-2] if len(path) >= 2 else account
            return [(action, f"arn:aws:sqs:{region}:{owner}:{path[-1]}")]
        if "QueueName" in params:
            return [(action, f"{arn}:{params['QueueName']}")]
        return [(action, "*")]
    if service == "ssm" and operation in ("GetParameter", "GetParameters"):
        names = params.get("Names") or [params.get("Name", "")]
        return [(f"ssm:{operation}", f"{arn}:parameter{n if n.startswith('/') else '/' + n}") for n in names]
    if service == "secretsmanager" and "SecretId" in params:  # the key sync's RDS-managed secret
        secret = params["SecretId"]
        return [(f"secretsmanager:{operation}", secret if secret.startswith("arn:") else f"{arn}:secret:{secret}")]
    return [(f"{service}:{operation}", "*")]


# --- policy evaluation -----------------------------------------------------------------------


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statement_matches(statement: Mapping[str, Any], action: str, resource: str) -> bool:
    actions = _listed(statement.get("Action", []))
    if not any(fnmatchcase(action.lower(), pattern.lower()) for pattern in actions):
        return False
    if not any(fnmatchcase(resource, pattern) for pattern in _listed(statement.get("Resource", []))):
        return False
    # A direct call carries no condition keys the statements test (kms:ViaService): it does not match.
    return not statement.get("Condition")


def allows(document: Mapping[str, Any], action: str, resource: str) -> bool:
    """IAM's identity-policy rule: allowed when an Allow statement matches and no Deny does.

    Wildcards `*` and `?` in Action (case-insensitive) and Resource, as IAM reads them.
    """
    matching = [s for s in document["Statement"] if _statement_matches(s, action, resource)]
    return any(s["Effect"] == "Allow" for s in matching) and not any(s["Effect"] == "Deny" for s in matching)


# --- CloudFormation intrinsics (the `chalice package` policies) -----------------------------

_NO_VALUE = object()
_SUB = re.compile(r"\$\{([A-Za-z0-9:._-]+)\}")


def resolve(value: Any, parameters: Mapping[str, str], conditions: Mapping[str, bool]) -> Any:
    """Fn::Sub (string form), Ref, Fn::If and AWS::NoValue, as CloudFormation evaluates them."""
    if isinstance(value, list):
        items = [resolve(v, parameters, conditions) for v in value]
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, argument),) = value.items()
        if key == "Ref":
            return _NO_VALUE if argument == "AWS::NoValue" else parameters[argument]
        if key == "Fn::Sub":
            return _SUB.sub(lambda m: parameters[m.group(1)], argument)
        if key == "Fn::If":
            name, if_true, if_false = argument
            return resolve(if_true if conditions[name] else if_false, parameters, conditions)
    resolved = {k: resolve(v, parameters, conditions) for k, v in value.items()}
    return {k: v for k, v in resolved.items() if v is not _NO_VALUE}


# --- the policies, rendered as `edgectl render-policies` writes them ------------------------

STAGE = "local"


def _stage_environment(environment: Mapping[str, str], account: str, region: str) -> dict[str, str]:
    """The contract's variables of this process; an unset name or queue gets one that matches nothing."""
    stage = {name: environment[name] for name in ENV_NAMES.values() if environment.get(name)}
    stage.setdefault(ENV_NAMES["keys_table"], DEFAULT_KEYS_TABLE)
    stage.setdefault(ENV_NAMES["idempotency_table"], DEFAULT_IDEMPOTENCY_TABLE)
    for key in ("queue_url", "dlq_url"):
        stage.setdefault(ENV_NAMES[key], f"https://sqs.{region}.amazonaws.com/{account}/unset-{key}")
    for key in ("token_param", "db_url_param", "tail_api_key_param"):
        stage.setdefault(ENV_NAMES[key], f"/unset/{ENV_NAMES[key]}")
    return stage


def _queue_name(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


@lru_cache(maxsize=32)
def _rendered(
    source: str, frozen_environment: tuple[tuple[str, str], ...], account: str, region: str
) -> dict[str, dict[str, Any]]:
    """`source` (infra/policies.json's text) is part of the key only: render_stage reads the file."""
    import tempfile

    from edgectl.cmd_render_policies import FUNCTIONS, STACK_OPTIONS, fallback_grant, render_stage

    environment = dict(frozen_environment)
    config = {
        "version": "2.0",
        "app_name": "lookout-edge",
        "stages": {
            STAGE: {
                "environment_variables": environment,
                "lambda_functions": {fn: {"iam_policy_file": f"policy-{fn}.json"} for fn in FUNCTIONS},
            }
        },
    }
    home_region = environment.get(ENV_NAMES["home_region"], "")
    sinks_parameter = environment.get(ENV_NAMES["sinks_param"], "")
    parameters = {
        "AWS::Partition": "aws",
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::StackName": f"lookout-edge-{STAGE}",
        "KeysTableName": environment[ENV_NAMES["keys_table"]],
        "IdempotencyTableName": environment[ENV_NAMES["idempotency_table"]],
        "QueueName": _queue_name(environment[ENV_NAMES["queue_url"]]),
        "DeadLetterQueueName": _queue_name(environment[ENV_NAMES["dlq_url"]]),
        "EdgeTokenParameterName": environment[ENV_NAMES["token_param"]],
        "DbUrlParameterName": environment[ENV_NAMES["db_url_param"]],
        "TailApiKeyParameterName": environment[ENV_NAMES["tail_api_key_param"]],
        "SinksParameterName": sinks_parameter,
        "HomeRegion": home_region,
        "DbSecretArn": environment.get(ENV_NAMES["db_secret_arn"], ""),
    }
    spills, parameters["FallbackQueueArn"] = fallback_grant(environment, region)
    # No customer managed keys here: moto's SSM, SQS and DynamoDB use none.
    conditions = {condition: False for condition in STACK_OPTIONS.values()}
    conditions[STACK_OPTIONS["HomeRegion"]] = bool(home_region)
    conditions[STACK_OPTIONS["SinksParameter"]] = bool(sinks_parameter)
    conditions[STACK_OPTIONS["DbSecret"]] = bool(parameters["DbSecretArn"])
    if spills:
        conditions[STACK_OPTIONS[spills]] = True
    documents: dict[str, dict[str, Any]] = {fn: {} for fn in FUNCTIONS}
    with tempfile.TemporaryDirectory(prefix="lookout-iam-") as scratch:
        chalice_dir = Path(scratch)
        for path in DEPLOY_PATHS:
            (chalice_dir / "config.json").write_text(json.dumps(config))
            package = path == "chalice package"
            render_stage(chalice_dir, STAGE, account=account, region=region, cloudformation=package)
            for fn in FUNCTIONS:
                document = json.loads((chalice_dir / f"policy-{fn}.json").read_text())
                documents[fn][path] = resolve(document, parameters, conditions) if package else document
    return documents


def rendered_policies(environment: Mapping[str, str], account: str, region: str) -> dict[str, dict[str, Any]]:
    """function → deploy path → its policy document, for a process with this environment."""
    from edgectl.cmd_render_policies import POLICIES

    stage = _stage_environment(environment, account, region)
    return _rendered(POLICIES.read_text(), tuple(sorted(stage.items())), account, region)


def account_of(environment: Mapping[str, str]) -> str:
    """The account in the queue URL (moto's, or a real one), else moto's default."""
    parts = urlsplit(environment.get(ENV_NAMES["queue_url"], "")).path.strip("/").split("/")
    return parts[0] if len(parts) == 2 and re.fullmatch(r"\d{12}", parts[0]) else DEFAULT_ACCOUNT


# --- who is calling ----------------------------------------------------------------------------


def calling_function(frame: Any) -> str | None:
    """The function whose code is on the stack (innermost wins); OPERATOR for edgectl; None if neither."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        for package, function in FUNCTION_PACKAGES.items():
            if module == package or module.startswith(package + "."):
                return function
        if {(module, None), (module, frame.f_code.co_name)} & EVENT_SOURCE_MAPPING:
            return "forward_events"
        if (module == "edgectl" or module.startswith("edgectl.")) and module != __name__:
            return OPERATOR
        frame = frame.f_back
    return None


# --- the enforcer ------------------------------------------------------------------------------


class Enforcer:
    """Judges calls and keeps the denials; `report` is called with each one as it happens."""

    def __init__(
        self,
        environment: Mapping[str, str],
        report: Callable[[Denial], None] | None = None,
        keep_calls: bool = True,
    ):
        self._environment = environment
        self._report = report
        self._keep_calls = keep_calls  # a test reads them; a long-running local stack would only grow
        self._lock = threading.Lock()
        self.denials: list[Denial] = []
        self.calls: list[tuple[str, str, str]] = []  # (function, action, resource), every judged call

    def judge(self, function: str | None, permissions: Iterable[Permission], region: str) -> list[Denial]:
        """The denials for one call; a call no function's code made must be allowed to one of them."""
        environment = dict(self._environment)
        documents = rendered_policies(environment, account_of(environment), self._own_region(environment, region))
        candidates = [function] if function else list(documents)
        found = []
        for action, resource in permissions:
            verdicts = {
                fn: tuple(p for p, doc in documents[fn].items() if not allows(doc, action, resource))
                for fn in candidates
            }
            if self._keep_calls:
                with self._lock:
                    self.calls.append((function or "any function", action, resource))
            if all(verdicts.values()):
                paths = tuple(sorted({p for denied in verdicts.values() for p in denied}))
                found.append(Denial(function or "any function", action, resource, paths))
        for denial in found:
            with self._lock:
                self.denials.append(denial)
            if self._report:
                self._report(denial)
        return found

    def _own_region(self, environment: Mapping[str, str], client_region: str) -> str:
        return environment.get("AWS_REGION") or environment.get("AWS_DEFAULT_REGION") or client_region

    # botocore events -------------------------------------------------------------------------
    def _keep_params(self, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["lookout_iam_params"] = params

    def _before_call(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        function = calling_function(sys._getframe(1))
        if function == OPERATOR:
            return None
        region = context.get("client_region") or ""
        params = context.get("lookout_iam_params") or {}
        permissions = required_permissions(
            model.service_model.service_name, model.name, params, region, account_of(self._environment)
        )
        denials = self.judge(function, permissions, region)
        if not denials:
            return None
        from botocore.awsrequest import AWSResponse

        message = f"User is not authorized to perform: {denials[0].action} on resource: {denials[0].resource}"
        code = "AccessDenied" if model.service_model.service_name == "sqs" else "AccessDeniedException"
        parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("https://iam.local/denied", 400, {}, None), parsed

    def attach(self, session: Any) -> Any:
        """Judge every call of clients this botocore session creates from now on."""
        # Registered once per session and enforcer (a client is created per call of `_session`).
        session.register("before-parameter-build", self._keep_params, unique_id=f"lookout-iam-params-{id(self)}")
        session.register("before-call", self._before_call, unique_id=f"lookout-iam-judge-{id(self)}")
        return session


def enforce_on_container_session(enforcer: Enforcer) -> Callable[[], None]:
    """Make chalicelib.runtime.aws's session judged by `enforcer`; returns the undo."""
    from chalicelib.runtime import aws

    original = aws._session

    def judged_session() -> Any:
        return enforcer.attach(original())

    aws._session = judged_session  # type: ignore[assignment]

    def undo() -> None:
        aws._session = original

    return undo


def print_denial(denial: Denial) -> None:
    """The local stack's report: one line the stack (and the end-to-end tests) pick out."""
    print(f"{DENIED_MARKER} {json.dumps(denial.__dict__)}", file=sys.stderr, flush=True)


LOCAL_ENFORCE_VARIABLE = "LOOKOUT_EDGE_LOCAL_IAM"


def enforce_if_asked() -> Callable[[], None] | None:
    """A local-stack piece: judge its calls when the stack asks (`LOOKOUT_EDGE_LOCAL_IAM=enforce`),
    printing each denial for the stack to pick out. Returns the undo, or None when not asked."""
    import os

    if os.environ.get(LOCAL_ENFORCE_VARIABLE) != "enforce":
        return None
    return enforce_on_container_session(Enforcer(os.environ, report=print_denial, keep_calls=False))
