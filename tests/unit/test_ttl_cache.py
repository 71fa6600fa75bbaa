"""The one LRU + TTL + serve-stale cache (runtime/ttl_cache.py) behind the key and config caches."""

import pytest

from chalicelib.runtime.ttl_cache import Lru, TtlCache
from tests.conftest import Clock


class Source:
    """A scripted fetch: counts calls, fails while `down`."""

    def __init__(self):
        self.calls, self.down, self.value = 0, False, "v1"

    def __call__(self):
        self.calls += 1
        if self.down:
            raise ConnectionError("down")
        return self.value


def test_fresh_hit_does_not_fetch_and_expiry_does():
    clock, source = Clock(), Source()
    cache = TtlCache(fresh_for=lambda v: 10, stale_seconds=100, max_size=4, clock=clock)
    assert cache.get("k", source).value == "v1"
    clock.now += 9
    assert cache.get("k", source).value == "v1" and source.calls == 1
    source.value = "v2"
    clock.now += 1
    assert cache.get("k", source).value == "v2" and source.calls == 2


def test_freshness_can_depend_on_the_value():
    clock = Clock()
    cache = TtlCache(fresh_for=lambda v: 60 if v else 5, stale_seconds=100, max_size=4, clock=clock)
    cache.get("unknown", lambda: None)
    clock.now += 6
    assert cache.get("unknown", lambda: "found").value == "found"


def test_failed_fetch_serves_stale_with_the_error_then_raises_after_the_stale_window():
    clock, source = Clock(), Source()
    cache = TtlCache(fresh_for=lambda v: 10, stale_seconds=100, max_size=4, clock=clock)
    cache.get("k", source)
    source.down = True
    clock.now += 50
    served = cache.get("k", source)
    assert (served.value, served.stale) == ("v1", True) and isinstance(served.error, ConnectionError)
    clock.now += 50
    with pytest.raises(ConnectionError):
        cache.get("k", source)


def test_nothing_held_means_the_fetch_error_propagates():
    source = Source()
    source.down = True
    with pytest.raises(ConnectionError):
        TtlCache(fresh_for=lambda v: 10, stale_seconds=100, max_size=4).get("k", source)


def test_least_recently_used_entry_goes_first():
    cache = TtlCache(fresh_for=lambda v: 10, stale_seconds=100, max_size=2, clock=Clock())
    cache.get("a", lambda: 1)
    cache.get("b", lambda: 2)
    cache.get("a", lambda: 1)  # a is now the most recent
    cache.get("c", lambda: 3)  # evicts b
    assert list(cache) == ["a", "c"]
    assert cache.holds("a") and not cache.holds("b") and len(cache) == 2


def test_lru_pop_oldest_and_bound():
    lru: Lru[str, int] = Lru(max_size=3)
    for number, key in enumerate("abcd"):
        lru.put(key, number)
    assert list(lru) == ["b", "c", "d"] and "a" not in lru
    lru.get("b")
    assert lru.pop_oldest() == ("c", 2)


def test_a_store_known_down_serves_the_stale_entry_without_waiting_for_a_fetch_in_flight():
    import threading

    clock, source = Clock(), Source()
    cache = TtlCache(fresh_for=lambda v: 10, stale_seconds=100, max_size=4, clock=clock)
    cache.get("k", source)
    clock.now += 20

    def backing_off():
        raise ConnectionError("backing off")

    answers = []
    with cache._flight("k"):  # another caller's fetch of "k" is in flight
        asking = threading.Thread(target=lambda: answers.append(cache.get("k", source, backing_off)))
        asking.start()
        asking.join(30)
        assert not asking.is_alive()  # it did not wait for the flight lock
    (served,) = answers
    assert (served.value, served.stale, source.calls) == ("v1", True, 1)
    with pytest.raises(ConnectionError, match="backing off"):
        cache.get("never-seen", source, backing_off)
    assert source.calls == 1
