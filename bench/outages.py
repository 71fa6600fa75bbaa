"""Regional outage soak (issue #27 point 3): the edge region's SQS fails, then stalls, under steady load.

A local stack with two regions on one embedded AWS: the home region (us-east-1, the stack's own
queue, forwarder and receiver) and the edge's region (eu-west-1: its own tables and queue, an edge
and a forwarder of its own, the keys item copied over as replication would). The edge region's SQS and
DynamoDB calls go through tests.fault_proxy, which faults only requests signed for that region;
its fallback queue is the home region's (the multi-region default, chalicelib/edge/spill.py).

Phases, each `--phase-seconds` long, under steady load of single events and 10-line NDJSON
batches from several clients (a fifth with an Idempotency-Key): baseline; the region's SQS
answering errors (5xx; half of them after SQS took the batch), then stalled (reads the request,
never relays nor answers it); the same for the keys table, then the idempotency table (DynamoDB,
that table's calls only); recovered. Then the queues drain and every accepted event id is checked
against the receiver's database (one row per id) and both regions' dead-letter queues. While the
idempotency table is down, a request with an Idempotency-Key is a 503 by design (docs/reliability.md,
"DynamoDB down"); every other request must be a 202.

    python -m bench.outages --phase-seconds 60        # what `make soak` runs
    tests/integration/test_outages.py                 # the same at a few seconds per phase, in `make test`

It prints, per phase: requests, 202s, refusals by status, answer time (median, p99, max) as the
clients saw it, and the events the far edge spilled; then lost, duplicated and dead-lettered events.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak import Shot, event_ids, send, stored_rows
from edgectl.devstack import DevStack, StackOptions, free_port, wait_for_http
from tests.fault_proxy import FaultProxy, Faults

HOME, FAR = "us-east-1", "eu-west-1"
ERRORS = Faults(server_error=1.0, slow=0.0, reset=0.0)  # 5xx; half of them after the service took the call
STALLED = Faults(server_error=0.0, slow=0.0, reset=0.0, hang=1.0)  # reads the call, never relays nor answers


@dataclass(frozen=True)
class Phase:
    """What fails in the edge's region during a phase: `service`'s calls (on `table`, for DynamoDB)."""

    name: str
    service: str | None = None  # "sqs" or "dynamodb"; None: nothing fails
    faults: Faults | None = None
    table: str = ""  # "keys" or "idempotency"


PHASES = (
    Phase("baseline"),
    Phase("SQS errors", "sqs", ERRORS),
    Phase("SQS stalled", "sqs", STALLED),
    Phase("keys errors", "dynamodb", ERRORS, "keys"),
    Phase("keys stalled", "dynamodb", STALLED, "keys"),
    Phase("idem errors", "dynamodb", ERRORS, "idempotency"),
    Phase("idem stalled", "dynamodb", STALLED, "idempotency"),
    Phase("recovered"),
)
SPILLED = re.compile(r'"message":"regional queue failed; spilled to the fallback queue".*?"spilled":(\d+)')


@dataclass
class OutagePlan:
    phase_seconds: float = 4.0
    clients: int = 4
    rate: float = 12.0  # requests per second, all clients together
    ndjson_share: float = 0.3  # requests that are 10-line NDJSON batches; the rest are single events
    keyed_share: float = 0.2  # requests with an Idempotency-Key (the SDKs send none; Firehose always does)
    drain_seconds: float = 120.0  # how long the queues may take to empty after the last phase
    seed: int = 3


@dataclass
class PhaseReport:
    name: str
    requests: int = 0
    accepted: set[str] = field(default_factory=set)
    refused: Counter[int] = field(default_factory=Counter)  # status (0: no answer) -> requests
    keyed_refused: Counter[int] = field(default_factory=Counter)  # of those, requests with an Idempotency-Key
    keyed_accepted: int = 0  # requests with an Idempotency-Key answered 202
    seconds: list[float] = field(default_factory=list)  # each request's answer time, as the client saw it
    spilled: int = 0
    faulted: int = 0  # calls the fault proxy failed or held

    def row(self) -> str:
        times = sorted(self.seconds) or [0.0]
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        refused = dict(self.refused) or "-"
        keyed = f" ({sum(self.keyed_refused.values())} with an Idempotency-Key)" if self.keyed_refused else ""
        return (
            f"{self.name:<12} {self.requests:>8} {len(self.accepted):>8} {self.spilled:>8} {self.faulted:>7}   "
            f"{times[len(times) // 2]:>5.2f} {p99:>5.2f} {times[-1]:>5.2f}   {refused}{keyed}"
        )

    @property
    def unkeyed_refused(self) -> int:
        return sum(self.refused.values()) - sum(self.keyed_refused.values())


@dataclass
class OutageReport:
    phases: list[PhaseReport] = field(default_factory=list)
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    dead_lettered: int = 0
    timed_out: str | None = None
    load: str = ""

    @property
    def accepted(self) -> set[str]:
        return set().union(*(phase.accepted for phase in self.phases))

    @property
    def ok(self) -> bool:
        """Nothing refused but what the idempotency table's outage refuses by design (docs/reliability.md,
        "DynamoDB down": a request with an Idempotency-Key gets 503 while it is down), nothing lost,
        nothing stored twice, nothing dead-lettered."""
        refused = sum(
            sum(phase.refused.values()) if not phase.name.startswith("idem") else phase.unkeyed_refused
            for phase in self.phases
        )
        return (
            self.timed_out is None
            and refused == 0
            and self.lost == 0
            and self.duplicated == 0
            and (self.dead_lettered == 0)
        )

    def table(self) -> str:
        lines = [
            f"{'phase':<12} {'requests':>8} {'events':>8} {'spilled':>8} {'faulted':>7}   answer s: median p99 max"
            "   refused",
            *(phase.row() for phase in self.phases),
            f"events accepted (202) {len(self.accepted)}, stored {self.stored}, lost {self.lost}, "
            f"duplicated (rows per event_id > 1) {self.duplicated}, in a dead-letter queue {self.dead_lettered}",
            f"load average at the end: {self.load}",
            "RESULT: " + ("PASS" if self.ok else f"FAIL {self.timed_out or ''}".strip()),
        ]
        return "\n".join(lines)


def shot(number: int, key: str, rng: random.Random, ndjson_share: float, keyed_share: float = 0.0) -> Shot:
    """A single error report, or a 10-line NDJSON batch; some with an Idempotency-Key."""
    headers = {"Content-Type": "application/json", "X-Api-Key": key}
    if rng.random() < keyed_share:
        headers["Idempotency-Key"] = f"outage-{uuid.uuid4().hex}"
    if rng.random() >= ndjson_share:
        body = json.dumps({"message": f"outage {number}", "exception_class": "RuntimeException"}).encode()
        return Shot("/api/ingest", headers, body, 1)
    lines = b"\n".join(json.dumps({"event": "outage", "n": number, "line": i}).encode() for i in range(10))
    return Shot("/api/ingest/event", {**headers, "Content-Type": "application/x-ndjson"}, lines, 10)


def calls_of(region: str, proxy: FaultProxy, tables: dict[str, str]) -> Any:
    """Which calls the proxy faults: those signed for `region` (a SigV4 credential scope names it),
    and for DynamoDB only those on the table the phase names (`proxy.table`, a key of `tables`)."""

    def applies(headers: dict[str, str], body: bytes) -> bool:
        signed = f"/{region}/" in (headers.get("Authorization") or headers.get("authorization") or "")
        table = getattr(proxy, "table", "")
        return signed and (not table or f'"TableName":"{tables[table]}"'.encode() in body.replace(b'": "', b'":"'))

    return applies


class OutageSoak:
    def __init__(self, plan: OutagePlan, out: Any = sys.stdout):
        self.plan, self.out = plan, out
        self.report = OutageReport()
        self.workdir = Path(tempfile.mkdtemp(prefix="lookout-outages-"))
        self.receiver_db = f"receiver_outages_{uuid.uuid4().hex[:8]}"
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[outages {time.monotonic() - self.started:6.1f}s] {text}", file=self.out, flush=True)

    def run(self) -> OutageReport:
        from edgectl.lookout_fixture_db import LOCAL_SERVER_URL, drop_database

        key = f"lk_outage_{uuid.uuid4().hex}"
        options = StackOptions(
            edge_port=free_port(),
            receiver_port=free_port(),
            aws_port=free_port(),
            receiver_db_url=f"{LOCAL_SERVER_URL}/{self.receiver_db}",
            state_dir=self.workdir,
            demo_key=key,
            extra_env={"LOOKOUT_EDGE_RETRY_BASE_SECONDS": "1", "LOOKOUT_EDGE_RETRY_MAX_SECONDS": "1"},
        )
        log_path = self.workdir / "stack.log"
        with log_path.open("w") as log:
            stack = DevStack(options, out=log)
            proxies: dict[str, FaultProxy] = {}
            try:
                stack.start()
                assert stack.names is not None
                tables = {"keys": stack.names.keys_table, "idempotency": stack.names.idempotency_table}
                for service in ("sqs", "dynamodb"):
                    proxy = FaultProxy(stack.aws_url, Faults(0.0, 0.0, 0.0))
                    proxy.applies, proxy.enabled = calls_of(FAR, proxy, tables), False
                    proxies[service] = proxy.start()
                far_edge = self._far_region(stack, proxies, key)
                self.say(f"two regions up: far edge {far_edge}, its SQS and DynamoDB through fault proxies; {log_path}")
                for plan in PHASES:
                    for service, proxy in proxies.items():
                        proxy.enabled, proxy.faults = service == plan.service, plan.faults or Faults(0.0, 0.0, 0.0)
                        proxy.table = plan.table  # type: ignore[attr-defined]
                    spilled_before, faulted_before = _spilled(log_path), _faulted(proxies)
                    phase = self._phase(plan.name, far_edge, key)
                    phase.spilled = _spilled(log_path) - spilled_before
                    phase.faulted = _faulted(proxies) - faulted_before
                    self.report.phases.append(phase)
                    self.say(phase.row())
                for proxy in proxies.values():
                    proxy.enabled = False
                self._check(stack)
            except TimeoutError as exc:
                self.report.timed_out = str(exc)
            finally:
                stack.stop()
                for proxy in proxies.values():
                    proxy.stop()
                drop_database(LOCAL_SERVER_URL, self.receiver_db)
        self.report.load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        return self.report

    def _far_region(self, stack: DevStack, proxies: dict[str, FaultProxy], key: str) -> str:
        """The edge's region: its stack, the key replicated there, its edge (SQS and DynamoDB through
        the proxies) and forwarder."""
        assert stack.names is not None
        self.far = stack.create_region(FAR)
        for item in stack.client("dynamodb").scan(TableName=stack.names.keys_table)["Items"]:
            stack.client("dynamodb", FAR).put_item(TableName=self.far.keys_table, Item=item)
        region = {**self.far.environment(), "AWS_DEFAULT_REGION": FAR, "LOOKOUT_EDGE_HOME_REGION": HOME}
        # A key is fresh for 2 s, not 60: the keys phases ask the table (and serve the stale key) even when short.
        region["LOOKOUT_EDGE_KEY_CACHE_TTL"] = "2"
        port = free_port()
        edge = ["serve-edge", "--host", stack.options.host, "--port", str(port)]
        through = {f"AWS_ENDPOINT_URL_{service.upper()}": proxy.url for service, proxy in proxies.items()}
        stack.spawn("edge-far", edge, {**region, **through})
        stack.spawn("fwd-far", ["poll-forwarder", "--wait", "1"], region)
        url = f"http://{stack.options.host}:{port}"
        wait_for_http(f"{url}/health", 60)
        # Warm: the phases measure steady load, not the first request's imports and clients (a cold
        # request on a loaded machine can spend the whole budget before it reaches SQS).
        host, port_text = url.removeprefix("http://").split(":")
        for _ in range(10):
            if send(host, int(port_text), shot(0, key, random.Random(0), 0.0))[0] == 202:
                break
        return url

    def _phase(self, name: str, edge: str, key: str) -> PhaseReport:
        """Clients at `rate` requests per second for `phase_seconds`."""
        phase = PhaseReport(name)
        lock = threading.Lock()
        host, port = edge.removeprefix("http://").split(":")
        end = time.monotonic() + self.plan.phase_seconds
        interval = self.plan.clients / self.plan.rate

        def client(index: int) -> None:
            rng = random.Random(self.plan.seed * 1000 + index + 100 * len(self.report.phases))
            number = 0
            while (now := time.monotonic()) < end:
                request = shot(index * 1_000_000 + number, key, rng, self.plan.ndjson_share, self.plan.keyed_share)
                number += 1
                status, answer = send(host, int(port), request)
                took = time.monotonic() - now
                with lock:
                    phase.requests += 1
                    phase.seconds.append(took)
                    if status == 202:
                        phase.accepted.update(event_ids(answer))
                        phase.keyed_accepted += request.idempotent
                    else:
                        phase.refused[status] += 1
                        if request.idempotent:
                            phase.keyed_refused[status] += 1
                time.sleep(max(0.0, interval - took))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(self.plan.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return phase

    def _check(self, stack: DevStack) -> None:
        """Wait for both queues to drain and every accepted event to be stored, then count."""
        assert stack.names is not None
        accepted = self.report.accepted
        queues = ((HOME, stack.names.queue_url), (FAR, self.far.queue_url))
        deadline = time.monotonic() + self.plan.drain_seconds
        while True:
            rows = stored_rows(self.receiver_db)
            waiting = sum(_depth(stack, region, url) for region, url in queues)
            if not waiting and accepted <= {event_id for event_id, _ in rows}:
                break
            if time.monotonic() > deadline:
                self.say(f"still {waiting} queued after {self.plan.drain_seconds:g} s; counting what is stored")
                break
            time.sleep(1)
        counts = Counter(event_id for event_id, _ in rows)
        self.report.stored = len(accepted & set(counts))
        self.report.lost = len(accepted - set(counts))
        self.report.duplicated = sum(1 for event_id in accepted if counts[event_id] > 1)
        dlqs = ((HOME, stack.names.dlq_url), (FAR, self.far.dlq_url))
        self.report.dead_lettered = sum(_depth(stack, region, url) for region, url in dlqs)


def _depth(stack: DevStack, region: str, url: str) -> int:
    attributes = stack.client("sqs", region).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _faulted(proxies: dict[str, FaultProxy]) -> int:
    return sum(n for proxy in proxies.values() for fate, n in proxy.counts.items() if fate != "pass")


def _spilled(log_path: Path) -> int:
    """Events the far edge spilled so far: the sum over its `spilled` warnings in the stack's log."""
    return sum(int(n) for n in SPILLED.findall(log_path.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outages", description=__doc__.splitlines()[0])
    parser.add_argument("--phase-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=OutagePlan.clients)
    parser.add_argument("--rate", type=float, default=OutagePlan.rate, help="requests per second, all clients")
    parser.add_argument("--seed", type=int, default=OutagePlan.seed)
    args = parser.parse_args(argv)
    plan = OutagePlan(phase_seconds=args.phase_seconds, clients=args.clients, rate=args.rate, seed=args.seed)
    report = OutageSoak(plan).run()
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
