"""`python -m edgectl cost`: dollars per million events, AWS (this edge) beside Cloudflare (seed 000).

Prices live in edgectl/prices.json (with their date and source), never here. Lambda durations
come from the newest `make bench` result that has each: a local run (bench/results/*.json) or
else the committed, dated reference (bench/reference/*.json), so a fresh clone prints what the
README says; options override them. `estimate` (per million events), `fixed_monthly` (what the
stack costs a month whatever the traffic) and `mix_table` (both, for a realistic mix at a monthly
volume) are the pure math; the rest reads files and prints. docs/cost.md explains the model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

from chalicelib.edge.ratelimit import SETTLE_EVENTS
from chalicelib.edge.spill import BACKOFF_LONGEST_SECONDS

ROOT = Path(__file__).resolve().parent.parent
PRICES = Path(__file__).resolve().parent / "prices.json"
BENCH_RESULTS = ROOT / "bench" / "results"
# Committed `make bench` results (dated, with the machine): used where no newer local run exists.
REFERENCE_RESULTS = ROOT / "bench" / "reference"
FRONT_DOORS = ("rest", "http", "url")
MILLION = 1_000_000
# What the queue message adds to an event: the envelope fields and two message attributes
# (measured: a 700-byte error report becomes a 1,029-byte message).
ENVELOPE_BYTES = 400
# Without a bench result: a warm edge request (GetItem from cache, one SendMessage) and a
# forwarder batch (mostly waiting for Lookout), as measured on AWS-like latencies.
DEFAULT_EDGE_MS = 15.0
DEFAULT_FORWARDER_MS = 80.0
# CloudWatch Logs per accepted edge request without a bench result: no line of its own at the
# default level, its count in the container's EMF line (~190 B a minute; tests/functional/test_log_bill.py),
# no START/END/REPORT (system log level WARN). `make bench` measures it (log_bytes_per_event).
EDGE_LOG_BYTES = 20
# Per forwarder invocation without a bench result: a healthy forwarder logs nothing of its own
# and writes its delivery counts as one ~270 B EMF line per container and metrics interval
# (60 s), so one line per invocation is an upper bound; Lambda's own lines are off (WARN).
# `make bench` measures it (log_bytes_per_batch).
FORWARDER_LOG_BYTES = 270
# SendMessage in-region p50 as a client sees it (~8 ms), the SDK's own work on a full core
# included. The edge's billed duration is that, plus all its CPU (measured by `make bench`, the
# SDK's included) stretched to Lambda's share of a core, less the full-speed SDK work already in
# the 8 ms.
AWS_SQS_SEND_MS = 8.0
# Lambda's CPU share grows with memory: "at 1,769 MB, a function has the equivalent of one vCPU"
# (AWS Lambda docs). Work measured on one core here takes 1,769/memory times as long there.
LAMBDA_MB_PER_VCPU = 1769
EDGE_MEMORY_MB = 512  # .chalice/config.json
FORWARDER_MEMORY_MB = 256
# A DynamoDB GetItem/PutItem/UpdateItem in-region as a client sees it (p50; "single-digit
# milliseconds"), the SDK's own work on a full core included, like AWS_SQS_SEND_MS. At the edge's
# share of a core the SDK's work takes longer: that stretch is added from the bench's measured
# CPU of one botocore call (its bare SendMessage), else this default, measured 2026-12-02.
AWS_DYNAMODB_CALL_MS = 5.0
DEFAULT_SDK_CALL_CPU_MS = 0.82
# What a backend request adds to its events on the wire: request line, headers (Authorization,
# Content-Type, Host...), the `{"events": [...]}` wrapper and TLS record overhead.
BACKEND_REQUEST_OVERHEAD_BYTES = 700
# Fixed monthly costs: CloudWatch bills 730 hours a month.
MONTH_SECONDS = 730 * 3600
# Lambda polls an idle SQS queue with 5 long polls of 20 s each (AWS Lambda docs: the event source
# mapping starts with five pollers); at low traffic they also share what arrives.
SQS_POLLERS = 5
SQS_LONG_POLL_SECONDS = 20
BATCHING_WINDOW_SECONDS = 1  # app.py: maximum_batching_window_in_seconds
KEY_SYNC_EVERY_SECONDS = 300  # app.py: rate(5 minutes)
KEY_SYNC_MEMORY_MB = 512  # .chalice/config.json
# A key sync run that changes nothing: connect, query MySQL, Scan the keys table, compare
# (assumed for ~10,000 keys; the bench's 100,000-key run is moto's Scan, not DynamoDB's).
KEY_SYNC_SECONDS = 1.0
# EMF metrics a healthy stack publishes every hour (CloudWatch bills a custom metric per hour it
# receives data): the edge's accepted count, the forwarder's delivered/duplicate counts and
# Lookout's latency, and the key sync's seven. Refusals, retries and failures are billed only for
# the hours they happen (chalicelib/runtime/observability.py, forward/handler.py, keysync/job.py).
HOURLY_METRICS = (
    ("api", "accepted"),
    ("forwarder", "forwarded"),
    ("forwarder", "duplicate"),
    ("forwarder", "backend_latency"),
    ("sync", "sync_scanned"),
    ("sync", "sync_written"),
    ("sync", "sync_deleted"),
    ("sync", "sync_skipped"),
    ("sync", "sync_failed"),
    ("sync", "sync_deletes_refused"),
    ("sync", "sync_duration"),
)


def at_lambda_speed(cpu_ms: float, memory_mb: int) -> float:
    """CPU milliseconds measured on one core here, as a Lambda function of `memory_mb` spends them."""
    return round(float(cpu_ms) * LAMBDA_MB_PER_VCPU / memory_mb, 3)


def dynamodb_call_billed_ms(sdk_call_cpu_ms: float = DEFAULT_SDK_CALL_CPU_MS, memory_mb: int = EDGE_MEMORY_MB) -> float:
    """One DynamoDB call inside the edge: its latency, plus the SDK's CPU stretched to the
    function's share of a core less what of it the latency already holds."""
    return round(AWS_DYNAMODB_CALL_MS + at_lambda_speed(sdk_call_cpu_ms, memory_mb) - sdk_call_cpu_ms, 3)


DEFAULT_DYNAMODB_MS = dynamodb_call_billed_ms()


@dataclass(frozen=True)
class CostInputs:
    event_bytes: int = 1024
    events_per_request: int = 1
    batch_size: int = 10  # forwarder: SQS messages per invocation (1-100, ForwarderBatchSize)
    front_door: str = "rest"
    cache_hit_ratio: float = 0.95  # key lookups answered by the container's cache
    idempotency_share: float = 0.0  # requests with an Idempotency-Key header
    rate_limited_share: float = 0.0  # requests whose project has a rate limit
    edge_ms: float = DEFAULT_EDGE_MS
    forwarder_ms: float = DEFAULT_FORWARDER_MS
    edge_memory_mb: int = EDGE_MEMORY_MB
    forwarder_memory_mb: int = FORWARDER_MEMORY_MB
    architecture: str = "arm64"  # lambda_architecture in .chalice/config.json
    edge_log_bytes: float = EDGE_LOG_BYTES  # CloudWatch Logs bytes per edge request
    forwarder_log_bytes: float = FORWARDER_LOG_BYTES  # per forwarder invocation
    # Edge time per DynamoDB call (idempotency claim and finish, rate counter settle, key cache miss).
    dynamodb_call_ms: float = DEFAULT_DYNAMODB_MS
    cf_cpu_ms_per_request: float = 1.0  # Cloudflare: Worker CPU per ingest request (assumed)
    cf_cpu_ms_per_batch: float = 2.0  # Cloudflare: consumer CPU per queue batch (assumed)


@dataclass
class Estimate:
    """Dollars per million events, line by line; egress apart (`aws_total` is before it)."""

    aws: dict[str, float] = field(default_factory=dict)
    cloudflare: dict[str, float] = field(default_factory=dict)
    aws_egress: float = 0.0  # data transfer out to the Lookout backend
    cloudflare_egress: float = 0.0  # Workers bill no egress

    @property
    def aws_total(self) -> float:
        return sum(self.aws.values())

    @property
    def cloudflare_total(self) -> float:
        return sum(self.cloudflare.values())


def sqs_billed_requests(messages: int, message_bytes: int, chunk_bytes: int) -> int:
    """SQS requests billed for sending `messages` in batches of up to 10: each call is one
    request per started 64 KB of its payload."""
    billed = 0
    for start in range(0, messages, 10):
        in_call = min(10, messages - start)
        billed += max(1, math.ceil(in_call * message_bytes / chunk_bytes))
    return billed


def lambda_cost(invocations: float, memory_mb: int, billed_ms: float, prices: dict[str, Any], arch: str) -> float:
    """Requests plus GB-seconds for `billed_ms` per invocation (Lambda bills per started millisecond)."""
    gb_seconds = invocations * (memory_mb / 1024) * (billed_ms / 1000)
    return invocations * prices["per_million_requests"] / MILLION + gb_seconds * prices[f"per_gb_second_{arch}"]


def settles_per_limited_request(events_per_request: int) -> float:
    """Rate counter writes per request of a rate-limited project at steady load below its limit:
    one per SETTLE_EVENTS events, at most one per request (docs/rate-limits.md)."""
    return min(1.0, events_per_request / SETTLE_EVENTS)


def edge_billed_ms(inputs: CostInputs) -> float:
    """Expected billed milliseconds of an edge request: its measured time plus the DynamoDB calls
    it makes (2 for an Idempotency-Key, 1 for a rate counter settle, 1 for a key cache miss),
    each request billed per started millisecond."""
    settle = inputs.rate_limited_share * settles_per_limited_request(inputs.events_per_request)
    odds = ((inputs.idempotency_share, 2), (settle, 1), (1 - inputs.cache_hit_ratio, 1))
    expected = 0.0
    for made in itertools.product((False, True), repeat=len(odds)):
        chance = math.prod(share if m else 1 - share for (share, _), m in zip(odds, made, strict=True))
        calls = sum(n for (_, n), m in zip(odds, made, strict=True) if m)
        expected += chance * math.ceil(inputs.edge_ms + calls * inputs.dynamodb_call_ms)
    return expected


def estimate(inputs: CostInputs, prices: dict[str, Any]) -> Estimate:
    """$ per million events for the AWS edge and for the Cloudflare Worker + Queues setup."""
    if inputs.front_door not in FRONT_DOORS:
        raise ValueError(f"front door must be one of {', '.join(FRONT_DOORS)}")
    requests = MILLION / inputs.events_per_request
    message_bytes = inputs.event_bytes + ENVELOPE_BYTES
    invocations = MILLION / inputs.batch_size
    sqs, ddb = prices["sqs"], prices["dynamodb"]
    result = Estimate()

    gateway = prices["api_gateway"]
    if inputs.front_door == "rest":
        result.aws["API Gateway REST"] = requests * gateway["rest_per_million_requests"] / MILLION
    elif inputs.front_door == "http":
        units = math.ceil(inputs.event_bytes * inputs.events_per_request / gateway["http_metering_bytes"])
        result.aws["API Gateway HTTP API"] = requests * max(1, units) * gateway["http_per_million_requests"] / MILLION
    else:
        result.aws["Lambda function URL"] = requests * prices["lambda_function_url"]["per_million_requests"] / MILLION
    result.aws["Lambda edge"] = lambda_cost(
        requests, inputs.edge_memory_mb, edge_billed_ms(inputs), prices["lambda"], inputs.architecture
    )
    send = requests * sqs_billed_requests(inputs.events_per_request, message_bytes, sqs["billing_chunk_bytes"])
    receive = invocations * sqs_billed_requests(inputs.batch_size, message_bytes, sqs["billing_chunk_bytes"])
    delete = invocations * math.ceil(inputs.batch_size / 10)  # DeleteMessageBatch: 10 a call, no payload
    result.aws["SQS send/receive/delete"] = (send + receive + delete) * sqs["standard_per_million_requests"] / MILLION
    reads = requests * (1 - inputs.cache_hit_ratio) * ddb["eventually_consistent_read_units"]
    settles = inputs.rate_limited_share * settles_per_limited_request(inputs.events_per_request)
    writes = requests * (2 * inputs.idempotency_share + settles)  # claim + finish; the counter's settles
    result.aws["DynamoDB"] = (
        reads * ddb["on_demand_per_million_read_units"] + writes * ddb["on_demand_per_million_write_units"]
    ) / MILLION
    result.aws["Lambda forwarder"] = lambda_cost(
        invocations, inputs.forwarder_memory_mb, math.ceil(inputs.forwarder_ms), prices["lambda"], inputs.architecture
    )
    log_bytes = requests * inputs.edge_log_bytes + invocations * inputs.forwarder_log_bytes
    result.aws["CloudWatch Logs"] = log_bytes / 1e9 * prices["cloudwatch_logs"]["per_gb_ingested"]
    # Every event leaves AWS once, in its queue message, to the Lookout backend: one request per batch.
    egress_bytes = MILLION * message_bytes + invocations * BACKEND_REQUEST_OVERHEAD_BYTES
    result.aws_egress = egress_bytes / 1e9 * prices["data_transfer"]["out_to_internet_per_gb"]

    cf = prices["cloudflare"]
    result.cloudflare["Workers requests"] = (requests + invocations) * cf["workers_per_million_requests"] / MILLION
    cpu_ms = requests * inputs.cf_cpu_ms_per_request + invocations * inputs.cf_cpu_ms_per_batch
    result.cloudflare["Workers CPU"] = cpu_ms * cf["workers_per_million_cpu_ms"] / MILLION
    # The same key cache as the edge's: a Worker keeps what it read from KV in its isolate's
    # memory, so only misses are billed KV reads (KV's own edge cache bills every read).
    result.cloudflare["KV reads"] = requests * (1 - inputs.cache_hit_ratio) * cf["kv_per_million_reads"] / MILLION
    operations = MILLION * cf["queues_operations_per_message"] * math.ceil(message_bytes / cf["queues_operation_bytes"])
    result.cloudflare["Queues"] = operations * cf["queues_per_million_operations"] / MILLION
    return result


# A keys item is well under 1 KB: one write unit, a tenth of a 4 KB read unit (multi-region, key sync).
KEY_ITEM_BYTES = 400


@dataclass
class FixedMonthly:
    """Dollars a month whatever the traffic, line by line."""

    aws: dict[str, float] = field(default_factory=dict)
    cloudflare: dict[str, float] = field(default_factory=dict)


def stack_alarm_metrics(sink_alarms: int = 0, home: bool = True) -> int:
    """Alarm metrics a region's stack bills (a metric-math alarm, one per metric in it): every alarm
    of infra/resources.json, the key sync's in its `home` region only, and `sink_alarms` sinks'."""
    from edgectl.resources import load_template

    billed = 0
    for resource in load_template()["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        condition = resource.get("Condition")
        if condition == "SyncsHere":
            exists = home
        elif condition is not None:  # AlarmsSink<N>
            exists = int(condition.removeprefix("AlarmsSink")) <= sink_alarms
        else:
            exists = True
        if not exists:
            continue
        metrics = resource["Properties"].get("Metrics")
        billed += sum("MetricStat" in metric for metric in metrics) if metrics else 1
    return billed


def fixed_monthly(prices: dict[str, Any], keys: int = 10_000, sink_alarms: int = 0, home: bool = True) -> FixedMonthly:
    """What each side costs a month with no traffic at all: list prices, no free tier (as per event).
    Not `home`: another region's stack of a multi-region edge, where the key sync does not run."""
    from edgectl.resources import load_template

    cw, ddb = prices["cloudwatch"], prices["dynamodb"]
    resources = load_template()["Resources"].values()
    fixed = FixedMonthly()
    dashboards = sum(r["Type"] == "AWS::CloudWatch::Dashboard" for r in resources)
    fixed.aws["CloudWatch dashboard"] = dashboards * cw["dashboard_per_month"]
    alarm_metrics = stack_alarm_metrics(sink_alarms, home)
    fixed.aws[f"CloudWatch alarms ({alarm_metrics} metrics)"] = alarm_metrics * cw["alarm_metric_per_month"]
    metrics = [metric for metric in HOURLY_METRICS if home or metric[0] != "sync"]
    fixed.aws[f"EMF custom metrics ({len(metrics)})"] = len(metrics) * cw["custom_metric_per_month"]
    idle_receives = SQS_POLLERS * MONTH_SECONDS / SQS_LONG_POLL_SECONDS
    fixed.aws["idle SQS polling"] = idle_receives * prices["sqs"]["standard_per_million_requests"] / MILLION
    fixed.cloudflare["Workers Paid plan"] = prices["cloudflare"]["base_per_month"]
    if not home:
        return fixed
    runs = MONTH_SECONDS / KEY_SYNC_EVERY_SECONDS
    scan_units = math.ceil(keys * KEY_ITEM_BYTES / 4096) * ddb["eventually_consistent_read_units"]
    fixed.aws[f"key sync every 5 min ({keys:,} keys)"] = (
        lambda_cost(runs, KEY_SYNC_MEMORY_MB, KEY_SYNC_SECONDS * 1000, prices["lambda"], "arm64")
        + runs * scan_units * ddb["on_demand_per_million_read_units"] / MILLION
    )
    return fixed


@dataclass(frozen=True)
class Mix:
    """A realistic traffic mix (assumed; docs/cost.md says why): `--mix` changes any of it."""

    rate_limited_share: float = 0.5  # requests whose project has a rate limit
    idempotency_share: float = 0.1  # requests with an Idempotency-Key
    ndjson_share: float = 0.3  # events that arrive in NDJSON requests (log shippers, batching SDKs)
    ndjson_lines: int = 20  # events per NDJSON request
    batch_fill: float = 1.0  # the fullest a forwarder batch gets, as a share of the batch size

    FIELDS = {
        "rate_limited": "rate_limited_share",
        "keyed": "idempotency_share",
        "ndjson": "ndjson_share",
        "lines": "ndjson_lines",
        "fill": "batch_fill",
    }

    @classmethod
    def parse(cls, spec: str) -> Mix:
        """`rate_limited=0.5,keyed=0.1,ndjson=0.3,lines=20,fill=1`; what is not named keeps its default."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in cls.FIELDS or not value:
                raise ValueError(f"--mix takes {', '.join(f'{n}=...' for n in cls.FIELDS)}; got {part!r}")
            attribute = cls.FIELDS[name.strip()]
            values[attribute] = int(value) if attribute == "ndjson_lines" else float(value)
        return cls(**values)


VOLUMES = (1_000_000, 10_000_000, 100_000_000)  # events a month in the mix table


def messages_per_batch(events_per_month: float, batch_size: int, fill: float) -> int:
    """What a forwarder invocation gets: what arrives in the batching window, shared by the
    pollers, at least one, at most `fill` of the batch size."""
    arriving = events_per_month / MONTH_SECONDS * BATCHING_WINDOW_SECONDS / SQS_POLLERS
    return max(1, min(int(batch_size * fill), round(arriving)))


@dataclass
class MixCost:
    """One front door at one monthly volume: $ per million events, and what they are made of."""

    front_door: str
    events_per_month: int
    batch: int
    aws: float  # variable, before egress
    aws_egress: float
    aws_fixed_per_million: float
    cloudflare: float
    cloudflare_fixed_per_million: float

    @property
    def aws_all_in(self) -> float:
        return self.aws + self.aws_egress + self.aws_fixed_per_million

    @property
    def cloudflare_all_in(self) -> float:
        return self.cloudflare + self.cloudflare_fixed_per_million


def mix_cost(base: CostInputs, mix: Mix, events_per_month: int, prices: dict[str, Any], fixed: FixedMonthly) -> MixCost:
    """$ per million events of `mix` through `base.front_door` at `events_per_month`: single events
    and NDJSON requests weighted by their share of events, the fixed costs spread over the volume."""
    batch = messages_per_batch(events_per_month, base.batch_size, mix.batch_fill)
    single = replace(
        base,
        events_per_request=1,
        batch_size=batch,
        rate_limited_share=mix.rate_limited_share,
        idempotency_share=mix.idempotency_share,
    )
    parts = ((1 - mix.ndjson_share, single), (mix.ndjson_share, replace(single, events_per_request=mix.ndjson_lines)))
    estimates = [(weight, estimate(inputs, prices)) for weight, inputs in parts]
    millions = events_per_month / MILLION
    return MixCost(
        front_door=base.front_door,
        events_per_month=events_per_month,
        batch=batch,
        aws=sum(w * e.aws_total for w, e in estimates),
        aws_egress=sum(w * e.aws_egress for w, e in estimates),
        aws_fixed_per_million=sum(fixed.aws.values()) / millions,
        cloudflare=sum(w * (e.cloudflare_total + e.cloudflare_egress) for w, e in estimates),
        cloudflare_fixed_per_million=sum(fixed.cloudflare.values()) / millions,
    )


@dataclass(frozen=True)
class RegionsInputs:
    regions: int  # edge regions, the home region included
    key_changes_per_month: int = 10_000  # keys the sync writes or deletes (each replicates to every replica)
    dns_queries_per_event: float = 0.05  # Route 53 queries per event: resolvers cache the answer for its TTL


@dataclass
class MultiRegionExtra:
    """What more regions add: monthly dollars, and dollars per million events."""

    monthly: dict[str, float] = field(default_factory=dict)
    per_million_events: dict[str, float] = field(default_factory=dict)
    dns_if_billed: float = 0.0  # $ per million events were the alias queries billed (a CNAME setup)


def multi_region_extra(inputs: RegionsInputs, prices: dict[str, Any]) -> MultiRegionExtra:
    """The extra cost of `inputs.regions` regions over one: replicated key writes, health checks and
    each added region's own stack per month, Route 53 queries per event. Traffic costs do not grow:
    each event is still handled once, in one region."""
    if inputs.regions < 1:
        raise ValueError("regions must be at least 1")
    mr = prices["multi_region"]
    replicas = inputs.regions - 1
    extra = MultiRegionExtra()
    if replicas == 0:
        return extra
    replicated = inputs.key_changes_per_month * replicas
    transfer = replicated * KEY_ITEM_BYTES / 1e9 * mr["cross_region_transfer_per_gb"]
    extra.monthly["replicated key writes"] = (
        replicated * mr["dynamodb_replicated_write_units_per_million"] / MILLION + transfer
    )
    # Per region: the HTTPS endpoint check, the 5xx-alarm check and the check combining both.
    endpoint = mr["health_check_non_aws_endpoint_per_month"] + mr["health_check_optional_feature_per_month"]
    extra.monthly["Route 53 health checks"] = inputs.regions * (
        endpoint + 2 * mr["health_check_calculated_or_metric_per_month"]
    )
    # Each added region's own stack (no key sync there; a sink's alarm only where AlarmSink<N> names
    # it), plus the replication-lag alarm global.json adds for it.
    region = sum(fixed_monthly(prices, home=False).aws.values())
    extra.monthly["each added region's stack"] = replicas * (region + prices["cloudwatch"]["alarm_metric_per_month"])
    extra.dns_if_billed = inputs.dns_queries_per_event * mr["route53_latency_queries_per_million"]
    extra.per_million_events["Route 53 latency queries"] = (
        0.0 if mr["route53_alias_queries_to_aws_free"] else extra.dns_if_billed
    )
    return extra


def format_multi_region(inputs: RegionsInputs, extra: MultiRegionExtra) -> str:
    lines = [
        "",
        f"multi-region: {inputs.regions} regions ({inputs.regions - 1} replicas), {inputs.key_changes_per_month} key "
        f"changes a month, {inputs.dns_queries_per_event:g} DNS queries per event (docs/multi-region.md)",
        f"  {'extra, per month':<28} $",
    ]
    lines += [f"  {name:<28} {dollars:>10.4f}" for name, dollars in extra.monthly.items()]
    lines.append(f"  {'total per month':<28} {sum(extra.monthly.values()):>10.4f}")
    lines.append(f"  {'extra, per 1M events':<28} $")
    for name, dollars in extra.per_million_events.items():
        note = (
            f"   (alias to API Gateway: free; billed, e.g. as a CNAME: {extra.dns_if_billed:.4f})"
            if dollars == 0
            else ""
        )
        lines.append(f"  {name:<28} {dollars:>10.4f}{note}")
    return "\n".join(lines)


# Spilling (chalicelib/edge/spill.py, docs/reliability.md): what the edge waits per request more
# than usual. A SendMessageBatch across regions takes 70-250 ms as a client sees it (this much
# instead of the in-region call's AWS_SQS_SEND_MS); a stalled regional try waits its read timeout,
# 0.5 s at the default budget (runtime/deadline's step for half of ~3.3 s). Only a container's
# probes try the region while it is down: one per BACKOFF_LONGEST_SECONDS once its back-off is
# at its longest (a few more in the first 15 s of an outage).
CROSS_REGION_SEND_MS = 150.0
STALLED_TRY_MS = 500.0


@dataclass(frozen=True)
class SpillInputs:
    events_per_second: float = 100.0
    event_bytes: int = 1024
    events_per_request: int = 1
    architecture: str = "arm64"
    edge_memory_mb: int = EDGE_MEMORY_MB


def spill_hour(inputs: SpillInputs, prices: dict[str, Any]) -> dict[str, float]:
    """Dollars one hour of spilling costs beyond the same hour without it: the bytes sent across
    regions, the probes' SendMessageBatch calls to the regional queue (counted as billed:
    conservative), and the edge's extra wait: every request's cross-region call, and while the
    regional SQS stalls each probe's read timeout. Probes: one per container every
    BACKOFF_LONGEST_SECONDS, with at least as many containers as the spilling load keeps busy
    (requests/s x the cross-region call). The fallback region's forwarder delivers the events
    instead of this region's: no extra."""
    events = inputs.events_per_second * 3600
    requests = events / inputs.events_per_request
    message_bytes = inputs.event_bytes + ENVELOPE_BYTES
    per_batch = min(inputs.events_per_request, 10)
    chunks = math.ceil(per_batch * message_bytes / prices["sqs"]["billing_chunk_bytes"])
    containers = max(1, math.ceil(requests / 3600 * CROSS_REGION_SEND_MS / 1000))
    probes = containers * 3600 / BACKOFF_LONGEST_SECONDS
    gb_second = prices["lambda"][f"per_gb_second_{inputs.architecture}"] * inputs.edge_memory_mb / 1024
    cross_region_waits = requests * (CROSS_REGION_SEND_MS - AWS_SQS_SEND_MS)
    probe_calls = probes * math.ceil(inputs.events_per_request / 10) * chunks
    return {
        "cross-region transfer": events * message_bytes / 1e9 * prices["multi_region"]["cross_region_transfer_per_gb"],
        "the probes' SendMessage": probe_calls * prices["sqs"]["standard_per_million_requests"] / MILLION,
        "edge waiting, SQS answering errors": cross_region_waits / 1000 * gb_second,
        "edge waiting, SQS stalled": (cross_region_waits + probes * STALLED_TRY_MS) / 1000 * gb_second,
    }


def format_spill(inputs: SpillInputs, hour: dict[str, float]) -> str:
    common = hour["cross-region transfer"] + hour["the probes' SendMessage"]
    lines = [
        "",
        f"an hour of spilling to the fallback queue at {inputs.events_per_second:g} events/s ({inputs.event_bytes} B "
        f"events, {inputs.events_per_request} per request), beyond the same hour without (docs/reliability.md)",
        f"  {'extra, per hour':<36} $",
    ]
    lines += [f"  {name:<36} {dollars:>10.4f}" for name, dollars in hour.items()]
    lines.append(
        f"  {'total while SQS answers errors':<36} {common + hour['edge waiting, SQS answering errors']:>10.4f}"
    )
    lines.append(f"  {'total while SQS stalls':<36} {common + hour['edge waiting, SQS stalled']:>10.4f}")
    return "\n".join(lines)


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    return json.loads(path.read_text())


def latest_bench(directory: Path = BENCH_RESULTS) -> tuple[Path, dict[str, Any]] | None:
    """The newest bench result (file names sort by time), or None."""
    files = sorted(directory.glob("bench-*.json"))
    return (files[-1], json.loads(files[-1].read_text())) if files else None


class Measured(TypedDict, total=False):
    """The CostInputs a bench result measures (each only where its benchmark succeeded)."""

    edge_ms: float
    dynamodb_call_ms: float
    forwarder_ms: float
    forwarder_log_bytes: float
    edge_log_bytes: float
    batch_size: int  # the forwarder batch its forwarder figures are for


def measured_durations(results: dict[str, Any]) -> Measured:
    """edge_ms / forwarder_ms / edge_log_bytes / forwarder_log_bytes from a bench result, where
    those benchmarks succeeded."""
    sections = results.get("sections", {})
    found: Measured = {}
    edge = sections.get("edge", {})
    if "edge_cpu_ms_median" in edge and "bare_send_cpu_ms_median" in edge:
        stretched = at_lambda_speed(edge["edge_cpu_ms_median"], EDGE_MEMORY_MB)
        found["edge_ms"] = round(AWS_SQS_SEND_MS + stretched - float(edge["bare_send_cpu_ms_median"]), 3)
        found["dynamodb_call_ms"] = dynamodb_call_billed_ms(float(edge["bare_send_cpu_ms_median"]))
    elif "edge_ms_median" in edge:
        found["edge_ms"] = float(edge["edge_ms_median"])
        if "bare_send_ms_median" in edge:  # moto's SendMessage out, SQS's in
            found["edge_ms"] = max(0.0, found["edge_ms"] - float(edge["bare_send_ms_median"])) + AWS_SQS_SEND_MS
    forwarder = sections.get("forwarder", {})
    if "batch_cpu_ms_median" in forwarder:
        found["forwarder_ms"] = forwarder_ms(forwarder)
    elif "batch_ms_median" in forwarder:
        found["forwarder_ms"] = float(forwarder["batch_ms_median"])
    if "log_bytes_per_batch" in forwarder:
        found["forwarder_log_bytes"] = float(forwarder["log_bytes_per_batch"])
    if "batch_size" in forwarder:  # the batch those figures are for (older results: 10)
        found["batch_size"] = int(forwarder["batch_size"])
    lambda_like = sections.get("cold", {}).get("lambda_like") or {}
    if "log_bytes_per_event" in lambda_like:
        found["edge_log_bytes"] = float(lambda_like["log_bytes_per_event"])
    return found


def forwarder_ms(figures: dict[str, Any]) -> float:
    """A bench batch's billed time: the backend's answer, then the forwarder's CPU at Lambda's share."""
    return float(figures["backend_ms"]) + at_lambda_speed(figures["batch_cpu_ms_median"], FORWARDER_MEMORY_MB)


def forwarder_by_batch_size(*directories: Path) -> dict[int, Measured]:
    """Forwarder duration and log bytes per batch, by batch size, from the newest bench that has them."""
    paths = [
        p for directory in directories or (BENCH_RESULTS, REFERENCE_RESULTS) for p in directory.glob("bench-*.json")
    ]
    for path in sorted(paths, key=lambda path: path.name, reverse=True):
        forwarder = json.loads(path.read_text()).get("sections", {}).get("forwarder", {})
        if "by_batch" in forwarder:
            return {
                int(size): {
                    "forwarder_ms": forwarder_ms(figures),
                    "forwarder_log_bytes": float(figures["log_bytes_per_batch"]),
                }
                for size, figures in forwarder["by_batch"].items()
            }
    return {}


def format_by_batch_size(base: CostInputs, by_batch: dict[int, Measured], prices: dict[str, Any]) -> str:
    """$ per million events by forwarder batch size (the lines that depend on it, and the total)."""
    from dataclasses import replace

    lines = [
        "",
        f"by forwarder batch size (make bench: 50 ms backend; front door {base.front_door}), $ per 1M events",
        f"  {'batch':>5} {'ms/batch':>9} {'forwarder':>10} {'SQS':>8} {'logs':>8} {'total AWS':>10}",
    ]
    for size, measured in sorted(by_batch.items()):
        inputs = replace(replace(base, batch_size=size), **measured)
        result = estimate(inputs, prices)
        lines.append(
            f"  {size:>5} {inputs.forwarder_ms:>9.1f} {result.aws['Lambda forwarder']:>10.4f} "
            f"{result.aws['SQS send/receive/delete']:>8.4f} {result.aws['CloudWatch Logs']:>8.4f} "
            f"{result.aws_total:>10.4f}"
        )
    return "\n".join(lines)


def measured_inputs(*directories: Path) -> Measured:
    """Each measurement from the newest bench result that has it (a `BENCH_ONLY` run has only some),
    in `directories` (default: local runs, then the reference)."""
    return measured_with_sources(*directories)[0]


def measured_with_sources(*directories: Path) -> tuple[Measured, list[Path]]:
    """`measured_inputs`, and the result files the measurements came from."""
    paths = [
        path
        for directory in directories or (BENCH_RESULTS, REFERENCE_RESULTS)
        for path in directory.glob("bench-*.json")
    ]
    found: Measured = {}
    sources: list[Path] = []
    for path in sorted(paths, key=lambda path: path.name, reverse=True):  # names carry the UTC time
        measured = measured_durations(json.loads(path.read_text()))
        if measured.keys() - found.keys():
            found = {**measured, **found}  # a newer file's measurement stands
            sources.append(path)
    return found, sources


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cost", help="$ per million events: this edge on AWS beside Cloudflare")
    parser.add_argument("--event-kb", type=float, default=1.0, help="event size in KB (default 1)")
    parser.add_argument("--events-per-request", type=int, default=1, help="NDJSON lines per request (default 1)")
    parser.add_argument(
        "--batch-size", type=int, help="forwarder SQS batch size, 1-100 (default: the latest bench's, else 10)"
    )
    parser.add_argument("--front-door", choices=FRONT_DOORS, default=None, help="default: all three")
    parser.add_argument("--cache-hit", type=float, default=0.95, help="key cache hit ratio (default 0.95)")
    parser.add_argument("--idempotency-share", type=float, default=0.0, help="share of requests with Idempotency-Key")
    parser.add_argument("--rate-limited-share", type=float, default=0.0, help="share of requests with a rate limit")
    parser.add_argument("--edge-ms", type=float, help="edge Lambda duration (default: latest bench, else 15)")
    parser.add_argument("--forwarder-ms", type=float, help="forwarder duration (default: latest bench, else 80)")
    parser.add_argument(
        "--edge-log-bytes", type=float, help="log bytes per edge request (default: latest bench, else 20)"
    )
    parser.add_argument(
        "--forwarder-log-bytes", type=float, help="log bytes per forwarder batch (default: latest bench, else 270)"
    )
    parser.add_argument("--arch", choices=("x86_64", "arm64"), default="arm64", help="default arm64, as deployed")
    parser.add_argument("--prices", type=Path, default=PRICES, help="prices file (default edgectl/prices.json)")
    parser.add_argument(
        "--mix",
        nargs="?",
        const="",
        metavar="rate_limited=0.5,keyed=0.1,ndjson=0.3,lines=20,fill=1",
        help="also a table of $/1M at 1, 10 and 100 M events a month for a realistic mix (these defaults)",
    )
    parser.add_argument("--keys", type=int, default=10_000, help="keys the key sync scans (fixed monthly; 10000)")
    parser.add_argument("--sink-alarms", type=int, default=0, help="sinks with an AlarmSink<N> alarm (0)")
    parser.add_argument("--regions", type=int, default=1, help="edge regions, home included: adds what they cost more")
    parser.add_argument("--key-changes-per-month", type=int, default=10_000, help="with --regions (default 10000)")
    parser.add_argument("--dns-queries-per-event", type=float, default=0.05, help="with --regions (default 0.05)")
    parser.add_argument(
        "--spill",
        type=float,
        metavar="EVENTS_PER_SECOND",
        help="also what an hour of spilling to the fallback queue at this rate costs (docs/reliability.md)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    prices = load_prices(args.prices)
    try:
        mix = Mix.parse(args.mix) if args.mix is not None else None
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    durations, sources = measured_with_sources()
    if durations:
        print(f"measured by make bench ({', '.join(str(path.relative_to(ROOT)) for path in sources)}): {durations}")
    else:
        print(f"no bench result: default durations edge {DEFAULT_EDGE_MS} ms, forwarder {DEFAULT_FORWARDER_MS} ms")
    by_batch = forwarder_by_batch_size()
    batch_size = args.batch_size or durations.get("batch_size", 10)
    durations.update(by_batch.get(batch_size, {}))  # the figures measured at that batch size, if any
    durations["batch_size"] = batch_size
    if args.edge_ms is not None:
        durations["edge_ms"] = args.edge_ms
    if args.forwarder_ms is not None:
        durations["forwarder_ms"] = args.forwarder_ms
    if args.edge_log_bytes is not None:
        durations["edge_log_bytes"] = args.edge_log_bytes
    if args.forwarder_log_bytes is not None:
        durations["forwarder_log_bytes"] = args.forwarder_log_bytes
    print(f"prices as of {prices['as_of']}, {prices['region']}, list prices without free tiers (edgectl/prices.json)")
    doors = [args.front_door] if args.front_door else list(FRONT_DOORS)
    inputs_by_door = {
        door: CostInputs(
            event_bytes=round(args.event_kb * 1024),
            events_per_request=args.events_per_request,
            front_door=door,
            cache_hit_ratio=args.cache_hit,
            idempotency_share=args.idempotency_share,
            rate_limited_share=args.rate_limited_share,
            architecture=args.arch,
            **durations,
        )
        for door in doors
    }
    for inputs in inputs_by_door.values():
        print(format_estimate(inputs, estimate(inputs, prices)))
    if by_batch:
        base = next(iter(inputs_by_door.values()))
        print(format_by_batch_size(base, by_batch, prices))
    fixed = fixed_monthly(prices, args.keys, args.sink_alarms)
    print(format_fixed(fixed))
    if mix is not None:
        rows = [
            mix_cost(inputs, mix, volume, prices, fixed) for inputs in inputs_by_door.values() for volume in VOLUMES
        ]
        print(format_mix(mix, rows))
    if args.regions > 1:
        regions = RegionsInputs(args.regions, args.key_changes_per_month, args.dns_queries_per_event)
        print(format_multi_region(regions, multi_region_extra(regions, prices)))
    if args.spill is not None:
        spill = SpillInputs(args.spill, round(args.event_kb * 1024), args.events_per_request, args.arch)
        print(format_spill(spill, spill_hour(spill, prices)))
    return 0


def format_estimate(inputs: CostInputs, result: Estimate) -> str:
    lines = [
        "",
        f"front door {inputs.front_door}: {inputs.event_bytes} B events, {inputs.events_per_request} per request, "
        f"forwarder batches of {inputs.batch_size}, edge {inputs.edge_ms:g} ms (+{inputs.dynamodb_call_ms:g} ms per "
        f"DynamoDB call), forwarder {inputs.forwarder_ms:g} ms, {inputs.architecture}, log "
        f"{inputs.edge_log_bytes:g} B/edge request, {inputs.forwarder_log_bytes:g} B/forwarder batch, "
        f"{inputs.cache_hit_ratio:.0%} key cache hits on both sides, {inputs.rate_limited_share:.0%} rate-limited, "
        f"{inputs.idempotency_share:.0%} with Idempotency-Key",
        f"  {'AWS (this edge)':<34} $ per 1M events",
    ]
    lines += [f"  {name:<34} {dollars:>10.4f}" for name, dollars in result.aws.items()]
    lines.append(f"  {'total AWS, before egress':<34} {result.aws_total:>10.4f}")
    lines.append(f"  {'egress to Lookout':<34} {result.aws_egress:>10.4f}")
    lines.append(f"  {'total AWS with egress':<34} {result.aws_total + result.aws_egress:>10.4f}")
    lines.append(f"  {'Cloudflare Workers + Queues':<34}")
    lines += [f"  {name:<34} {dollars:>10.4f}" for name, dollars in result.cloudflare.items()]
    lines.append(f"  {'total Cloudflare':<34} {result.cloudflare_total:>10.4f}")
    lines.append(f"  {'egress to Lookout':<34} {result.cloudflare_egress:>10.4f}   (Workers bill no egress)")
    total = result.cloudflare_total + result.cloudflare_egress
    lines.append(f"  {'total Cloudflare with egress':<34} {total:>10.4f}")
    return "\n".join(lines)


def format_fixed(fixed: FixedMonthly) -> str:
    lines = ["", "fixed, per month whatever the traffic (list prices, no free tier)", f"  {'AWS (this edge)':<34} $"]
    lines += [f"  {name:<34} {dollars:>10.2f}" for name, dollars in fixed.aws.items()]
    lines.append(f"  {'total AWS':<34} {sum(fixed.aws.values()):>10.2f}")
    lines.append(f"  {'Cloudflare Workers + Queues':<34}")
    lines += [f"  {name:<34} {dollars:>10.2f}" for name, dollars in fixed.cloudflare.items()]
    lines.append(f"  {'total Cloudflare':<34} {sum(fixed.cloudflare.values()):>10.2f}")
    return "\n".join(lines)


def format_mix(mix: Mix, rows: list[MixCost]) -> str:
    volumes = sorted({row.events_per_month for row in rows})
    by_door: dict[str, dict[int, MixCost]] = {}
    for row in rows:
        by_door.setdefault(row.front_door, {})[row.events_per_month] = row
    first = next(iter(by_door.values()))
    lines = [
        "",
        f"mix: {mix.rate_limited_share:.0%} of requests rate-limited, {mix.idempotency_share:.0%} with "
        f"Idempotency-Key, {mix.ndjson_share:.0%} of events in NDJSON requests of {mix.ndjson_lines}, forwarder "
        f"batches filled to {mix.batch_fill:.0%} at most (what arrives in {BATCHING_WINDOW_SECONDS} s, over "
        f"{SQS_POLLERS} pollers)",
        "  $ per 1M events, all in: variable + egress + the fixed monthly costs spread over the volume",
        f"  {'events a month':<28}" + "".join(f"{v / MILLION:>11g}M" for v in volumes),
        f"  {'forwarder batch':<28}" + "".join(f"{first[v].batch:>12}" for v in volumes),
    ]
    for door, by_volume in by_door.items():
        lines.append(f"  {'AWS ' + door:<28}" + "".join(f"{by_volume[v].aws_all_in:>12.4f}" for v in volumes))
        lines.append(f"  {'  of which egress':<28}" + "".join(f"{by_volume[v].aws_egress:>12.4f}" for v in volumes))
    lines.append(f"  {'Cloudflare':<28}" + "".join(f"{first[v].cloudflare_all_in:>12.4f}" for v in volumes))
    return "\n".join(lines)
