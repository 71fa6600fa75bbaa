"""The keys-table item (contract/keys_item.py): what the sync writes is what the edge reads."""

from chalicelib.contract.keys_item import CONTENT_HASH, SYNCED_AT, KeyRecord, content_hash, hash_key, table_key

FULL = KeyRecord(
    key_hash=hash_key("lk_raw"),
    project_id="42",
    organization_id="7",
    billing_ok=False,
    key_id="9",
    ip_allowlist=("10.0.0.0/8", "2001:db8::/32"),
    trace_enabled=False,
    rum_enabled=True,
    rate_limit_per_minute=600,
)


def test_what_the_sync_writes_the_edge_reads_back_unchanged():
    assert KeyRecord.from_item(FULL.to_item(synced_at=1_700_000_000)) == FULL
    minimal = KeyRecord(hash_key("lk_min"), "1", "2", True)
    assert KeyRecord.from_item(minimal.to_item(synced_at=1)) == minimal


def test_the_written_item_has_every_contract_attribute_typed_and_no_raw_key():
    item = FULL.to_item(synced_at=1_700_000_000)
    assert item["key_hash"] == {"S": hash_key("lk_raw")} and table_key(FULL.key_hash) == {"key_hash": item["key_hash"]}
    assert item["billing_ok"] == {"BOOL": False} and item["trace_enabled"] == {"BOOL": False}
    assert item["ip_allowlist"] == {"L": [{"S": "10.0.0.0/8"}, {"S": "2001:db8::/32"}]}
    assert item["rate_limit_per_minute"] == {"N": "600"} and item[SYNCED_AT] == {"N": "1700000000"}
    assert "lk_raw" not in str(item)


def test_the_content_hash_covers_what_the_edge_reads_not_when_it_was_synced():
    first, later = FULL.to_item(synced_at=1), FULL.to_item(synced_at=2)
    assert first[CONTENT_HASH] == later[CONTENT_HASH] == {"S": content_hash(first)}
    changed = KeyRecord(**{**FULL.__dict__, "rum_enabled": False}).to_item(synced_at=1)
    assert changed[CONTENT_HASH] != first[CONTENT_HASH]


def test_a_minimal_item_reads_with_the_contract_defaults():
    item = {
        "key_hash": {"S": "h"},
        "project_id": {"S": "1"},
        "organization_id": {"S": "2"},
        "billing_ok": {"BOOL": True},
    }
    record = KeyRecord.from_item(item)
    assert (record.ip_allowlist, record.trace_enabled, record.rum_enabled) == ((), True, True)
    assert record.rate_limit_per_minute is None and record.key_id is None
