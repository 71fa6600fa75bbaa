"""`status` against moto: queue depth, in-flight, dead letters, oldest age, key count, last sync."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from edgectl.cli import main
from edgectl.cmd_status import Status, Targets, collect, format_status, targets_for_stage
from edgectl.resources import StackNames
from tests.conftest import REGION


def run_status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    return code, capsys.readouterr().out


@pytest.fixture
def busy_stack(aws: StackNames, put_key: Any) -> StackNames:
    """3 waiting, 2 in flight, 1 dead letter; 3 keys synced at 1000, 2000 and never."""
    sqs = boto3.client("sqs", region_name=REGION)
    for n in range(5):
        sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps({"n": n}))
    sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=2, VisibilityTimeout=300)
    sqs.send_message(QueueUrl=aws.dlq_url, MessageBody="{}")
    put_key("k1", synced_at=1000)
    put_key("k2", synced_at=2000)
    put_key("k3")
    return aws


def test_reports_the_stack_read_from_the_contract_environment(
    busy_stack: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_status(capsys, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["targets"] == {
        "keys_table": busy_stack.keys_table,
        "queue_url": busy_stack.queue_url,
        "dlq_url": busy_stack.dlq_url,
    }
    assert (report["queue_visible"], report["queue_in_flight"], report["dlq_visible"]) == (3, 2, 1)
    assert (report["keys_counted"], report["last_synced_at"]) == (3, 2000.0)
    assert report["oldest_age_seconds"] is None  # moto has no SQS metrics: reported as unknown, not as 0


def test_oldest_age_comes_from_cloudwatch_when_it_has_data(busy_stack: StackNames) -> None:
    now = datetime.now(UTC)
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": "lookout-edge-events"}],
                "Timestamp": now - timedelta(minutes=2),
                "Value": 840.0,
                "Unit": "Seconds",
            }
        ],
    )
    status = collect(Targets(busy_stack.keys_table, busy_stack.queue_url, busy_stack.dlq_url), now=now)
    assert status.oldest_age_seconds == 840.0


def test_text_output_explains_unknowns_and_points_at_dead_letters(
    busy_stack: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_status(capsys)
    assert code == 0
    assert "waiting      3" in out and "in flight    2" in out
    assert "dead letters   1  <- events the backend refused" in out
    assert "oldest       unknown (no CloudWatch data" in out
    assert "1970-01-01T00:33:20Z" in out  # synced_at 2000
    code, out = run_status(capsys, "--no-scan")
    assert "keys         ~" in out and "not read (--no-scan)" in out


def test_stage_names_come_from_the_chalice_config(
    busy_stack: StackNames, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in busy_stack.environment():
        monkeypatch.delenv(name)
    config = {
        "environment_variables": {"LOOKOUT_EDGE_KEYS_TABLE": "ignored-by-the-stage"},
        "stages": {"prod": {"environment_variables": busy_stack.environment()}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, out = run_status(capsys, "--stage", "prod", "--config", str(path), "--json")
    assert code == 0 and json.loads(out)["queue_visible"] == 3
    assert main(["status", "--stage", "qa", "--config", str(path)]) == 2
    assert "stage 'qa'" in capsys.readouterr().err


def test_the_real_config_resolves_every_stage() -> None:
    config = json.loads((Path(__file__).resolve().parents[2] / ".chalice" / "config.json").read_text())
    for stage in ("dev", "prod"):
        targets = targets_for_stage(config, stage)
        assert targets.keys_table == "lookout-edge-keys"
        assert targets.queue_url.endswith("/lookout-edge-events") and targets.dlq_url.endswith("-dlq")


def test_missing_queue_url_and_unreachable_aws_are_clear_errors(
    aws: StackNames, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOOKOUT_EDGE_QUEUE_URL")
    assert main(["status"]) == 2
    assert "LOOKOUT_EDGE_QUEUE_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("LOOKOUT_EDGE_QUEUE_URL", aws.queue_url + "-missing")
    assert main(["status"]) == 1
    assert "cannot read the stack" in capsys.readouterr().err


def test_format_without_a_dead_letter_queue_or_synced_items() -> None:
    status = Status(0, 0, None, 12.0, 0, 0, None)
    text = format_status(Targets("keys", "https://q/x", None), status, now=0)
    assert "dead letters   not configured" in text
    assert "oldest       12 s" in text
    assert "never (no item has synced_at)" in text


def put_sync_runs(now: datetime, runs: list[tuple[int, float]]) -> None:
    """What the key sync writes per run (minutes ago, sync_failed 0 or 1), as CloudWatch stores its EMF."""
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="LookoutEdge",
        MetricData=[
            {
                "MetricName": "sync_failed",
                "Dimensions": [{"Name": "service", "Value": "lookout-edge-sync"}],
                "Timestamp": now - timedelta(minutes=minutes),
                "Value": failed,
                "Unit": "Count",
            }
            for minutes, failed in runs
        ],
    )


def test_says_when_the_last_successful_sync_ran_even_when_it_changed_nothing(
    busy_stack: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sync that changes no key writes nothing to the table; its metric still says it ran."""
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    put_sync_runs(now, [(40, 0.0), (35, 0.0), (30, 1.0), (25, 1.0), (20, 1.0)])
    status = collect(Targets(busy_stack.keys_table, busy_stack.queue_url, busy_stack.dlq_url), now=now)
    assert status.sync_runs_last_day == 5
    success = datetime.fromtimestamp(status.last_successful_sync_at or 0, UTC)
    assert now - timedelta(minutes=36) <= success <= now - timedelta(minutes=35)  # the minute of that run
    text = format_status(Targets("keys", busy_stack.queue_url, None), status, now=now.timestamp())
    assert f"last success {success.strftime('%Y-%m-%dT%H:%M:%SZ')} (35 min ago)" in text


def test_says_when_every_run_failed_or_none_ran(busy_stack: StackNames) -> None:
    now = datetime.now(UTC)
    targets = Targets(busy_stack.keys_table, busy_stack.queue_url, busy_stack.dlq_url)
    status = collect(targets, now=now)
    assert (status.last_successful_sync_at, status.sync_runs_last_day) == (None, 0)
    assert "last success none recorded in the last day" in format_status(targets, status, now.timestamp())
    put_sync_runs(now, [(10, 1.0), (5, 1.0)])
    status = collect(targets, now=now)
    assert "last success none in the last day: all 2 runs failed" in format_status(targets, status, now.timestamp())
