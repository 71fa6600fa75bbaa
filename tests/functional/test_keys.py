import pytest

from chalicelib.contract.keys_item import KeyRecord, fetch_key_item, hash_key
from chalicelib.edge.keys import KeyCache, KeyStoreUnavailable
from tests.conftest import Clock, key_item


class Store:
    def __init__(self, records):
        self.records = records
        self.calls = 0
        self.down = False

    def __call__(self, key_hash):
        self.calls += 1
        if self.down:
            raise ConnectionError("dynamodb down")
        return self.records.get(key_hash)


def record(key_hash="h1"):
    return KeyRecord(key_hash, "42", "7", True)


def test_hash_is_lowercase_sha256_hex():
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_minimal_item_gets_contract_defaults():
    item = {k: v for k, v in key_item("raw").items() if k != "key_id"}
    parsed = KeyRecord.from_item(item)
    assert parsed.ip_allowlist == () and parsed.trace_enabled and parsed.rum_enabled
    assert parsed.rate_limit_per_minute is None and parsed.key_id is None


def test_full_item_is_read():
    parsed = KeyRecord.from_item(
        key_item("raw", billing_ok=False, ip_allowlist=["10.0.0.0/8"], trace_enabled=False, rate_limit_per_minute=60)
    )
    assert parsed == KeyRecord(
        hash_key("raw"),
        "42",
        "7",
        False,
        key_id="9",
        ip_allowlist=("10.0.0.0/8",),
        trace_enabled=False,
        rate_limit_per_minute=60,
    )


def test_positive_entries_live_ttl_seconds():
    clock, store = Clock(), Store({"h1": record()})
    cache = KeyCache(store, ttl=60, negative_ttl=10, clock=clock)
    assert cache.get("h1") == record()
    clock.now += 59
    cache.get("h1")
    assert store.calls == 1
    clock.now += 2
    cache.get("h1")
    assert store.calls == 2


def test_unknown_keys_are_cached_briefly():
    clock, store = Clock(), Store({})
    cache = KeyCache(store, ttl=60, negative_ttl=10, clock=clock)
    assert cache.get("nope") is None
    clock.now += 9
    assert cache.get("nope") is None
    assert store.calls == 1
    store.records["nope"] = record("nope")
    clock.now += 2
    assert cache.get("nope") == record("nope")


def test_store_down_serves_stale_entry_then_fails_after_stale_ttl():
    clock, store = Clock(), Store({"h1": record()})
    heard = []
    cache = KeyCache(store, ttl=60, stale_ttl=3600, clock=clock, on_store_down=heard.append)
    cache.get("h1")
    store.down = True
    clock.now += 120
    assert cache.get("h1") == record()
    assert [type(exc) for exc in heard] == [ConnectionError]
    clock.now += 3600
    with pytest.raises(KeyStoreUnavailable):
        cache.get("h1")
    assert len(heard) == 2  # the 503 too was answered without the store


def test_store_down_with_no_entry_is_unavailable_not_unknown():
    store = Store({})
    store.down = True
    with pytest.raises(KeyStoreUnavailable):
        KeyCache(store).get("h1")


def test_cache_is_bounded_lru():
    store = Store({f"h{i}": record(f"h{i}") for i in range(5)})
    cache = KeyCache(store, max_size=2)
    cache.get("h0")
    cache.get("h1")
    cache.get("h0")  # h0 most recent
    cache.get("h2")  # evicts h1
    calls = store.calls
    cache.get("h0")
    assert store.calls == calls
    cache.get("h1")
    assert store.calls == calls + 1


def test_fetch_key_item_reads_dynamodb(aws, put_key):
    put_key("secret-key", ip_allowlist=["192.0.2.0/24"])
    found = fetch_key_item(aws.keys_table, hash_key("secret-key"))
    assert found is not None and found.ip_allowlist == ("192.0.2.0/24",)
    assert fetch_key_item(aws.keys_table, hash_key("other")) is None
