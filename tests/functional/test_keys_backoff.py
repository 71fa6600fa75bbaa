"""The keys table's back-off (issue #27 point 2, #24 point 3): after a failed lookup the container
stops asking the table for a while (keys.BACKOFF_FIRST_SECONDS, doubling up to
BACKOFF_LONGEST_SECONDS): cached keys are answered from the cache with no call, keys never seen get
their 503 with no call; then one request probes; a success ends it. The same per region for the
home-region lookup. Calls are counted at a StalledServer; time is moved on the back-off's clock."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from chalicelib.contract.keys_item import hash_key
from chalicelib.edge import keys
from chalicelib.edge.keys import BACKOFF_FIRST_SECONDS, BACKOFF_LONGEST_SECONDS, KeyStoreUnavailable
from chalicelib.runtime.backoff import Backoff
from tests.conftest import Clock, drain_queue, key_item
from tests.functional.test_deadlines import DYNAMODB_ERROR, KEY, assert_unavailable, dynamodb, ingest

NEVER_SEEN = "lk_live_never_seen_key"
HOME = "eu-west-1"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def backoff_on(clock: Clock, region: str | None = None) -> Backoff:
    """The container's back-off for that region's keys table, on the test's clock."""
    backoff = keys.table_backoff(region)
    backoff.clock = clock
    return backoff


@pytest.fixture
def cached_key(http: Any, put_key: Any, aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """KEY in the container's cache, past its TTL at once: every request would ask the table.
    The queue is left empty."""
    monkeypatch.setenv("LOOKOUT_EDGE_KEY_CACHE_TTL", "0")
    monkeypatch.setenv("LOOKOUT_EDGE_METRICS_INTERVAL_SECONDS", "0")  # every request writes its counts
    put_key(KEY)
    assert ingest(http).status_code == 202
    drain_queue(aws.queue_url)


def keys_table_unavailable(out: str) -> int:
    """The `keys_table_unavailable` counts in the EMF lines written."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return sum(line.get("keys_table_unavailable", 0) for line in lines)


def answers_only(known_hash: str) -> Any:
    """A keys table that answers again: the item of `known_hash`, no item for any other key."""

    def respond(request: bytes) -> tuple[float | None, int, bytes]:
        body = {"Item": key_item(KEY)} if known_hash.encode() in request else {}
        return 0, 200, json.dumps(body).encode()

    return respond


@pytest.mark.parametrize("fault", ["stall", "errors"])
def test_during_an_outage_cached_keys_answer_without_a_call_and_unknown_keys_get_503_at_once(
    http, aws, cached_key, stall_service, clock, capsys, fault
) -> None:
    backoff = backoff_on(clock)
    table = stall_service("dynamodb", dynamodb() if fault == "stall" else dynamodb(GetItem=(0, 500, DYNAMODB_ERROR)))
    per_lookup = 1 if fault == "stall" else 2  # a quick failure is tried once more, a timeout is not
    capsys.readouterr()

    assert ingest(http).status_code == 202  # the failed lookup: the cached record answers
    assert table.calls("GetItem") == per_lookup and backoff.failures == 1
    for _ in range(3):  # the second and later requests: from the cache, the table not asked
        assert ingest(http).status_code == 202
    assert_unavailable(ingest(http, NEVER_SEEN))  # never seen: 503 (not 401), no call either
    assert table.calls("GetItem") == per_lookup
    assert len(drain_queue(aws.queue_url)) == 4

    clock.now += BACKOFF_FIRST_SECONDS  # the period is over: one request probes, fails again
    assert ingest(http).status_code == 202
    assert table.calls("GetItem") == 2 * per_lookup and backoff.failures == 2
    clock.now += BACKOFF_FIRST_SECONDS  # now twice as long: not yet
    assert ingest(http).status_code == 202
    assert table.calls("GetItem") == 2 * per_lookup
    clock.now += BACKOFF_FIRST_SECONDS
    assert ingest(http).status_code == 202
    assert table.calls("GetItem") == 3 * per_lookup
    assert keys_table_unavailable(capsys.readouterr().out) == 8  # every answer given without the table


def test_the_back_off_never_grows_past_its_longest(http, cached_key, stall_service, clock) -> None:
    backoff = backoff_on(clock)
    table = stall_service("dynamodb", dynamodb(GetItem=(0, 500, DYNAMODB_ERROR)))
    ingest(http)
    for _ in range(6):  # 1, 2, 4, 8 s, then the longest each time
        clock.now += BACKOFF_LONGEST_SECONDS
        assert ingest(http).status_code == 202
    assert backoff.failures == 7 and table.calls("GetItem") == 14
    clock.now += BACKOFF_LONGEST_SECONDS - 0.01
    ingest(http)
    assert table.calls("GetItem") == 14
    clock.now += 0.01
    ingest(http)
    assert table.calls("GetItem") == 16


def test_a_successful_probe_ends_the_back_off(http, aws, cached_key, stall_service, clock) -> None:
    backoff = backoff_on(clock)
    table = stall_service("dynamodb", dynamodb(GetItem=(0, 500, DYNAMODB_ERROR)))
    assert ingest(http).status_code == 202
    table.respond = answers_only(hash_key(KEY))  # the table is back
    assert_unavailable(ingest(http, NEVER_SEEN))  # but the container does not know it yet
    assert table.calls("GetItem") == 2

    clock.now += BACKOFF_FIRST_SECONDS
    assert ingest(http).status_code == 202  # the probe: answered, the back-off is over
    assert table.calls("GetItem") == 3 and backoff.failures == 0 and not backoff.holding_off()
    unknown = ingest(http, NEVER_SEEN)  # asked again at once: now the table says "no such key"
    assert unknown.status_code == 401 and unknown.json_body["error"] == "invalid_api_key"
    assert ingest(http).status_code == 202
    assert table.calls("GetItem") == 5  # every request past its TTL asks, as before the outage


def test_one_probe_at_a_time_while_it_is_in_flight_the_others_answer_from_the_cache(
    aws, put_key, clock, monkeypatch
) -> None:
    """Against the cache directly (a Lambda container serves one request at a time; `make dev`'s
    server and any threaded host more): the probe is held inside its call until the test lets go."""
    monkeypatch.setenv("LOOKOUT_EDGE_KEY_CACHE_TTL", "0")
    put_key(KEY)
    put_key("lk_live_other_key")
    cache = keys.key_cache()
    mine, other = hash_key(KEY), hash_key("lk_live_other_key")
    assert cache.get(mine) is not None and cache.get(other) is not None
    backoff = backoff_on(clock)

    from botocore.exceptions import EndpointConnectionError

    real_fetch = keys.fetch_key_item
    calls: list[str] = []
    table_down = True
    in_call, let_go = threading.Event(), threading.Event()

    def fetch(table: str, key_hash: str, region: str | None = None, timeout: float | None = None) -> Any:
        calls.append(key_hash)
        if table_down:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        in_call.set()
        assert let_go.wait(30)
        return real_fetch(table, key_hash, region, timeout)

    monkeypatch.setattr(keys, "fetch_key_item", fetch)
    assert cache.get(mine) is not None  # failed (a quick failure is tried twice): stale, back-off open
    assert calls == [mine, mine] and backoff.failures == 1

    table_down = False
    clock.now += BACKOFF_FIRST_SECONDS
    probe = threading.Thread(target=cache.get, args=(mine,))
    probe.start()
    assert in_call.wait(30)
    # While the probe waits for the table: the same key, another cached key, a key never seen.
    assert cache.get(mine) is not None and cache.get(other) is not None
    with pytest.raises(KeyStoreUnavailable):
        cache.get(hash_key(NEVER_SEEN))
    assert probe.is_alive() and calls == [mine, mine, mine]  # none of them asked the table
    let_go.set()
    probe.join(30)
    assert backoff.failures == 0  # the probe got its answer: closed
    assert cache.get(other) is not None and calls[-1] == other  # past its TTL: asked again


def test_the_home_region_lookup_backs_off_on_its_own(http, aws, stall_service, clock, monkeypatch) -> None:
    """A multi-region edge: a locally missing key is asked in the home region; when that fails,
    the container stops asking the home region (a miss stays a 401 without the cross-region call)
    while its own table, which answers, is asked as usual."""
    monkeypatch.setenv("LOOKOUT_EDGE_HOME_REGION", HOME)
    home, local = backoff_on(clock, HOME), backoff_on(clock)

    def local_misses_home_fails(request: bytes) -> tuple[float | None, int, bytes]:
        if f"/{HOME}/dynamodb/".encode() in request:
            return 0, 500, json.dumps(DYNAMODB_ERROR).encode()
        return 0, 200, b"{}"

    tables = stall_service("dynamodb", local_misses_home_fails)

    def home_calls() -> int:
        return sum(f"/{HOME}/dynamodb/".encode() in request for request in tables.received)

    for n, raw_key in enumerate(["lk_live_a", "lk_live_b", "lk_live_c"], start=1):
        refused = ingest(http, raw_key)
        assert refused.status_code == 401 and refused.json_body["error"] == "invalid_api_key"
        assert tables.calls("GetItem") - home_calls() == n  # the local table: asked for each key
    assert home_calls() == 1 and home.failures == 1 and local.failures == 0

    clock.now += BACKOFF_FIRST_SECONDS
    assert ingest(http, "lk_live_d").status_code == 401
    assert home_calls() == 2 and home.failures == 2  # one probe, failed: 2 s now
    tables.respond = lambda _request: (0, 200, b"{}")  # the home region answers again
    clock.now += 2 * BACKOFF_FIRST_SECONDS
    assert ingest(http, "lk_live_e").status_code == 401
    assert home_calls() == 3 and home.failures == 0
