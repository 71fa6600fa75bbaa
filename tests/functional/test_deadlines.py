"""Bounded time (issue #24 point 3, #27 point 2): every call an edge request makes is bounded by
the request's deadline, and a stalled, slow or failing dependency gets an honest answer within
REQUEST_BUDGET_SECONDS. The home-region key lookup is one short attempt, one per key at a time,
and its answer is stamped when it ends. Attempts are counted, not timed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.contract.keys_item import fetch_key_item
from chalicelib.edge import idempotency
from chalicelib.edge.idempotency import BOOKKEEPING_TIMEOUT_SECONDS, CLAIM_TIMEOUT_SECONDS
from chalicelib.edge.keys import HOME_LOOKUP_TIMEOUT_SECONDS, LOCAL_LOOKUP_TIMEOUT_SECONDS
from chalicelib.edge.ratelimit import CALL_TIMEOUT_SECONDS as RATE_CALL_TIMEOUT_SECONDS
from chalicelib.edge.ratelimit import SETTLE_EVENTS
from chalicelib.edge.remote_config import UPSTREAM_TIMEOUT_SECONDS
from chalicelib.runtime import aws as aws_clients
from chalicelib.runtime import deadline, http_pool
from chalicelib.runtime.deadline import MARGIN_SECONDS, REQUEST_BUDGET_SECONDS, TIMEOUT_STEPS, Deadline
from chalicelib.runtime.ttl_cache import TtlCache
from tests.conftest import Clock, Respond, StalledServer, drain_queue, key_item, never_answer
from tests.firehose_producer import delivery


def test_the_home_lookup_is_one_attempt_against_a_region_that_never_answers(silent_aws, monkeypatch) -> None:
    monkeypatch.setenv("LOOKOUT_EDGE_HOME_REGION", "eu-west-1")  # the policy then allows the home table
    with pytest.raises(Exception) as failed:
        fetch_key_item("lookout-edge-keys", "h" * 64, "eu-west-1", HOME_LOOKUP_TIMEOUT_SECONDS)
    assert "timeout" in type(failed.value).__name__.lower()
    time.sleep(0.2)  # let the silent server record what reached it
    assert len(silent_aws) == 1  # one try: botocore's retry would be three
    # One attempt of connect + read timeouts is the bound, well inside the PHP SDK's 5 s.
    assert 2 * HOME_LOOKUP_TIMEOUT_SECONDS <= 2.0


def test_concurrent_misses_of_one_key_fetch_once() -> None:
    cache: TtlCache[str, str | None] = TtlCache(fresh_for=lambda _: 10.0, stale_seconds=60, max_size=10)
    calls: list[int] = []
    started = threading.Event()

    def slow_fetch() -> str | None:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return None

    answers: list[object] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get("k", slow_fetch).value)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and answers == [None] * 5


def test_an_answer_is_stamped_when_its_fetch_ends() -> None:
    clock = Clock(1000.0)
    cache: TtlCache[str, str | None] = TtlCache(fresh_for=lambda _: 10.0, stale_seconds=60, max_size=10, clock=clock)

    def fetch_taking_8_seconds() -> str | None:
        clock.now += 8
        return None

    cache.get("k", fetch_taking_8_seconds)
    clock.now += 9  # 17 s after the fetch started, 9 s after it ended: still fresh
    assert cache.get("k", lambda: pytest.fail("fetched again inside the negative TTL")).value is None


# --- Every dependency of an edge request, stalled, slow or failing: an honest answer in the budget ----
#
# A StalledServer (tests/conftest.py) stands in for the dependency: it accepts and never answers,
# answers late, or answers an error at once. Each test counts the calls that reached it and checks
# the timeout the call was made with (the container's client for it); the only time asserted is the
# documented budget itself.

KEY = "lk_live_deadline_key"
NEVER: tuple[float | None, int, dict] = (None, 0, {})
DYNAMODB_ERROR = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "down"}


def dynamodb(**operations: tuple[float | None, int, dict]) -> Respond:
    """Answers per DynamoDB operation: (seconds before the answer or None for never, status, body);
    an operation not named is never answered."""

    def respond(request: bytes) -> tuple[float | None, int, bytes]:
        for operation, (delay, status, body) in operations.items():
            if f"DynamoDB_20120810.{operation}".encode() in request:
                return delay, status, json.dumps(body).encode()
        return None, 0, b""

    return respond


def answered_in_budget(send: Callable[[], Any]) -> Any:
    """What `send` got, after asserting it came within the request budget (the documented bound)."""
    started = time.monotonic()
    response = send()
    assert time.monotonic() - started < REQUEST_BUDGET_SECONDS
    return response


def ingest(http: Any, raw_key: str = KEY, **headers: str) -> Any:
    all_headers = {"content-type": "application/json", "x-api-key": raw_key, **headers}
    return answered_in_budget(lambda: http.post("/api/ingest", body=b'{"message": "m"}', headers=all_headers))


def single_attempt_client(service: str, timeout: float, region: str | None = None) -> Any:
    """The container's client a bounded call used, if one with this timeout was built."""
    return aws_clients._client.peek(service, region, True, timeout)


def timeouts_of_clients(service: str, region: str | None = None) -> list[float]:
    """The timeouts of the single-attempt clients the container built for `service` in `region`."""
    candidates = {*TIMEOUT_STEPS, HOME_LOOKUP_TIMEOUT_SECONDS}
    return sorted(timeout for timeout in candidates if single_attempt_client(service, timeout, region) is not None)


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.json_body
    assert response.json_body["error"] == "service_unavailable" and int(response.headers["Retry-After"]) > 0


# --- keys table, local region --------------------------------------------------------------------


def test_a_key_never_seen_is_503_after_one_attempt_when_the_keys_table_stalls(http, stall_service) -> None:
    table = stall_service("dynamodb")
    assert_unavailable(ingest(http))
    assert table.calls("GetItem") == 1  # a timeout is not retried: the table would stall again
    assert single_attempt_client("dynamodb", LOCAL_LOOKUP_TIMEOUT_SECONDS) is not None


def test_a_key_never_seen_is_503_when_the_keys_table_fails_after_one_quick_retry(http, stall_service) -> None:
    table = stall_service("dynamodb", dynamodb(GetItem=(0, 500, DYNAMODB_ERROR)))
    assert_unavailable(ingest(http))
    assert table.calls("GetItem") == 2


@pytest.mark.parametrize(
    ("delay", "status"),
    [(LOCAL_LOOKUP_TIMEOUT_SECONDS / 2, 202), (LOCAL_LOOKUP_TIMEOUT_SECONDS * 1.5, 503)],
    ids=["just-under", "just-over"],
)
def test_a_slow_keys_table_is_waited_for_up_to_the_call_timeout(http, stall_service, delay, status) -> None:
    table = stall_service("dynamodb", dynamodb(GetItem=(delay, 200, {"Item": key_item(KEY)})))
    response = ingest(http)
    assert response.status_code == status, response.json_body
    assert table.calls("GetItem") == 1


@pytest.mark.parametrize("fault", ["stall", "errors"])
def test_a_cached_key_keeps_working_past_its_ttl_while_the_keys_table_is_down(
    http, put_key, aws, stall_service, monkeypatch, fault
) -> None:
    put_key(KEY)
    monkeypatch.setenv("LOOKOUT_EDGE_KEY_CACHE_TTL", "0")  # every request asks the table again
    assert ingest(http).status_code == 202
    table = stall_service("dynamodb", dynamodb() if fault == "stall" else dynamodb(GetItem=(0, 500, DYNAMODB_ERROR)))
    accepted = ingest(http)
    assert accepted.status_code == 202, accepted.json_body
    assert table.calls("GetItem") == (1 if fault == "stall" else 2)
    assert len(drain_queue(aws.queue_url)) == 2
    assert_unavailable(ingest(http, "lk_live_never_seen"))  # a key never seen: 503, not 401


# --- keys table, home region ---------------------------------------------------------------------


@pytest.mark.parametrize("budget", [REQUEST_BUDGET_SECONDS, 1.2])
def test_the_home_lookup_in_a_request_gets_what_is_left_of_the_budget(http, stall_service, monkeypatch, budget) -> None:
    monkeypatch.setenv("LOOKOUT_EDGE_HOME_REGION", "eu-west-1")
    monkeypatch.setattr(deadline, "REQUEST_BUDGET_SECONDS", budget)

    def local_misses_home_stalls(request: bytes) -> tuple[float | None, int, bytes]:
        return (None, 0, b"") if b"/eu-west-1/dynamodb/" in request else (0, 200, b"{}")

    tables = stall_service("dynamodb", local_misses_home_stalls)
    started = time.monotonic()
    response = http.post("/api/ingest", body=b"{}", headers={"content-type": "application/json", "x-api-key": KEY})
    assert time.monotonic() - started < budget
    # The local replica is this region's truth: a home region that cannot say leaves a miss a miss.
    assert response.status_code == 401 and response.json_body["error"] == "invalid_api_key"
    assert tables.calls("GetItem") == 2  # the local one, then one at home
    (timeout,) = timeouts_of_clients("dynamodb", "eu-west-1")
    if budget == REQUEST_BUDGET_SECONDS:
        assert timeout == HOME_LOOKUP_TIMEOUT_SECONDS
    else:  # less than its 0.8 s: what was left of 1.2 s after the local lookup, in two waits
        assert timeout < HOME_LOOKUP_TIMEOUT_SECONDS and 2 * timeout <= budget - MARGIN_SECONDS


# --- idempotency table ---------------------------------------------------------------------------


def warm_key(http: Any, put_key: Callable[..., dict], **attributes: Any) -> None:
    """The key in the container's cache (fresh for 60 s), so the keys table is not asked again."""
    put_key(KEY, **attributes)
    assert ingest(http).status_code == 202


def test_the_idempotency_table_stalled_refuses_keyed_requests_and_accepts_the_others(
    http, put_key, aws, stall_service
) -> None:
    warm_key(http, put_key)
    drain_queue(aws.queue_url)
    table = stall_service("dynamodb")
    assert_unavailable(ingest(http, **{"idempotency-key": "order-1"}))
    assert table.calls("PutItem") == 1
    assert single_attempt_client("dynamodb", CLAIM_TIMEOUT_SECONDS) is not None
    assert drain_queue(aws.queue_url) == []  # refused: nothing queued, the client's retry is the only copy
    assert ingest(http).status_code == 202  # no Idempotency-Key: the table is not needed
    assert table.calls("PutItem") == 1


@pytest.mark.parametrize(
    ("delay", "status"),
    [(CLAIM_TIMEOUT_SECONDS / 2, 202), (CLAIM_TIMEOUT_SECONDS * 1.5, 503)],
    ids=["just-under", "just-over"],
)
def test_a_slow_claim_is_waited_for_up_to_the_call_timeout(http, put_key, stall_service, delay, status) -> None:
    warm_key(http, put_key)
    table = stall_service("dynamodb", dynamodb(PutItem=(delay, 200, {}), UpdateItem=(0, 200, {})))
    response = ingest(http, **{"idempotency-key": "order-2"})
    assert response.status_code == status, response.json_body
    assert table.calls("PutItem") == 1
    assert table.calls("UpdateItem") == (1 if status == 202 else 0)  # marked done once enqueued


def test_bookkeeping_after_the_enqueue_never_holds_the_answer_past_the_budget(
    http, put_key, aws, stall_service
) -> None:
    warm_key(http, put_key)
    drain_queue(aws.queue_url)
    table = stall_service("dynamodb", dynamodb(PutItem=(0, 200, {})))  # the claim is taken; marking it done stalls
    response = ingest(http, **{"idempotency-key": "order-3"})
    assert response.status_code == 202  # the events are in SQS: that is the answer
    assert table.calls("UpdateItem") == 1
    assert single_attempt_client("dynamodb", BOOKKEEPING_TIMEOUT_SECONDS) is not None
    assert len(drain_queue(aws.queue_url)) == 1


def test_waiting_for_a_claim_in_flight_ends_before_the_deadline(aws) -> None:
    idempotency.claim(aws.idempotency_table, "42", "busy", {"event_id": "A"}, "same")  # another request's, pending
    limit = Deadline.after(1.0)
    with pytest.raises(idempotency.ClaimBusy):
        idempotency.claim_or_wait(aws.idempotency_table, "42", "busy", {"event_id": "B"}, "same", 30, limit)
    assert limit.left() > 0  # it stopped asking when no call fitted any more, not after 30 s


# --- rate-limit counter --------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["stall", "errors"])
def test_a_rate_counter_down_lets_the_request_through_within_the_budget(
    http, put_key, aws, stall_service, fault
) -> None:
    warm_key(http, put_key, rate_limit_per_minute=10_000)
    table = stall_service("dynamodb", dynamodb() if fault == "stall" else dynamodb(UpdateItem=(0, 500, DYNAMODB_ERROR)))
    batch = b"\n".join(b'{"n": %d}' % n for n in range(SETTLE_EVENTS))  # enough events to settle now
    headers = {"content-type": "application/x-ndjson", "x-api-key": KEY}
    response = answered_in_budget(lambda: http.post("/api/ingest/event", body=batch, headers=headers))
    assert response.status_code == 202, response.json_body
    assert table.calls("UpdateItem") == 1  # one attempt
    assert single_attempt_client("dynamodb", RATE_CALL_TIMEOUT_SECONDS) is not None


# --- SSM: not on the edge's path -----------------------------------------------------------------


def test_no_edge_request_waits_on_ssm(http, put_key, stall_service) -> None:
    put_key(KEY)
    ssm = stall_service("ssm")
    assert ingest(http).status_code == 202
    answered_in_budget(lambda: http.get("/api/config", headers={"x-api-key": KEY}))
    assert ssm.received == []


# --- remote-config upstream (Lookout) ------------------------------------------------------------

CONFIG = json.dumps({"version": "cfg-9", "sample_rate": 1}).encode()


@pytest.fixture
def lookout_config(aws, put_key, monkeypatch) -> Iterator[StalledServer]:
    """Lookout's /api/config as a StalledServer (never answers until the test says otherwise)."""
    put_key(KEY)
    server = StalledServer()
    monkeypatch.setenv("LOOKOUT_INGEST_EDGE_BACKEND_URL", server.url)
    yield server
    server.close()


def get_config(http: Any) -> Any:
    return answered_in_budget(lambda: http.get("/api/config", headers={"x-api-key": KEY}))


def test_a_stalled_lookout_with_nothing_cached_is_503_after_one_attempt(http, lookout_config) -> None:
    response = get_config(http)
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert len(lookout_config.received) == 1
    assert http_pool.pool.peek(UPSTREAM_TIMEOUT_SECONDS, UPSTREAM_TIMEOUT_SECONDS) is not None


def test_a_stalled_lookout_gets_the_last_good_config_served(http, lookout_config, monkeypatch) -> None:
    monkeypatch.setenv("LOOKOUT_EDGE_CONFIG_FRESH_SECONDS", "0")  # every request asks Lookout again
    lookout_config.respond = lambda _request: (0, 200, CONFIG)
    assert get_config(http).status_code == 200
    lookout_config.respond = never_answer
    stale = get_config(http)
    assert stale.status_code == 200 and stale.json_body["version"] == "cfg-9"
    assert stale.headers["X-Lookout-Config-Stale"] == "1"
    assert len(lookout_config.received) == 2


@pytest.mark.parametrize(
    ("delay", "status"),
    [(UPSTREAM_TIMEOUT_SECONDS / 2, 200), (UPSTREAM_TIMEOUT_SECONDS * 1.5, 503)],
    ids=["just-under", "just-over"],
)
def test_a_slow_lookout_is_waited_for_up_to_the_call_timeout(http, lookout_config, delay, status) -> None:
    lookout_config.respond = lambda _request: (delay, 200, CONFIG)
    assert get_config(http).status_code == status
    assert len(lookout_config.received) == 1


# --- every door: the same bounds, each door's own refusal ---------------------------------------


def door_request(door: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one small request through `door`, under KEY."""
    if door == "sdk":
        return "/api/ingest", b'{"message": "m"}', {"content-type": "application/json", "x-api-key": KEY}
    if door == "otlp":
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "m"}}]}]}]})
        return "/v1/logs", body.encode(), {"content-type": "application/json", "x-api-key": KEY}
    headers, body = delivery([{"message": "m"}], KEY).request()
    return "/api/firehose/event", body, headers


def assert_refused_by_the_door(door: str, response: Any) -> None:
    """A 503 in the door's own terms: the contract's JSON error, OTLP's Status, Firehose's error shape."""
    assert response.status_code == 503, response.body
    body = json.loads(response.body)
    if door == "firehose":
        assert set(body) == {"requestId", "timestamp", "errorMessage"}
    elif door == "otlp":
        assert body["code"] == 14 and "unavailable" in body["message"]  # google.rpc.Code UNAVAILABLE
    else:
        assert body["error"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize("door", ["sdk", "otlp", "firehose"])
@pytest.mark.parametrize("stalled", ["dynamodb", "sqs"])
def test_every_door_answers_a_stalled_dependency_within_the_budget(http, put_key, stall_service, door, stalled) -> None:
    """A stalled keys table (a key never seen) or a stalled queue (no fallback queue: a single-region
    edge) is the door's 503 within REQUEST_BUDGET_SECONDS: one GetItem (a timeout is not retried),
    or the sends that fit the budget, each one bounded by what is left of it."""
    if stalled == "sqs":
        put_key(KEY)  # the key is found; only the queue stalls
    server = stall_service(stalled)
    path, body, headers = door_request(door)
    response = answered_in_budget(lambda: http.post(path, body=body, headers=headers))
    assert_refused_by_the_door(door, response)
    time.sleep(0.2)  # let the stalled server record what reached it
    if stalled == "dynamodb":
        assert server.calls("GetItem") == 1
    else:
        assert server.calls("SendMessageBatch") >= 1


def test_the_request_budget_comes_from_the_environment(http, put_key, monkeypatch) -> None:
    """LOOKOUT_EDGE_REQUEST_BUDGET_SECONDS replaces REQUEST_BUDGET_SECONDS: a budget too short for
    any call is the 503 without a call; unset, the same request is accepted."""
    from chalicelib.runtime.config import settings

    put_key(KEY)
    monkeypatch.setenv("LOOKOUT_EDGE_REQUEST_BUDGET_SECONDS", "0.2")  # less than two 0.1 s waits and the margin
    settings.cache_clear()
    assert_unavailable(ingest(http))
    monkeypatch.delenv("LOOKOUT_EDGE_REQUEST_BUDGET_SECONDS")
    settings.cache_clear()
    assert ingest(http).status_code == 202
