"""A multi-region edge on moto (docs/multi-region.md): two regions, one home.

moto does not replicate DynamoDB global tables. Each region's stack gets its own keys table
of the same name (what a replica is, seen from that region), and `replicate()` stands in for
replication by copying every home item into the far region's table. A key written at home and
not yet copied is exactly a key that replication has not reached yet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.contract.keys_item import hash_key
from chalicelib.edge import keys
from edgectl import multi_region
from edgectl.cli import main
from edgectl.cmd_cost import MultiRegionExtra, RegionsInputs, load_prices, multi_region_extra
from edgectl.cmd_render_policies import CHALICE_DIR, render_stage
from edgectl.cmd_status import Status, format_regions, queue_name
from edgectl.iam_enforce import DEFAULT_ACCOUNT, Enforcer
from edgectl.resources import StackNames, create_resources
from tests.conftest import reset_container_state
from tests.functional.test_iam import ACCOUNT, grants, policy
from tests.functional.test_iam import REGION as IAM_REGION
from tests.integration.test_deploy import cfn_lint

HOME, FAR = "us-east-1", "eu-west-1"


class Regions:
    """The same stack in HOME and FAR, the process environment pointed at one of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.monkeypatch = monkeypatch
        self.stacks = {region: create_resources(boto3.Session(region_name=region)) for region in (HOME, FAR)}

    def dynamodb(self, region: str) -> Any:
        return boto3.client("dynamodb", region_name=region)

    def sqs(self, region: str) -> Any:
        return boto3.client("sqs", region_name=region)

    def enter(self, region: str) -> StackNames:
        """Be a Lambda container in `region`: its stack's names, its default region, fresh clients."""
        stack = self.stacks[region]
        for name, value in stack.environment().items():
            self.monkeypatch.setenv(name, value)
        self.monkeypatch.setenv("AWS_DEFAULT_REGION", region)
        self.monkeypatch.setenv("LOOKOUT_EDGE_HOME_REGION", HOME)
        reset_container_state()
        return stack

    def replicate(self) -> int:
        """Stand-in for global table replication: copy every home item to the far replica."""
        table = self.stacks[HOME].keys_table
        items = self.dynamodb(HOME).scan(TableName=table)["Items"]
        for item in items:
            self.dynamodb(FAR).put_item(TableName=table, Item=item)
        return len(items)


@pytest.fixture
def regions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Regions]:
    with mock_aws():
        yield Regions(monkeypatch)


def test_status_shows_each_region_side_by_side(regions: Regions, capsys: pytest.CaptureFixture[str]) -> None:
    regions.enter(HOME)
    for region, waiting, dead in ((HOME, 3, 0), (FAR, 1, 2)):
        stack = regions.stacks[region]
        for n in range(waiting):
            regions.sqs(region).send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps({"n": n}))
        for _ in range(dead):
            regions.sqs(region).send_message(QueueUrl=stack.dlq_url, MessageBody="{}")
    item = {"key_hash": {"S": "a" * 64}, "project_id": {"S": "1"}, "synced_at": {"N": "2000"}}
    regions.dynamodb(HOME).put_item(TableName=regions.stacks[HOME].keys_table, Item=item)
    # The far edge spilled 25 events to its fallback queue (its `spilled` EMF metric), over two minutes.
    service = [{"Name": "service", "Value": "lookout-edge-api"}]
    for value, minutes_ago in ((20, 2), (5, 1)):
        when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
        datum = {"MetricName": "spilled", "Dimensions": service, "Value": value, "Timestamp": when}
        boto3.client("cloudwatch", region_name=FAR).put_metric_data(Namespace="LookoutEdge", MetricData=[datum])

    assert main(["status", "--regions", f"{HOME},{FAR}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["regions"]
    assert list(report) == [HOME, FAR]
    seen = {
        r: (s["queue_visible"], s["dlq_visible"], s["keys_counted"], s["last_synced_at"], s["spilled_last_hour"])
        for r, s in report.items()
    }
    # Not yet replicated: the far replica has no key and no sync time, which is what status is for.
    assert seen == {HOME: (3, 0, 1, 2000.0, 0), FAR: (1, 2, 0, None, 25)}

    assert main(["status", "--regions", f"{HOME},{FAR}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [HOME, "(home)", FAR]
    assert lines[1].split() == ["waiting", "3", "1"]
    assert lines[4].split() == ["dead", "letters", "0", "2"]
    assert lines[6].split()[:2] == ["last", "sync"] and lines[6].split()[-1] == "never"
    assert lines[7].split() == ["spilled", "(1", "h)", "0", "25"]
    assert any(line.startswith("spilled: that region's SQS failed") for line in lines)


def test_an_unreadable_region_is_reported_beside_the_readable_ones(
    regions: Regions, capsys: pytest.CaptureFixture[str]
) -> None:
    regions.enter(HOME)
    assert main(["status", "--regions", f"{HOME},ap-southeast-2", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)["regions"]
    assert report[HOME]["queue_visible"] == 0
    assert "QueueDoesNotExist" in report["ap-southeast-2"]["error"]


def test_region_table_format_explains_unknowns() -> None:
    status = Status(0, 0, 4, None, 10, None, None)
    text = format_regions({HOME: status, FAR: "EndpointConnectionError: down"}, now=0, home=HOME)
    assert "unreadable" in text and f"{FAR}: cannot read: EndpointConnectionError: down" in text
    assert "oldest unknown: no CloudWatch data" in text and "inspect and redrive in that region" in text


def test_the_global_template_is_current_and_passes_cfn_lint() -> None:
    assert multi_region.main(["--check"]) == 0, "run: python -m edgectl.multi_region"
    result = cfn_lint(multi_region.GLOBAL_TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_global_table_has_the_home_replica_and_one_per_given_region() -> None:
    template = multi_region.global_template()
    table = template["Resources"]["KeysTable"]
    assert table["Type"] == "AWS::DynamoDB::GlobalTable" and table["DeletionPolicy"] == "Retain"
    replicas = table["Properties"]["Replicas"]
    assert replicas[0]["Region"] == {"Ref": "AWS::Region"}  # the stack's own region: the home region
    assert [r["Fn::If"][0] for r in replicas[1:]] == [f"HasRegion{i}" for i in range(1, multi_region.MAX_REPLICAS + 1)]
    # The edge stacks read the same table by name: key schema as the single-region table's.
    assert table["Properties"]["KeySchema"] == [{"AttributeName": "key_hash", "KeyType": "HASH"}]


def test_every_region_has_a_latency_record_guarded_by_its_health_check() -> None:
    template = multi_region.global_template()
    resources, conditions = template["Resources"], template["Conditions"]
    for index in range(multi_region.MAX_REPLICAS + 1):
        record = resources[f"LatencyRecord{index}"]["Properties"]
        assert record["Region"] == record["SetIdentifier"]
        assert record["Name"] == {"Ref": "DomainName"} and record["Type"] == "A"
        condition, with_alarm, without = record["HealthCheckId"]["Fn::If"]
        assert resources[with_alarm["Ref"]]["Condition"] == condition
        assert without == {"Ref": f"EndpointHealth{index}"}
        children = resources[with_alarm["Ref"]]["Properties"]["HealthCheckConfig"]
        assert children["Type"] == "CALCULATED" and children["HealthThreshold"] == len(children["ChildHealthChecks"])
        endpoint = resources[f"EndpointHealth{index}"]["Properties"]["HealthCheckConfig"]
        assert endpoint["Type"] == "HTTPS" and endpoint["ResourcePath"] == {"Ref": "HealthCheckPath"}
        # DNS comes with the second deployment (regional domains given), and only for given regions.
        dns = "HasRecords" if index == 0 else f"DnsIn{index}"
        assert (
            resources[f"LatencyRecord{index}"]["Condition"] == resources[f"EndpointHealth{index}"]["Condition"] == dns
        )
        if index:
            assert resources[f"ReplicationLagAlarm{index}"]["Condition"] == f"HasRegion{index}"
            assert {"Condition": f"HasRegion{index}"} in conditions[dns]["Fn::And"]


def test_the_cost_of_more_regions_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    prices = load_prices()
    extra = multi_region_extra(RegionsInputs(3, key_changes_per_month=100_000, dns_queries_per_event=0.1), prices)
    # Each key change replicates to 2 replicas: 200k replicated write units, and 200k x 400 B between regions.
    assert extra.monthly["replicated key writes"] == pytest.approx(200_000 * 0.625 / 1e6 + 0.08 * 0.02)
    # Per region: an HTTPS check on an execute-api host (0.75 + 2.00), the 5xx-alarm check and the combined one.
    assert extra.monthly["Route 53 health checks"] == pytest.approx(3 * (0.75 + 2.00 + 0.50 + 0.50))
    # Each replica region's stack: its dashboard, the 10 alarms of infra/resources.json on 11 metrics
    # (the key sync's two exist only where the sync writes, the home region), the edge's and the
    # forwarder's 4 hourly EMF metrics, idle SQS polling, plus its replication-lag alarm.
    region = 3.00 + 11 * 0.10 + 4 * 0.30 + 5 * 730 * 3600 / 20 * 0.40 / 1e6 + 0.10
    assert extra.monthly["each added region's stack"] == pytest.approx(2 * region)
    # Alias queries to API Gateway are free; as billed latency queries: 0.1 per event x $0.60 per million.
    assert extra.per_million_events["Route 53 latency queries"] == 0
    assert extra.dns_if_billed == pytest.approx(0.06)
    assert multi_region_extra(RegionsInputs(1), prices) == MultiRegionExtra()

    assert main(["cost", "--front-door", "url", "--edge-ms", "20", "--forwarder-ms", "100", "--regions", "3"]) == 0
    out = capsys.readouterr().out
    assert "multi-region: 3 regions (2 replicas)" in out
    total = 11.25 + 2 * region + 10_000 * 2 * (0.625 / 1e6 + 400 / 1e9 * 0.02)
    assert f"{total:.4f}" in out.split("total per month")[1]


def test_a_multi_region_stage_may_read_keys_from_the_home_region_only(tmp_path: Path) -> None:
    chalice_dir = tmp_path / ".chalice"
    chalice_dir.mkdir()
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    render_stage_into = chalice_dir / "config.json"
    render_stage_into.write_text(json.dumps(config))
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=IAM_REGION)
    single = grants(policy(chalice_dir, "prod", "api_handler"))["dynamodb:GetItem"]

    config["stages"]["prod"].setdefault("environment_variables", {})["LOOKOUT_EDGE_HOME_REGION"] = HOME
    render_stage_into.write_text(json.dumps(config))
    render_stage(chalice_dir, "prod", account=ACCOUNT, region=IAM_REGION)
    multi = grants(policy(chalice_dir, "prod", "api_handler"))["dynamodb:GetItem"]
    assert multi - single == {f"arn:aws:dynamodb:{HOME}:{ACCOUNT}:table/lookout-edge-keys"}
    sync = grants(policy(chalice_dir, "prod", "sync_keys"))
    assert all(HOME not in arn for arns in sync.values() for arn in arns)  # the sync writes only its own region


def test_the_sync_writes_the_home_table_and_does_nothing_in_another_region(regions: Regions, lookout_db: Any) -> None:
    from chalicelib.keysync import job

    lookout_db.insert_key(key_id=1, project_id=101, organization_id=11)
    lookout_db.insert_key(key_id=2, project_id=102, organization_id=11)
    table = regions.stacks[HOME].keys_table
    for region in (HOME, FAR):
        regions.enter(region)
        result = job.run(db_url=lookout_db.url)
        assert result.ok, result.error
        assert result.written == (2 if region == HOME else 0)
    assert regions.dynamodb(HOME).scan(TableName=table)["Count"] == 2
    assert regions.dynamodb(FAR).scan(TableName=table)["Count"] == 0  # the far replica is replication's job
    assert regions.replicate() == 2


def test_each_region_accepts_into_its_own_queue_and_both_forwarders_deliver(regions: Regions) -> None:
    from app import forward_events
    from tests.conftest import chalice_client, key_item
    from tests.fake_lookout import FakeLookout, sqs_event

    regions.dynamodb(HOME).put_item(TableName=regions.stacks[HOME].keys_table, Item=key_item("raw-key", "101", "11"))
    regions.replicate()
    accepted = {}
    for region in (HOME, FAR):
        regions.enter(region)
        with chalice_client() as client:
            answer = client.http.post(
                "/api/ingest",
                headers={"X-Api-Key": "raw-key", "Content-Type": "application/json"},
                body=json.dumps({"message": f"from {region}"}),
            )
        assert answer.status_code == 202, answer.body
        accepted[region] = json.loads(answer.body)["event_id"]

    lookout = FakeLookout().start()
    try:
        for region in (HOME, FAR):
            stack = regions.enter(region)
            regions.monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", lookout.url)
            regions.monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", "edge-token")
            event = sqs_event(stack.queue_url, region=region)
            assert [json.loads(r["body"])["event_id"] for r in event["Records"]] == [accepted[region]]
            assert forward_events(event, None) == {"batchItemFailures": []}
            assert (
                regions.sqs(region).get_queue_attributes(
                    QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
                == "0"
            )
    finally:
        lookout.stop()
    delivered = [(e["event_id"], e["payload"]["message"]) for seen in lookout.requests for e in seen.body["events"]]
    assert delivered == [(accepted[HOME], f"from {HOME}"), (accepted[FAR], f"from {FAR}")]


def test_a_far_edge_whose_queue_fails_spills_home_and_the_home_forwarder_delivers(regions: Regions, iam) -> None:
    """Issue #27: the far region's SQS refuses (its queue is gone); the far edge puts the event on the
    home region's queue of the same name (no setting: the multi-region default), answers 202, and the
    home forwarder delivers it to Lookout like its own events."""
    from app import forward_events
    from tests.conftest import chalice_client, key_item
    from tests.fake_lookout import FakeLookout, sqs_event

    regions.dynamodb(HOME).put_item(TableName=regions.stacks[HOME].keys_table, Item=key_item("raw-key", "101", "11"))
    regions.replicate()
    far = regions.enter(FAR)
    regions.sqs(FAR).delete_queue(QueueUrl=far.queue_url)
    with chalice_client() as client:
        answer = client.http.post(
            "/api/ingest",
            headers={"X-Api-Key": "raw-key", "Content-Type": "application/json"},
            body=json.dumps({"message": "spilled from far"}),
        )
    assert answer.status_code == 202, answer.body
    home_queue = regions.stacks[HOME].queue_url
    assert ("api_handler", "sqs:SendMessage", f"arn:aws:sqs:{HOME}:{DEFAULT_ACCOUNT}:{queue_name(home_queue)}") in (
        iam.calls
    )
    lookout = FakeLookout().start()
    try:
        regions.enter(HOME)
        regions.monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", lookout.url)
        regions.monkeypatch.setenv("LOOKOUT_INGEST_EDGE_TOKEN", "edge-token")
        assert forward_events(sqs_event(home_queue, region=HOME), None) == {"batchItemFailures": []}
    finally:
        lookout.stop()
    delivered = [(e["event_id"], e["payload"]["message"]) for seen in lookout.requests for e in seen.body["events"]]
    assert delivered == [(json.loads(answer.body)["event_id"], "spilled from far")]


def ingest(raw_key: str) -> tuple[int, dict[str, Any]]:
    from tests.conftest import chalice_client

    with chalice_client() as client:
        answer = client.http.post(
            "/api/ingest",
            headers={"X-Api-Key": raw_key, "Content-Type": "application/json"},
            body=json.dumps({"message": "hello"}),
        )
    return answer.status_code, json.loads(answer.body)


def test_a_key_not_yet_replicated_is_found_in_the_home_region(regions: Regions, iam: Enforcer) -> None:
    from tests.conftest import key_item

    table = regions.stacks[HOME].keys_table
    regions.dynamodb(HOME).put_item(TableName=table, Item=key_item("brand-new", "101", "11"))  # not replicated
    far = regions.enter(FAR)
    status, body = ingest("brand-new")
    assert status == 202, body
    queued = regions.sqs(FAR).receive_message(QueueUrl=far.queue_url)["Messages"]
    assert [json.loads(m["Body"])["event_id"] for m in queued] == [body["event_id"]]  # accepted in the far region
    assert "Item" not in regions.dynamodb(FAR).get_item(TableName=table, Key={"key_hash": {"S": hash_key("brand-new")}})
    # Allowed by the far edge's ReadKeysInHomeRegion statement (judged on both deploy paths).
    assert ("api_handler", "dynamodb:GetItem", f"arn:aws:dynamodb:{HOME}:{DEFAULT_ACCOUNT}:table/{table}") in iam.calls

    regions.monkeypatch.delenv("LOOKOUT_EDGE_HOME_REGION")  # one region: no second lookup
    reset_container_state()
    assert ingest("brand-new")[0] == 401


def test_a_double_miss_is_cached_briefly_then_the_home_table_is_asked_again(
    regions: Regions, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import Clock, key_item

    table = regions.stacks[HOME].keys_table
    regions.enter(FAR)
    asked: list[str | None] = []
    real = keys.fetch_key_item

    def spy(table: str, key_hash: str, region: str | None = None, timeout_seconds: float | None = None) -> Any:
        asked.append(region)
        assert timeout_seconds is not None  # every lookup, local or home, is one short try
        return real(table, key_hash, region, timeout_seconds)

    monkeypatch.setattr(keys, "fetch_key_item", spy)
    clock = Clock()
    cache = keys.KeyCache(fetch=lambda h: keys.fetch_key(table, h, HOME), negative_ttl=10, clock=clock)
    key_hash = hash_key("made-seconds-ago")
    assert cache.get(key_hash) is None and asked == [None, HOME]  # local replica, then home

    regions.dynamodb(HOME).put_item(TableName=table, Item=key_item("made-seconds-ago"))  # the sync wrote it
    clock.now += 9
    assert cache.get(key_hash) is None and len(asked) == 2  # the miss is still cached: nothing asked
    clock.now += 2
    record = cache.get(key_hash)
    assert record is not None and record.project_id == "42" and asked[2:] == [None, HOME]

    regions.enter(HOME)  # in the home region itself a miss is final: no second lookup
    asked.clear()
    assert keys.fetch_key(table, hash_key("nobody"), HOME) is None and asked == [None]


def test_a_failed_home_lookup_is_a_miss_but_a_failed_local_one_is_an_outage(regions: Regions) -> None:
    table = regions.stacks[HOME].keys_table
    regions.dynamodb(HOME).delete_table(TableName=table)  # the home region's table does not answer
    regions.enter(FAR)
    status, body = ingest("unknown-key")
    assert status == 401 and body["error"] == "invalid_api_key"

    regions.dynamodb(FAR).delete_table(TableName=table)  # the local replica does not answer: 503
    reset_container_state()
    status, body = ingest("unknown-key")
    assert status == 503 and body["error"] != "invalid_api_key"
