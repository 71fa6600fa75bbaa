"""Fault soak: "202 means Lookout will have it", under a hostile network and a killed forwarder.

`log` events also go to a Loki sink (the strict fake of tests/fake_sinks.py), which is down
for a while mid-run: every accepted log event must reach Loki too, and Lookout must not be
sent an event again because Loki failed (CONTRACT §11).

Runs a whole local stack of its own (moto server, edge over HTTP, forwarder pollers,
reference receiver on MariaDB) with tests.fault_proxy between the forwarder and the
receiver, drives a mix of real SDK-shaped requests, kills and restarts the forwarder
mid-run, opens a wrong-token window, then checks every accepted event_id against the
receiver's database and the dead-letter queue, redrives the DLQ with the real
`dlq redrive` command, and checks again.

    python -m bench.soak --events 50000      # what `make soak` runs (forwarder batches of up to 100)
    tests/integration/test_soak.py                       # the same at a few hundred events, in `make test`

Time is compressed, not the rules: the forwarder's read timeout and retry backoff are
short (config env vars) and the queue's visibility timeout is lowered from the template's
360 s, so a killed poller's in-flight batch comes back within seconds. maxReceiveCount
stays the template's 10.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl.devstack import ROOT, DevStack, StackOptions, free_port
from tests.fake_sinks import StrictLoki
from tests.fault_proxy import FaultProxy, Faults

REDRIVE_POLICY_REASON = "max_receives"  # a DLQ message without dlq_reason came through maxReceiveCount
LOG_PATH = "/api/ingest/log"
LOG_ENTRIES = 50  # lines per log event, as make_shot sends them


@dataclass
class SoakPlan:
    """Sizes and timings of one run; the defaults are the small `make test` run."""

    events: int = 400
    rate: float = 100.0  # events per second the clients send at most
    # Clients pause while the queue is deeper than this: one local moto process serves every
    # piece, so a backlog the pollers cannot work down only slows them all.
    max_backlog: int = 300
    clients: int = 3
    batch_size: int = 100  # messages per forwarder invocation (ForwarderBatchSize)
    pollers: int = 2  # forwarder processes: the stack's own plus extra ones (Lambda runs many)
    wrong_token_seconds: float = 12.0  # long enough for the template's 10 receives at 1 s backoff
    sink_outage_seconds: float = 12.0  # the Loki sink answers 503 this long, from 60 % of the traffic
    read_timeout: float = 0.5
    visibility_timeout: int = 10
    restarts: int = 1
    time_limit: float = 170.0
    seed: int = 1
    faults: Faults = field(default_factory=lambda: Faults(slow_seconds=0.8))


@dataclass
class SoakReport:
    attempted: int = 0
    accepted: set[str] = field(default_factory=set)
    accepted_logs: set[str] = field(default_factory=set)  # the accepted `log` events, also meant for Loki
    refused: Counter[int] = field(default_factory=Counter)  # edge status (0: no answer) → requests
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    duplicate_deliveries: int = 0
    replays: int = 0  # requests sent again with the same Idempotency-Key
    replay_mismatches: int = 0  # a replay's 202 named other event ids than the first 202: a double accept
    dead_lettered: int = 0
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    dlq_also_stored: int = 0
    redriven: int = 0
    stored_after_redrive: int = 0
    lost_after_redrive: int = 0
    duplicated_after_redrive: int = 0
    left_in_dlq: int = 0
    in_loki: int = 0
    lost_at_loki: int = 0
    duplicated_at_loki: int = 0  # an event's lines pushed more than once
    loki_outage_refusals: int = 0  # pushes the Loki sink answered 503 during its outage
    proxy: Counter[str] = field(default_factory=Counter)
    events_per_request: list[int] = field(default_factory=list)  # each backend request's events
    restarts: int = 0
    seconds: float = 0.0
    timed_out: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.timed_out is None
            and self.lost == 0
            and self.duplicated == 0
            and self.replay_mismatches == 0
            and self.lost_after_redrive == 0
            and self.duplicated_after_redrive == 0
            and self.left_in_dlq == 0
            and self.stored_after_redrive == len(self.accepted)
            and self.lost_at_loki == 0
        )

    def table(self) -> str:
        rows = [
            ("requests sent", self.attempted),
            ("events accepted (202)", len(self.accepted)),
            ("stored", self.stored),
            ("lost", self.lost),
            ("duplicated (rows per event_id > 1)", self.duplicated),
            ("duplicate deliveries absorbed (times_seen - 1)", self.duplicate_deliveries),
            ("idempotent retries (same Idempotency-Key)", self.replays),
            ("  answered with other event ids", self.replay_mismatches),
            ("dead-lettered (not stored)", self.dead_lettered),
            ("  in DLQ but already stored", self.dlq_also_stored),
            ("redriven", self.redriven),
            ("stored after redrive", self.stored_after_redrive),
            ("lost after redrive", self.lost_after_redrive),
            ("duplicated after redrive", self.duplicated_after_redrive),
            ("left in DLQ after redrive", self.left_in_dlq),
            ("log events accepted (also meant for Loki)", len(self.accepted_logs)),
            ("  in Loki after redrive", self.in_loki),
            ("  lost at Loki", self.lost_at_loki),
            ("  pushed to Loki more than once", self.duplicated_at_loki),
            ("  pushes refused during the Loki outage", self.loki_outage_refusals),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value:>8}" for name, value in rows]
        lines.append(f"DLQ reasons: {dict(self.dlq_reasons) or '-'}")
        lines.append(f"edge refusals by status: {dict(self.refused) or '-'}")
        lines.append(f"proxy faults: {dict(sorted(self.proxy.items()))}")
        sizes = sorted(self.events_per_request) or [0]
        lines.append(
            f"backend requests: {len(self.events_per_request)}, events per request median "
            f"{sizes[len(sizes) // 2]}, max {sizes[-1]}, {sum(s >= 50 for s in sizes)} of 50 or more"
        )
        lines.append(f"forwarder restarts: {self.restarts}; wall time {self.seconds:.0f} s")
        lines.append("RESULT: " + ("PASS" if self.ok else f"FAIL {self.timed_out or ''}".strip()))
        return "\n".join(lines)


# -- traffic -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shot:
    """One request: path, headers, body, and how many events it carries."""

    path: str
    headers: dict[str, str]
    body: bytes
    events: int

    @property
    def idempotent(self) -> bool:
        return "Idempotency-Key" in self.headers


def make_shot(number: int, key: str, rng: random.Random) -> Shot:
    """A request as a Lookout SDK would send it: error reports, RUM beacons, logs, NDJSON, jobs,
    traces; a fifth of them with an Idempotency-Key (the client may send those again)."""
    kind = rng.choice(["error", "error", "rum", "log", "ndjson", "job", "otlp", "metric"])
    headers = {"Content-Type": "application/json", "X-Api-Key": key}
    events = 1
    if kind == "error":
        path, doc = "/api/ingest", {"message": f"soak {number}", "exception_class": "RuntimeException", "api_key": key}
    elif kind == "rum":
        path, doc = "/api/ingest/rum", {"api_key": key, "type": "web-vitals", "lcp": rng.random() * 4000}
        headers = {"Content-Type": "text/plain"}
    elif kind == "log":
        path, doc = LOG_PATH, {"entries": [{"message": f"line {i}", "n": number} for i in range(LOG_ENTRIES)]}
    elif kind == "job":
        path, doc = "/api/ingest/job", {"job": "SoakJob", "status": "started", "n": number}
    elif kind == "otlp":
        path, doc = "/api/ingest/trace/otlp", {"resourceSpans": [{"scopeSpans": [], "n": number}]}
    elif kind == "metric":
        path, doc = "/api/ingest/metric", {"entries": [{"name": "m", "value": i} for i in range(100)]}
    else:
        events = 10
        path = "/api/ingest/event"
        headers["Content-Type"] = "application/x-ndjson"
        body = b"\n".join(json.dumps({"event": "soak", "n": number, "line": i}).encode() for i in range(events))
    if kind != "ndjson":
        body = json.dumps({**doc, "soak": number}).encode()
    if rng.random() < 0.3:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    if rng.random() < 0.2:
        headers["Idempotency-Key"] = f"soak-{uuid.uuid4().hex}"
    return Shot(path, headers, body, events)


def event_ids(answer: dict[str, Any]) -> list[str]:
    return answer.get("event_ids") or [answer["event_id"]]


def send(host: str, port: int, shot: Shot) -> tuple[int, dict[str, Any]]:
    """POST once on a fresh connection; (0, {}) when no answer came."""
    connection = http.client.HTTPConnection(host, port, timeout=15)
    try:
        connection.request("POST", shot.path, body=shot.body, headers=shot.headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    except (OSError, http.client.HTTPException, ValueError):
        return 0, {}
    finally:
        connection.close()


class Traffic:
    """Client threads sending until `plan.events` events were sent; they record every 202's ids."""

    def __init__(self, stack: DevStack, key: str, plan: SoakPlan, report: SoakReport):
        self.stack, self.key, self.plan, self.report = stack, key, plan, report
        self.sent_events = 0
        self.hold = False  # set by the runner while the queue is too deep
        self._next_due = time.monotonic()
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(plan.clients)]

    def start(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)

    def _client(self, index: int) -> None:
        rng = random.Random(self.plan.seed * 1000 + index)
        host, port = self.stack.options.host, self.stack.options.edge_port
        while True:
            with self._lock:
                if self.sent_events >= self.plan.events:
                    return
                number = next(self._numbers)
                shot = make_shot(number, self.key, rng)
                self.sent_events += shot.events
                due = max(self._next_due, time.monotonic())
                self._next_due = due + shot.events / self.plan.rate
            time.sleep(max(0.0, due - time.monotonic()))
            while self.hold:
                time.sleep(0.2)
            status, answer = send(host, port, shot)
            with self._lock:
                self.report.attempted += 1
                if status == 202:
                    self.report.accepted.update(event_ids(answer))
                    if shot.path == LOG_PATH:
                        self.report.accepted_logs.update(event_ids(answer))
                else:
                    self.report.refused[status] += 1
            if shot.idempotent:
                self._retry(shot, rng, host, port, event_ids(answer) if status == 202 else None)

    def _retry(self, shot: Shot, rng: random.Random, host: str, port: int, first: list[str] | None) -> None:
        """What a client does with an Idempotency-Key: send again after no answer, a 409 or a 503,
        and (half the time) after a 202 it did not see (a read timeout). A replay must name the
        same event ids as the request's first 202; the backend must store them once."""
        for attempt in range(3):
            if first is not None and (attempt > 0 or rng.random() < 0.5):
                return
            time.sleep(0.1 * (attempt + 1))
            status, answer = send(host, port, shot)
            with self._lock:
                self.report.attempted += 1
                self.report.replays += 1
                if status != 202:
                    self.report.refused[status] += 1
                    continue
                ids = event_ids(answer)
                if first is None:
                    first = ids
                    self.report.accepted.update(ids)
                    if shot.path == LOG_PATH:
                        self.report.accepted_logs.update(ids)
                elif ids != first:
                    self.report.replay_mismatches += 1
                    self.report.accepted.update(ids)


def stored_rows(database: str) -> list[tuple[str, int]]:
    """(event_id, times_seen) of every row in the receiver's events table (MariaDB `database`)."""
    import pymysql

    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT event_id, times_seen FROM events")
            return [(row[0], int(row[1])) for row in cursor.fetchall()]
    finally:
        connection.close()


# -- the run -------------------------------------------------------------------------------------
class Soak:
    def __init__(self, plan: SoakPlan, out: Any = sys.stdout):
        self.plan, self.out = plan, out
        self.report = SoakReport()
        self.deadline = time.monotonic() + plan.time_limit
        self.workdir = Path(tempfile.mkdtemp(prefix="lookout-soak-"))
        self.receiver_db = f"receiver_soak_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.extra_pollers: list[subprocess.Popen] = []

    def say(self, text: str) -> None:
        print(f"[soak {time.monotonic() - self.started:6.1f}s] {text}", file=self.out, flush=True)

    def run(self) -> SoakReport:
        from edgectl.lookout_fixture_db import LOCAL_SERVER_URL, drop_database

        self.started = time.monotonic()
        receiver_port = free_port()
        proxy = FaultProxy(f"http://127.0.0.1:{receiver_port}", self.plan.faults, seed=self.plan.seed).start()
        proxy.enabled = False  # no faults while the stack checks it is up
        self.loki = StrictLoki().start()
        loki_sink = {"name": "loki", "type": "loki", "url": self.loki.url, "signals": ["log"]}
        options = StackOptions(
            edge_port=free_port(),
            receiver_port=receiver_port,
            aws_port=free_port(),
            receiver_db_url=f"{LOCAL_SERVER_URL}/{self.receiver_db}",
            state_dir=self.workdir,
            demo_key=f"lk_soak_{uuid.uuid4().hex}",
            extra_env={
                "LOOKOUT_INGEST_EDGE_BACKEND_URL": proxy.url,
                "LOOKOUT_EDGE_FORWARD_CONNECT_TIMEOUT": "1",
                "LOOKOUT_EDGE_FORWARD_READ_TIMEOUT": str(self.plan.read_timeout),
                "LOOKOUT_EDGE_RETRY_BASE_SECONDS": "1",
                "LOOKOUT_EDGE_RETRY_MAX_SECONDS": "1",
                "LOOKOUT_EDGE_SINKS": json.dumps([loki_sink]),
                "LOOKOUT_EDGE_FORWARDER_BATCH_SIZE": str(self.plan.batch_size),
            },
        )
        self.log_path = self.workdir / "stack.log"
        with self.log_path.open("w") as log:
            stack = DevStack(options, out=log)
            try:
                stack.start()
                self._prepare(stack)
                proxy.enabled = True
                self._drive(stack, proxy)
                self._settle(stack, "the queue to drain under faults")
                self._check(stack, before_redrive=True)
                proxy.enabled, proxy.wrong_token = False, False
                self._redrive(stack)
                self._settle(stack, "the redriven events to be delivered")
                self._check(stack, before_redrive=False)
            except TimeoutError as exc:
                self.report.timed_out = str(exc)
            finally:
                for poller in self.extra_pollers:
                    poller.kill()
                    poller.wait()
                stack.stop()
                proxy.stop()
                self.loki.stop()
                drop_database(LOCAL_SERVER_URL, self.receiver_db)
                if self.report.ok:
                    shutil.rmtree(self.workdir, ignore_errors=True)
        self.report.proxy = proxy.counts
        self.report.events_per_request = proxy.events_per_request
        self.report.seconds = time.monotonic() - self.started
        return self.report

    def _prepare(self, stack: DevStack) -> None:
        """Short visibility timeout (a killed poller's batch comes back soon), extra pollers."""
        sqs = stack.client("sqs")
        sqs.set_queue_attributes(
            QueueUrl=stack.names.queue_url, Attributes={"VisibilityTimeout": str(self.plan.visibility_timeout)}
        )
        for _ in range(self.plan.pollers - 1):
            self.extra_pollers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edgectl", "poll-forwarder", "--wait", "1"],
                    cwd=ROOT,
                    env=stack.environment(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self.say(f"stack up: edge {stack.edge_url}, {self.plan.pollers} forwarder pollers, log {self.log_path}")

    def _drive(self, stack: DevStack, proxy: FaultProxy) -> None:
        """Traffic, with a wrong-token window at 30% and forwarder kills spread over the run."""
        traffic = Traffic(stack, stack.demo_key or "", self.plan, self.report).start()
        kill_points = [0.5 + 0.3 * i / max(1, self.plan.restarts) for i in range(self.plan.restarts)]
        window_end: float | None = None
        outage: threading.Thread | None = None
        next_progress = time.monotonic() + 30
        next_depth = 0.0
        while not traffic.done() or (window_end and time.monotonic() < window_end):
            self._check_time("the traffic to be sent")
            progress = traffic.sent_events / self.plan.events
            if window_end is None and progress >= 0.3:
                proxy.wrong_token = True
                window_end = time.monotonic() + self.plan.wrong_token_seconds
                self.say(f"wrong-token window opens for {self.plan.wrong_token_seconds:g} s")
            if window_end and proxy.wrong_token and time.monotonic() >= window_end:
                proxy.wrong_token = False
                self.say("wrong-token window closes")
            if outage is None and progress >= 0.6:
                outage = threading.Thread(target=self._loki_outage, daemon=True)
                outage.start()
            if kill_points and progress >= kill_points[0]:
                kill_points.pop(0)
                stack.restart("forwarder")
                self.report.restarts += 1
                self.say(f"forwarder killed and restarted at {progress:.0%} of the traffic")
            if time.monotonic() >= next_depth:
                next_depth = time.monotonic() + 1
                backlog = self._depth(stack)
                traffic.hold = backlog > self.plan.max_backlog
            if time.monotonic() >= next_progress:
                next_progress += 30
                self.say(f"{progress:.0%} sent, {len(self.report.accepted)} accepted, queue {backlog}")
            time.sleep(0.1)
        proxy.wrong_token = False
        self.say(f"traffic done: {self.report.attempted} requests, {len(self.report.accepted)} events accepted")

    def _loki_outage(self) -> None:
        """Loki answers 503 for `sink_outage_seconds`, and until it refused a push at least (the
        forwarder runs behind the traffic: the outage must meet deliveries, not requests)."""
        self.loki.down = 503
        self.say(f"Loki sink down (503) for {self.plan.sink_outage_seconds:g} s")
        ends = time.monotonic() + self.plan.sink_outage_seconds
        while (time.monotonic() < ends or not self.loki.refusals) and time.monotonic() < self.deadline:
            time.sleep(0.2)
        self.loki.down = None
        self.say(f"Loki sink back after refusing {self.loki.refusals} pushes")

    @staticmethod
    def _depth(stack: DevStack) -> int:
        """Messages on the main queue, visible or in flight."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = stack.client("sqs").get_queue_attributes(QueueUrl=stack.names.queue_url, AttributeNames=names)
        return sum(int(attributes["Attributes"][n]) for n in names)

    def _settle(self, stack: DevStack, what: str) -> None:
        """Until the main queue holds nothing, visible or in flight."""
        quiet_since: float | None = None
        while True:
            self._check_time(what)
            if self._depth(stack) == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 1.5:  # an empty reading twice over, pollers idle
                    return
            else:
                quiet_since = None
            time.sleep(0.5)

    def _check(self, stack: DevStack, before_redrive: bool) -> None:
        rows = stored_rows(self.receiver_db)
        accepted = self.report.accepted
        stored = {event_id for event_id, _ in rows}
        counts = Counter(event_id for event_id, _ in rows)
        duplicated = sum(1 for n in counts.values() if n > 1)
        dlq = self._dlq_event_reasons(stack)
        missing = accepted - stored
        if before_redrive:
            report = self.report
            report.stored = len(accepted & stored)
            report.duplicated = duplicated
            report.duplicate_deliveries = sum(times - 1 for event_id, times in rows if event_id in accepted)
            report.dead_lettered = len(missing & dlq.keys())
            report.dlq_also_stored = len(stored & dlq.keys())
            report.dlq_reasons = Counter(dlq[e] for e in missing & dlq.keys())
            report.lost = len(missing - dlq.keys())
            report.redriven = len(dlq)
            self.say(f"before redrive: {report.stored} stored, {report.dead_lettered} dead-lettered")
        else:
            self.report.stored_after_redrive = len(accepted & stored)
            self.report.lost_after_redrive = len(missing)
            self.report.duplicated_after_redrive = duplicated
            self.report.left_in_dlq = len(dlq)
            lines = Counter(json.loads(line)["event_id"] for _, line in self.loki.lines())
            logs = self.report.accepted_logs
            self.report.in_loki = len(logs & lines.keys())
            self.report.lost_at_loki = len(logs - lines.keys())
            self.report.duplicated_at_loki = sum(1 for n in lines.values() if n > LOG_ENTRIES)
            self.report.loki_outage_refusals = self.loki.refusals

    def _dlq_event_reasons(self, stack: DevStack) -> dict[str, str]:
        """event_id → why, for every message on the DLQ; each is held while reading, then made visible again."""
        sqs = stack.client("sqs")
        url = stack.names.dlq_url
        found: dict[str, str] = {}
        held: list[str] = []
        while messages := sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for message in messages:
                reason = message.get("MessageAttributes", {}).get("dlq_reason", {}).get("StringValue")
                found[json.loads(message["Body"])["event_id"]] = reason or REDRIVE_POLICY_REASON
                held.append(message["ReceiptHandle"])
        for start in range(0, len(held), 10):
            sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    for i, handle in enumerate(held[start : start + 10])
                ],
            )
        return found

    def _redrive(self, stack: DevStack) -> None:
        """The operator's command, as documented: `python -m edgectl dlq redrive`."""
        result = subprocess.run(
            [sys.executable, "-m", "edgectl", "dlq", "redrive"],
            cwd=ROOT,
            env=stack.environment(),
            capture_output=True,
            text=True,
            timeout=max(10.0, self.deadline - time.monotonic()),
        )
        self.say(f"dlq redrive: {result.stdout.strip()} (exit {result.returncode})")
        if result.returncode != 0:
            raise TimeoutError(f"dlq redrive failed: {result.stderr[-500:]}")

    def _check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"gave up waiting for {what} after {self.plan.time_limit:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=60.0, help="events per second at most")
    # Deeper than a batch, so the pollers can gather batches of 100 (at 120, half-full batches).
    parser.add_argument("--max-backlog", type=int, default=400, help="clients pause while the queue is deeper")
    parser.add_argument("--batch-size", type=int, default=100, help="messages per forwarder invocation")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pollers", type=int, default=3)
    parser.add_argument("--wrong-token-seconds", type=float, default=60.0)
    parser.add_argument("--sink-outage-seconds", type=float, default=120.0, help="how long the Loki sink is down")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=2700.0, help="stop and fail after this many seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    # `kill PID` stops the run cleanly: the stack's processes and the database go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    plan = SoakPlan(
        events=args.events,
        rate=args.rate,
        max_backlog=args.max_backlog,
        clients=args.clients,
        batch_size=args.batch_size,
        pollers=args.pollers,
        wrong_token_seconds=args.wrong_token_seconds,
        sink_outage_seconds=args.sink_outage_seconds,
        read_timeout=0.5,
        visibility_timeout=20,
        restarts=args.restarts,
        time_limit=args.time_limit,
        seed=args.seed,
    )
    report = Soak(plan).run()
    print(report.table(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
