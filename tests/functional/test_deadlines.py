"""Bounded time (issue #24 point 3): the home-region key lookup is one short attempt, one per
key at a time, and its answer is stamped when it ends. Attempts are counted, not timed."""

from __future__ import annotations

import threading
import time

import pytest

from chalicelib.contract.keys_item import fetch_key_item
from chalicelib.edge.keys import HOME_LOOKUP_TIMEOUT_SECONDS
from chalicelib.runtime.ttl_cache import TtlCache
from tests.conftest import Clock


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
