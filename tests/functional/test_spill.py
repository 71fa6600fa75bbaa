"""Spilling (issue #27 point 1): when the region's SQS refuses, throttles or stalls, the edge puts the
events on the fallback queue in another region within the request's deadline and answers 202 only
once every event is in one of the two queues; both down is the honest 503 with nothing half-accepted.

The edge's own region's SendMessageBatch calls are broken on purpose through botocore's own events
on the very clients the edge uses (their timeouts and single attempt are what is under test):
`errors` answers 500 InternalError, `throttle` has SQS refuse some entries of each batch
(RequestThrottled), `stall` sends the call to a server that accepts and never answers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from chalicelib.edge import spill
from chalicelib.edge.spill import BACKOFF_FIRST_SECONDS
from chalicelib.runtime import sqs_batch
from chalicelib.runtime.config import Settings
from chalicelib.runtime.deadline import REQUEST_BUDGET_SECONDS
from edgectl.iam_enforce import DEFAULT_ACCOUNT
from edgectl.resources import StackNames, create_resources
from tests.conftest import Clock, StalledServer, drain_queue, reset_container_state

KEY = "lk_spill_key"
FAR = "eu-west-1"
OWN = "us-east-1"
NDJSON = {"content-type": "application/x-ndjson", "x-api-key": KEY}


@dataclass
class BrokenSqs:
    """What each region's SQS does to SendMessageBatch: None (works), "errors", "throttle", "stall"."""

    stalled_url: str
    modes: dict[str | None, str | None] = field(default_factory=dict)  # region (None: the edge's own) -> mode
    throttled: Callable[[dict[str, Any]], bool] = lambda payload: payload.get("n", 0) % 3 == 0
    sent: Counter[tuple[str | None, int]] = field(default_factory=Counter)  # (region, payload n) -> sends
    attempts: Counter[str | None] = field(default_factory=Counter)  # region -> SendMessageBatch calls

    def hook(self, made: Any, region: str | None) -> None:
        """Break `made` (a client of the edge's) as `modes[region]` says, once per client."""
        events = made.meta.events
        events.register("provide-client-params.sqs.SendMessageBatch", self._params(region), unique_id="spill-p")
        events.register("before-call.sqs.SendMessageBatch", self._before(region), unique_id="spill-b")
        events.register("after-call.sqs.SendMessageBatch", self._after(region), unique_id="spill-a")
        events.register("request-created.sqs.SendMessageBatch", self._request(region), unique_id="spill-r")

    def _params(self, region: str | None) -> Callable[..., None]:
        def drop_throttled(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            entries = params["Entries"]
            if self.modes.get(region) == "throttle":
                context["throttled"] = [e["Id"] for e in entries if self.throttled(_payload(e))]
                entries = [e for e in entries if e["Id"] not in context["throttled"]]
                params["Entries"] = entries
            context["entries"] = entries

        return drop_throttled

    def _before(self, region: str | None) -> Callable[..., Any]:
        def answer(context: dict[str, Any], **_: Any) -> Any:
            self.attempts[region] += 1
            mode = self.modes.get(region)
            if mode == "errors" or (mode == "throttle" and not context["entries"]):
                from botocore.awsrequest import AWSResponse

                if mode == "errors":
                    error = {"Error": {"Code": "InternalError", "Message": "injected"}}
                    return AWSResponse("https://sqs.invalid", 500, {}, None), {
                        **error,
                        "ResponseMetadata": {"HTTPStatusCode": 500},
                    }
                return AWSResponse("https://sqs.invalid", 200, {}, None), {"Successful": [], "Failed": []}
            return None

        return answer

    def _after(self, region: str | None) -> Callable[..., None]:
        def record(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            by_id = {e["Id"]: _payload(e).get("n") for e in context.get("entries", [])}
            for entry in parsed.get("Successful", []):
                self.sent[(region, by_id[entry["Id"]])] += 1
            for entry_id in context.get("throttled", []):
                parsed.setdefault("Failed", []).append(
                    {"Id": entry_id, "Code": "RequestThrottled", "SenderFault": False}
                )

        return record

    def _request(self, region: str | None) -> Callable[..., None]:
        def reroute(request: Any, **_: Any) -> None:
            if self.modes.get(region) == "stall":
                request.url = self.stalled_url

        return reroute


def _payload(entry: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(entry["MessageBody"]).get("payload") or {}
    return payload


@pytest.fixture
def far(aws: StackNames) -> StackNames:
    """The same stack in another region: its queue is the fallback."""
    return create_resources(boto3.Session(region_name=FAR))


@pytest.fixture
def broken(aws: StackNames, far: StackNames, put_key, monkeypatch: pytest.MonkeyPatch) -> Iterator[BrokenSqs]:
    put_key(KEY)
    # Where each event goes is under test here, not how fast (tests/functional/test_sqs_send.py has the
    # deadline's arithmetic): a budget a cold request on a loaded machine does not use up first.
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", 8.0)
    monkeypatch.setenv("LOOKOUT_EDGE_FALLBACK_QUEUE_URL", far.queue_url)
    reset_container_state()
    made = sqs_batch.client

    stalled = StalledServer()
    sqs = BrokenSqs(stalled_url=stalled.url)
    sqs.stall_requests = stalled.received  # type: ignore[attr-defined]

    def client(service: str, region: str | None = None, **options: Any) -> Any:
        real = made(service, region=region, **options)
        sqs.hook(real, region)
        return real

    monkeypatch.setattr(sqs_batch, "client", client)
    try:
        yield sqs
    finally:
        stalled.close()
        reset_container_state()


def lines(count: int) -> bytes:
    return b"\n".join(json.dumps({"name": "signup", "n": n}).encode() for n in range(count))


def spilled_metric(out: str) -> float:
    """The `spilled` count of the EMF lines written (Powertools writes a list of values)."""
    emf = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    return sum(sum(line.get("spilled", [])) for line in emf)


def queued(stack: StackNames, region: str) -> dict[int, str]:
    """payload n -> event id of every message on the stack's queue (each n once: asserted)."""
    messages = drain_queue(stack.queue_url, region=region)
    found = [(m["payload"]["n"], m["event_id"]) for m in messages]
    assert len({n for n, _ in found}) == len(found), f"an event queued twice: {found}"
    return dict(found)


def test_sqs_errors_spill_every_event_to_the_fallback_queue(http, aws, far, broken, capsys) -> None:
    broken.modes[None] = "errors"
    response = http.post("/api/ingest/event", body=lines(25), headers=NDJSON)
    assert response.status_code == 202, response.body
    assert queued(aws, OWN) == {}
    spilled = queued(far, FAR)
    assert [spilled[n] for n in range(25)] == response.json_body["event_ids"]
    assert spilled_metric(capsys.readouterr().out) == 25


def test_sqs_throttling_part_of_a_batch_spills_only_that_part(http, aws, far, broken, capsys) -> None:
    broken.modes[None] = "throttle"
    response = http.post("/api/ingest/event", body=lines(25), headers=NDJSON)
    assert response.status_code == 202, response.body
    in_region, spilled = queued(aws, OWN), queued(far, FAR)
    assert sorted(spilled) == [n for n in range(25) if n % 3 == 0]
    assert sorted(in_region) == [n for n in range(25) if n % 3]
    ids = {**in_region, **spilled}
    assert [ids[n] for n in range(25)] == response.json_body["event_ids"]
    assert spilled_metric(capsys.readouterr().out) == len(spilled)


def test_a_stalled_sqs_spills_after_one_attempt_within_the_deadline(http, aws, far, broken) -> None:
    broken.modes[None] = "stall"
    single = {**NDJSON, "content-type": "application/json"}
    response = http.post("/api/ingest", body=json.dumps({"message": "m", "n": 0}), headers=single)
    assert response.status_code == 202, response.body
    assert queued(far, FAR) == {0: response.json_body["event_id"]}
    assert queued(aws, OWN) == {}
    assert len(broken.stall_requests) == 1  # type: ignore[attr-defined]  # one attempt, no botocore retry


def test_after_a_stall_the_container_spills_without_waiting_then_probes_the_region(http, aws, far, broken) -> None:
    """One request waits out the stalled regional call; while the back-off holds the next ones go
    straight to the fallback (no regional call); once it is over one request probes the region,
    which answers again: its events stay in the region and the back-off closes."""
    backoff = spill.regional_backoff()
    backoff.clock = clock = Clock()
    broken.modes[None] = "stall"
    single = {**NDJSON, "content-type": "application/json"}

    def post(n: int) -> str:
        response = http.post("/api/ingest", body=json.dumps({"message": "m", "n": n}), headers=single)
        assert response.status_code == 202, response.body
        event_id: str = response.json_body["event_id"]
        return event_id

    first = post(0)
    assert len(broken.stall_requests) == 1 and backoff.failures == 1  # type: ignore[attr-defined]
    during = [post(n) for n in (1, 2, 3)]
    assert len(broken.stall_requests) == 1  # type: ignore[attr-defined]  # none of them asked the region
    assert queued(far, FAR) == dict(zip((0, 1, 2, 3), [first, *during], strict=True))

    broken.modes[None] = None  # the region answers again
    clock.now += BACKOFF_FIRST_SECONDS
    probe = post(4)
    assert queued(aws, OWN) == {4: probe} and queued(far, FAR) == {}
    assert backoff.failures == 0 and not backoff.holding_off()


def test_while_backing_off_what_the_fallback_refuses_goes_to_the_region(http, aws, far, broken) -> None:
    """The back-off is a guess that the region is down: a fallback that fails meanwhile does not
    turn into a 503 when the region would have taken the events."""
    backoff = spill.regional_backoff()
    backoff.clock = Clock()
    broken.modes[None] = "errors"
    assert http.post("/api/ingest/event", body=lines(3), headers=NDJSON).status_code == 202
    assert backoff.holding_off() and len(queued(far, FAR)) == 3
    broken.modes.update({None: None, FAR: "errors"})
    response = http.post("/api/ingest/event", body=lines(5), headers=NDJSON)
    assert response.status_code == 202, response.body
    assert list(queued(aws, OWN).values()) == response.json_body["event_ids"]
    assert broken.attempts[FAR] == 2  # one try each: the first request's spill, this one's


def fallback_retried_until_the_real_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing fallback is retried until the deadline: the real budget, not the fixture's 8 s,
    for tests that wait it out (answers come back at once here, whatever the machine's load)."""
    monkeypatch.setattr("chalicelib.runtime.deadline.REQUEST_BUDGET_SECONDS", REQUEST_BUDGET_SECONDS)


def test_both_queues_down_is_503_and_nothing_is_accepted(http, aws, far, broken, capsys, monkeypatch) -> None:
    fallback_retried_until_the_real_deadline(monkeypatch)
    broken.modes.update({None: "errors", FAR: "errors"})
    response = http.post("/api/ingest/event", body=lines(12), headers=NDJSON)
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert "nothing was accepted" in response.json_body["message"]
    assert queued(aws, OWN) == {} and queued(far, FAR) == {}
    assert spilled_metric(capsys.readouterr().out) == 0


def test_a_retry_after_a_partial_send_sends_only_the_rest(http, aws, far, broken, monkeypatch) -> None:
    """The region throttles a third, the fallback is down: 503, the rest is in; the client's retry
    (same Idempotency-Key) sends only the third, to the fallback now up, under the same ids."""
    fallback_retried_until_the_real_deadline(monkeypatch)
    broken.modes.update({None: "throttle", FAR: "errors"})
    headers = {**NDJSON, "idempotency-key": "spill-retry-1"}
    first = http.post("/api/ingest/event", body=lines(12), headers=headers)
    assert first.status_code == 503 and "some may have been accepted" in first.json_body["message"]
    broken.modes[FAR] = None
    second = http.post("/api/ingest/event", body=lines(12), headers=headers)
    assert second.status_code == 202, second.body
    in_region, spilled = queued(aws, OWN), queued(far, FAR)
    assert sorted(spilled) == [0, 3, 6, 9] and sorted(in_region) == [n for n in range(12) if n % 3]
    assert [{**in_region, **spilled}[n] for n in range(12)] == second.json_body["event_ids"]
    assert all(count == 1 for count in broken.sent.values()), broken.sent  # nothing sent twice


def test_a_multi_region_edge_spills_to_the_home_regions_queue_by_default(
    http, aws, far, broken, iam, monkeypatch
) -> None:
    monkeypatch.delenv("LOOKOUT_EDGE_FALLBACK_QUEUE_URL")
    monkeypatch.setenv("LOOKOUT_EDGE_HOME_REGION", FAR)
    reset_container_state()
    broken.modes[None] = "errors"
    response = http.post("/api/ingest/event", body=lines(3), headers=NDJSON)
    assert response.status_code == 202, response.body
    assert list(queued(far, FAR).values()) == response.json_body["event_ids"]
    # One batch is sent on the request's own thread, where the judge knows the caller: the edge's
    # policy allows the home region's queue of the same name (statement SpillToHomeRegionQueue).
    home_queue = f"arn:aws:sqs:{FAR}:{DEFAULT_ACCOUNT}:{far.queue_url.rsplit('/', 1)[-1]}"
    assert ("api_handler", "sqs:SendMessage", home_queue) in iam.calls


def test_which_queue_is_the_fallback() -> None:
    own = "https://sqs.us-east-1.amazonaws.com/123456789012/events"
    local = "http://127.0.0.1:4566/123456789012/events"
    explicit = "https://sqs.ap-southeast-2.amazonaws.com/123456789012/spill"
    found = spill.fallback_queue
    assert found(Settings(queue_url=own), OWN) is None  # one region: 503 as before
    assert found(Settings(queue_url=own, home_region=OWN), OWN) is None  # the home region itself
    assert found(Settings(queue_url=own, home_region=FAR), OWN) == spill.FallbackQueue(
        "https://sqs.eu-west-1.amazonaws.com/123456789012/events", FAR
    )
    assert found(Settings(queue_url=own, home_region=FAR, fallback_queue_url=explicit), OWN) == spill.FallbackQueue(
        explicit, "ap-southeast-2"
    )
    # A local endpoint serves every region on one host: the same URL, in the home region.
    assert found(Settings(queue_url=local, home_region=FAR), OWN) == spill.FallbackQueue(local, FAR)
    assert found(Settings(queue_url=own, fallback_queue_url=own), OWN) is None  # not a second queue
    assert spill.url_region("https://eu-west-1.queue.amazonaws.com/1/q") == FAR
