"""Create the tables and queues of `infra/resources.json` against any AWS endpoint.

The deployed stack and the local stack (moto) read the same template, so the
two cannot drift: this module interprets just the resource types it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "resources.json"
# The resource types the local stack creates; the template's other resources are AWS-only.
LOCAL_TYPES = ("AWS::DynamoDB::Table", "AWS::SQS::Queue")


@dataclass(frozen=True)
class StackNames:
    keys_table: str
    idempotency_table: str
    queue_url: str
    dlq_url: str

    def environment(self) -> dict[str, str]:
        """The contract's environment variables for these resources."""
        return {
            "LOOKOUT_EDGE_KEYS_TABLE": self.keys_table,
            "LOOKOUT_EDGE_IDEMPOTENCY_TABLE": self.idempotency_table,
            "LOOKOUT_EDGE_QUEUE_URL": self.queue_url,
            "LOOKOUT_EDGE_DLQ_URL": self.dlq_url,
        }


def load_template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


def _parameters(template: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    values = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
    values.update(overrides)
    return values


NO_VALUE = object()  # AWS::NoValue: the property is left out


def condition_holds(template: dict[str, Any], condition: Any, params: dict[str, Any]) -> bool:
    """A template condition (its name, or an Fn::Equals/Not/And/Or expression) for these
    parameter values (`params` may hold pseudo parameters such as AWS::Region)."""
    if isinstance(condition, str):
        return condition_holds(template, template["Conditions"][condition], params)
    ((fn, arg),) = condition.items()
    if fn == "Condition":
        return condition_holds(template, arg, params)
    if fn == "Fn::Equals":
        left, right = (params[v["Ref"]] if isinstance(v, dict) else v for v in arg)
        return str(left) == str(right)
    if fn == "Fn::Not":
        return not condition_holds(template, arg[0], params)
    if fn == "Fn::And":
        return all(condition_holds(template, c, params) for c in arg)
    if fn == "Fn::Or":
        return any(condition_holds(template, c, params) for c in arg)
    raise ValueError(f"unsupported condition function {fn}")


def _resolve(value: Any, params: dict[str, Any], attrs: dict[tuple[str, str], str], template: dict[str, Any]) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return NO_VALUE if arg == "AWS::NoValue" else params[arg]
        if fn == "Fn::GetAtt":
            return attrs[(arg[0], arg[1])]
        if fn == "Fn::If":
            branch = arg[1] if condition_holds(template, arg[0], params) else arg[2]
            return _resolve(branch, params, attrs, template)
    if isinstance(value, dict):
        resolved = {k: _resolve(v, params, attrs, template) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [v for v in (_resolve(v, params, attrs, template) for v in value) if v is not NO_VALUE]
    return value


def create_resources(session: Any, prefix: str = "", overrides: dict[str, Any] | None = None) -> StackNames:
    """Create the template's tables and queues (names prefixed for isolated test runs)."""
    template = load_template()
    params = _parameters(template, overrides or {})
    for name in ("KeysTableName", "IdempotencyTableName", "QueueName", "DeadLetterQueueName"):
        params[name] = prefix + str(params[name])
    dynamodb = session.client("dynamodb")
    sqs = session.client("sqs")
    attrs: dict[tuple[str, str], str] = {}
    refs: dict[str, str] = {}
    # Queues first in dependency order: the DLQ before the queue that redrives to it.
    ordered = sorted(template["Resources"].items(), key=lambda item: "RedrivePolicy" in item[1].get("Properties", {}))
    for logical_id, resource in ordered:
        if resource["Type"] not in LOCAL_TYPES:
            continue  # alarms and the like only exist in the deployed stack
        props = _resolve(resource.get("Properties", {}), params, attrs, template)
        if resource["Type"] == "AWS::DynamoDB::Table":
            refs[logical_id] = _create_table(dynamodb, props)
        elif resource["Type"] == "AWS::SQS::Queue":
            url = _create_queue(sqs, props)
            refs[logical_id] = url
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attrs[(logical_id, "Arn")] = arn
    return StackNames(
        keys_table=refs["KeysTable"],
        idempotency_table=refs["IdempotencyTable"],
        queue_url=refs["EventsQueue"],
        dlq_url=refs["DeadLetterQueue"],
    )


def _create_table(dynamodb: Any, props: dict[str, Any]) -> str:
    name = props["TableName"]
    try:
        dynamodb.create_table(
            TableName=name,
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
        )
    except dynamodb.exceptions.ResourceInUseException:
        return name
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    return name


def _create_queue(sqs: Any, props: dict[str, Any]) -> str:
    attributes: dict[str, str] = {}
    for key in ("MessageRetentionPeriod", "VisibilityTimeout", "KmsMasterKeyId"):
        if key in props:
            attributes[key] = str(props[key])
    if "RedrivePolicy" in props:
        policy = dict(props["RedrivePolicy"])
        policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
        attributes["RedrivePolicy"] = json.dumps(policy)
    return sqs.create_queue(QueueName=props["QueueName"], Attributes=attributes)["QueueUrl"]
