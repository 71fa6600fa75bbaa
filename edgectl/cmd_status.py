"""`status`: how a deployed (or local) edge is doing, read from SQS, CloudWatch and DynamoDB.

Names come from the contract's environment variables, or with `--stage` from that
stage in .chalice/config.json. Read-only: it never changes a queue or a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chalicelib.runtime.aws import client
from chalicelib.runtime.config import ENV_NAMES, ConfigError, load_settings
from chalicelib.runtime.sqs_batch import depth

CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"


@dataclass(frozen=True)
class Targets:
    keys_table: str
    queue_url: str
    dlq_url: str | None


@dataclass
class Status:
    queue_visible: int
    queue_in_flight: int
    dlq_visible: int | None
    oldest_age_seconds: float | None
    keys_approximate: int
    keys_counted: int | None
    last_synced_at: float | None
    # From the sync's own `sync_failed` metric (KeySyncFailedAlarm reads the same): the start of
    # the newest minute with a successful run in the last day, and how many runs that day saw
    # (None: CloudWatch could not be read).
    last_successful_sync_at: float | None = None
    sync_runs_last_day: int | None = None
    # Events this region's edge spilled to its fallback queue in the last hour (its `spilled`
    # metric, which EdgeSpillingAlarm reads); None: CloudWatch could not be read.
    spilled_last_hour: int | None = None


def targets_from_environment(env: Any) -> Targets:
    settings = load_settings(env)
    return Targets(settings.keys_table, settings.require("queue_url"), settings.dlq_url)


def targets_for_stage(config: dict[str, Any], stage: str) -> Targets:
    """The stage's names, as `chalice deploy` hands them to the functions."""
    if stage not in config.get("stages", {}):
        raise ConfigError(f"stage {stage!r} is not in .chalice/config.json")
    env = {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}
    return targets_from_environment(env)


def queue_name(queue_url: str) -> str:
    return urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1]


def datapoints(
    namespace: str,
    metric: str,
    dimension: tuple[str, str],
    now: datetime,
    lookback: timedelta,
    period: int,
    statistics: list[str],
    region: str | None = None,
) -> list[dict[str, Any]] | None:
    """One metric's CloudWatch datapoints over `lookback` before `now`; None when CloudWatch cannot be read."""
    try:
        return list(
            client("cloudwatch", region).get_metric_statistics(
                Namespace=namespace,
                MetricName=metric,
                Dimensions=[{"Name": dimension[0], "Value": dimension[1]}],
                StartTime=now - lookback,
                EndTime=now,
                Period=period,
                Statistics=statistics,
            )["Datapoints"]
        )
    except Exception:
        return None


def oldest_message_age(queue_url: str, now: datetime, region: str | None = None) -> float | None:
    """CloudWatch's latest ApproximateAgeOfOldestMessage; None where there is no such data (local stacks)."""
    dimension = ("QueueName", queue_name(queue_url))
    points = datapoints(
        "AWS/SQS", "ApproximateAgeOfOldestMessage", dimension, now, timedelta(minutes=15), 60, ["Maximum"], region
    )
    if not points:
        return None
    return float(max(points, key=lambda point: point["Timestamp"])["Maximum"])


SYNC_LOOKBACK = timedelta(days=1)


def sync_history(now: datetime, region: str | None = None) -> tuple[float | None, int | None]:
    """(start of the newest minute with a successful key sync, runs in the last day) from the
    sync's `sync_failed` metric: each run writes 0 (succeeded) or 1, so a minute whose Minimum
    is 0 held a success. A sync that changes nothing writes no key, so the table cannot say
    this. (None, None) when CloudWatch cannot be read."""
    # 1,440 points of 60 s: GetMetricStatistics' most per call.
    dimension = ("service", "lookout-edge-sync")
    points = datapoints(
        "LookoutEdge", "sync_failed", dimension, now, SYNC_LOOKBACK, 60, ["Minimum", "SampleCount"], region
    )
    if points is None:
        return None, None
    runs = int(sum(point["SampleCount"] for point in points))
    successes = [point["Timestamp"] for point in points if point["Minimum"] == 0]
    return (max(successes).timestamp() if successes else None), runs


SPILL_LOOKBACK = timedelta(hours=1)


def spilled_events(now: datetime, region: str | None = None) -> int | None:
    """Events the edge spilled to its fallback queue in the last hour (docs/reliability.md): the
    sum of its `spilled` metric; 0 when it has no data; None when CloudWatch cannot be read."""
    period = int(SPILL_LOOKBACK.total_seconds())
    points = datapoints(
        "LookoutEdge", "spilled", ("service", "lookout-edge-api"), now, SPILL_LOOKBACK, period, ["Sum"], region
    )
    if points is None:
        return None
    return int(sum(point["Sum"] for point in points))


def scan_keys(table: str, region: str | None = None) -> tuple[int, float | None]:
    """(items, newest synced_at) from a scan that reads only `synced_at`."""
    paginator = client("dynamodb", region).get_paginator("scan")
    count, newest = 0, None
    pages = paginator.paginate(TableName=table, ProjectionExpression="synced_at")
    for page in pages:
        for item in page["Items"]:
            count += 1
            if "synced_at" in item:
                value = float(item["synced_at"]["N"])
                newest = value if newest is None else max(newest, value)
    return count, newest


def collect(targets: Targets, scan: bool = True, now: datetime | None = None, region: str | None = None) -> Status:
    """One region's status (`region` None: the default region of the credentials)."""
    visible, in_flight = depth(targets.queue_url, region)
    keys_counted, last_synced = scan_keys(targets.keys_table, region) if scan else (None, None)
    table = client("dynamodb", region).describe_table(TableName=targets.keys_table)["Table"]
    now = now or datetime.now(UTC)
    last_success, runs = sync_history(now, region)
    return Status(
        queue_visible=visible,
        queue_in_flight=in_flight,
        dlq_visible=depth(targets.dlq_url, region)[0] if targets.dlq_url else None,
        oldest_age_seconds=oldest_message_age(targets.queue_url, now, region),
        keys_approximate=int(table["ItemCount"]),
        keys_counted=keys_counted,
        last_synced_at=last_synced,
        last_successful_sync_at=last_success,
        sync_runs_last_day=runs,
        spilled_last_hour=spilled_events(now, region),
    )


def targets_in_region(targets: Targets, region: str) -> Targets:
    """The same stack in another region: a multi-region edge uses the same names everywhere
    (docs/multi-region.md), so queue URLs are looked up by name in that region."""
    sqs = client("sqs", region)

    def url(queue_url: str) -> str:
        return sqs.get_queue_url(QueueName=queue_name(queue_url))["QueueUrl"]

    return Targets(targets.keys_table, url(targets.queue_url), url(targets.dlq_url) if targets.dlq_url else None)


def collect_regions(
    targets: Targets, regions: list[str], scan: bool = True, now: datetime | None = None
) -> dict[str, Status | str]:
    """Each region's status, or why it could not be read: one region down must not hide the others."""
    found: dict[str, Status | str] = {}
    for region in regions:
        try:
            found[region] = collect(targets_in_region(targets, region), scan, now, region)
        except Exception as exc:
            found[region] = f"{type(exc).__name__}: {exc}"
    return found


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _synced(status: Status, now: float) -> str:
    if status.keys_counted is None:
        return "not read (--no-scan)"
    if status.last_synced_at is None:
        return "never"
    return f"{_ago(now - status.last_synced_at)} ago"


def _successful_sync(status: Status, now: float) -> str:
    """When the last successful sync ran, or why that is not known."""
    if status.sync_runs_last_day is None:
        return "unknown (CloudWatch cannot be read)"
    if status.last_successful_sync_at is not None:
        stamp = datetime.fromtimestamp(status.last_successful_sync_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp} ({_ago(now - status.last_successful_sync_at)} ago)"
    if status.sync_runs_last_day:
        return f"none in the last day: all {status.sync_runs_last_day} runs failed"
    return "none recorded in the last day (the sync did not run here; local stacks have no metrics)"


def _spilled(status: Status) -> str:
    if status.spilled_last_hour is None:
        return "unknown (CloudWatch cannot be read)"
    if status.spilled_last_hour:
        return f"{status.spilled_last_hour}  <- this region's SQS failed; the events went to the fallback queue"
    return "0"


def format_regions(found: dict[str, Status | str], now: float, home: str | None = None) -> str:
    """Regions side by side, one column each; an unreadable region says why below the table."""
    rows: list[tuple[str, list[str]]] = [("", [f"{r} (home)" if r == home else r for r in found])]
    readable = {region: s for region, s in found.items() if isinstance(s, Status)}

    def row(label: str, cell: Callable[[Status], str]) -> None:
        rows.append((label, [cell(readable[r]) if r in readable else "unreadable" for r in found]))

    row("waiting", lambda s: str(s.queue_visible))
    row("in flight", lambda s: str(s.queue_in_flight))
    row("oldest", lambda s: "unknown" if s.oldest_age_seconds is None else _ago(s.oldest_age_seconds))
    row("dead letters", lambda s: "-" if s.dlq_visible is None else str(s.dlq_visible))
    row("keys", lambda s: str(s.keys_counted) if s.keys_counted is not None else f"~{s.keys_approximate}")
    row("last sync", lambda s: _synced(s, now))
    row("spilled (1 h)", lambda s: "unknown" if s.spilled_last_hour is None else str(s.spilled_last_hour))
    row(
        "last success",
        lambda s: "-" if s.last_successful_sync_at is None else f"{_ago(now - s.last_successful_sync_at)} ago",
    )
    widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(found))]
    lines = [
        f"{label:<14}" + "  ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True))
        for label, cells in rows
    ]
    lines += [f"{region}: cannot read: {reason}" for region, reason in found.items() if isinstance(reason, str)]
    if any(s.dlq_visible for s in readable.values()):
        lines.append("dead letters: inspect and redrive in that region: AWS_DEFAULT_REGION=... python -m edgectl dlq")
    if any(s.spilled_last_hour for s in readable.values()):
        lines.append(
            "spilled: that region's SQS failed and its edge sent events to its fallback queue (202, none lost)"
        )
    if any(s.oldest_age_seconds is None for s in readable.values()):
        lines.append("oldest unknown: no CloudWatch data for that queue yet (local stacks have none)")
    return "\n".join(lines)


def format_status(targets: Targets, status: Status, now: float) -> str:
    """Human-readable lines; every unknown says why it is unknown."""
    if status.oldest_age_seconds is None:
        oldest = "unknown (no CloudWatch data for this queue yet; local stacks have none)"
    else:
        oldest = _ago(status.oldest_age_seconds)
    if status.keys_counted is None:
        keys = f"~{status.keys_approximate} (DynamoDB estimate, refreshed about every 6 h)"
        synced = "not read (--no-scan)"
    else:
        keys = f"{status.keys_counted} (scanned; DynamoDB estimate {status.keys_approximate})"
        if status.last_synced_at is None:
            synced = "never (no item has synced_at)"
        else:
            stamp = datetime.fromtimestamp(status.last_synced_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            synced = f"{stamp} ({_ago(now - status.last_synced_at)} ago; the last sync that changed a key)"
    dlq = "not configured" if status.dlq_visible is None else str(status.dlq_visible)
    if status.dlq_visible:
        dlq += "  <- events the backend refused or never took: inspect, then redrive"
    lines = [
        f"queue          {targets.queue_url}",
        f"  waiting      {status.queue_visible}",
        f"  in flight    {status.queue_in_flight}",
        f"  oldest       {oldest}",
        f"dead letters   {dlq}",
        f"keys table     {targets.keys_table}",
        f"  keys         {keys}",
        f"  last sync    {synced}",
        f"  last success {_successful_sync(status, now)}",
        f"spilled (1 h)  {_spilled(status)}",
    ]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    try:
        if args.stage:
            targets = targets_for_stage(json.loads(Path(args.config).read_text()), args.stage)
        else:
            targets = targets_from_environment(os.environ)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 2
    if args.regions:
        return _run_regions(args, targets)
    try:
        status = collect(targets, scan=not args.no_scan)
    except Exception as exc:
        print(f"status: cannot read the stack: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"targets": asdict(targets), **asdict(status)}, indent=2))
    else:
        print(format_status(targets, status, time.time()))
    return 0


def _run_regions(args: argparse.Namespace, targets: Targets) -> int:
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    found = collect_regions(targets, regions, scan=not args.no_scan)
    if args.json:
        report = {r: asdict(s) if isinstance(s, Status) else {"error": s} for r, s in found.items()}
        print(json.dumps({"regions": report}, indent=2))
    else:
        print(format_regions(found, time.time(), home=load_settings(os.environ).home_region))
    return 0 if all(isinstance(s, Status) for s in found.values()) else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="queue depth, in-flight, dead letters, oldest event age, key count, last (successful) sync, "
        "events spilled to the fallback queue",
        description=f"Reads {ENV_NAMES['queue_url']}, {ENV_NAMES['dlq_url']} and {ENV_NAMES['keys_table']} "
        "(or --stage from .chalice/config.json) with the usual AWS credentials.",
    )
    parser.add_argument("--stage", help="take the names from this stage of .chalice/config.json")
    parser.add_argument("--config", default=str(CONFIG), help=argparse.SUPPRESS)
    parser.add_argument("--no-scan", action="store_true", help="skip the keys scan (exact count, last sync)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--regions",
        help="comma list, e.g. eu-west-1,us-east-1: the same stack in each region, side by side "
        "(a multi-region edge, docs/multi-region.md); exit 1 when a region cannot be read",
    )
    parser.set_defaults(run=_run)
