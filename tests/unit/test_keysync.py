"""Pure key-sync logic: row → item (CONTRACT §4), content hash, diff, delete verdicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.contract.keys_item import KeyRecord, content_hash, hash_key
from chalicelib.keysync.plan import (
    MASS_DELETE_FLOOR,
    BadRow,
    DeleteVerdict,
    DuplicateKey,
    SyncPlanner,
    SyncResult,
    item_from_row,
    judge_deletes,
    missing_columns,
    parse_allowlist,
)

RAW = "lk_secret_raw_key_123"


def row(**overrides):
    """A row as pymysql returns the contract query's columns for the default schema."""
    values = {
        "key_id": 9,
        "api_key": RAW,
        "project_id": 42,
        "organization_id": 7,
        "billing_ok": 1,
        "ip_allowlist": None,
        "trace_enabled": 1,
        "rum_enabled": 1,
        "rate_limit_per_minute": None,
    }
    values.update(overrides)
    return values


def test_item_has_the_contract_attributes_and_types():
    item = item_from_row(
        row(ip_allowlist='["203.0.113.0/24", " 2001:db8::1 "]', rum_enabled=0, rate_limit_per_minute=600),
        synced_at=1_700_000_000,
    )
    assert item == {
        "key_hash": {"S": hash_key(RAW)},
        "key_id": {"S": "9"},
        "project_id": {"S": "42"},
        "organization_id": {"S": "7"},
        "billing_ok": {"BOOL": True},
        "ip_allowlist": {"L": [{"S": "203.0.113.0/24"}, {"S": "2001:db8::1"}]},
        "trace_enabled": {"BOOL": True},
        "rum_enabled": {"BOOL": False},
        "rate_limit_per_minute": {"N": "600"},
        "content_hash": {"S": item["content_hash"]["S"]},
        "synced_at": {"N": "1700000000"},
    }
    assert len(item["content_hash"]["S"]) == 64
    record = KeyRecord.from_item(item)
    assert (record.project_id, record.rate_limit_per_minute, record.rum_enabled) == ("42", 600, False)


def test_raw_key_is_never_stored():
    item = item_from_row(row(), synced_at=1)
    assert RAW not in repr(item)


def test_null_rate_limit_leaves_the_attribute_out():
    assert "rate_limit_per_minute" not in item_from_row(row(rate_limit_per_minute=None), synced_at=1)


def test_null_flags_take_contract_defaults():
    """NULL = 'ok' is NULL in SQL, so unknown billing is not ok; a missing switch means on."""
    item = item_from_row(row(billing_ok=None, trace_enabled=None, rum_enabled=None), synced_at=1)
    assert item["billing_ok"] == {"BOOL": False}
    assert item["trace_enabled"] == {"BOOL": True}
    assert item["rum_enabled"] == {"BOOL": True}


def test_bit_columns_are_read_as_flags():
    item = item_from_row(row(billing_ok=b"\x00", trace_enabled=b"\x01"), synced_at=1)
    assert item["billing_ok"] == {"BOOL": False}
    assert item["trace_enabled"] == {"BOOL": True}


def test_content_hash_ignores_synced_at_but_not_content():
    first = item_from_row(row(), synced_at=1)
    later = item_from_row(row(), synced_at=999)
    flipped = item_from_row(row(billing_ok=0), synced_at=1)
    assert first["content_hash"] == later["content_hash"]
    assert first["content_hash"] != flipped["content_hash"]
    assert content_hash(first) == first["content_hash"]["S"]


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "synced_at"]), st.integers(), min_size=1))
def test_content_hash_does_not_depend_on_attribute_order(attributes):
    reordered = dict(reversed(list(attributes.items())))
    assert content_hash(attributes) == content_hash(reordered)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, []),
        ("", []),
        ("  ", []),
        ("null", []),
        ("[]", []),
        ('["10.0.0.0/8", "", " 1.2.3.4 "]', ["10.0.0.0/8", "1.2.3.4"]),
    ],
)
def test_allowlist_text_forms(text, expected):
    assert parse_allowlist(text, "9") == expected


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"ip": "1.2.3.4"}', '"1.2.3.4"', '["10.0.0.0/8"'])
def test_bad_allowlist_names_the_key_id_not_the_key(text):
    with pytest.raises(BadRow) as caught:
        item_from_row(row(ip_allowlist=text), synced_at=1)
    assert "key_id=9" in str(caught.value)
    assert RAW not in str(caught.value)
    assert caught.value.key_hash == hash_key(RAW)


@pytest.mark.parametrize(
    ("overrides", "hash_known"),
    [({"api_key": None}, False), ({"api_key": ""}, False), ({"project_id": None}, True), ({"key_id": None}, False)],
)
def test_rows_without_required_values_are_bad(overrides, hash_known):
    with pytest.raises(BadRow) as caught:
        item_from_row(row(**overrides), synced_at=1)
    assert (caught.value.key_hash is not None) == hash_known


def test_non_numeric_rate_limit_is_bad():
    with pytest.raises(BadRow, match="rate_limit_per_minute"):
        item_from_row(row(rate_limit_per_minute="lots"), synced_at=1)


def test_missing_columns_lists_what_the_query_lacks():
    assert missing_columns(list(row())) == []
    assert missing_columns(["key_id", "api_key"]) == [
        "project_id",
        "organization_id",
        "billing_ok",
        "ip_allowlist",
        "trace_enabled",
        "rum_enabled",
        "rate_limit_per_minute",
    ]


def item(raw: str, **overrides):
    return item_from_row(row(api_key=raw, **overrides), synced_at=1)


def test_planner_writes_new_and_changed_only_and_finds_stale():
    same, changed, gone = item("same"), item("changed"), item("gone")
    planner = SyncPlanner(
        {
            hash_key("same"): same["content_hash"]["S"],
            hash_key("changed"): item("changed", billing_ok=0)["content_hash"]["S"],
            hash_key("gone"): gone["content_hash"]["S"],
        }
    )
    assert planner.table_size == 3
    assert planner.needs_write(same) is False
    assert planner.needs_write(changed) is True
    assert planner.needs_write(item("new")) is True
    assert planner.stale_keys() == [hash_key("gone")]


def test_planner_rewrites_items_without_a_content_hash():
    """Items written by someone else (no content_hash) are brought under the sync's control."""
    planner = SyncPlanner({hash_key("legacy"): ""})
    assert planner.needs_write(item("legacy")) is True
    assert planner.stale_keys() == []


def test_planner_refuses_the_same_key_twice():
    planner = SyncPlanner({})
    planner.needs_write(item("twice"))
    with pytest.raises(DuplicateKey):
        planner.needs_write(item("twice", project_id=43))


def test_planner_keeps_items_of_unusable_rows():
    planner = SyncPlanner({hash_key("kept"): "ab" * 32, hash_key("gone"): "cd" * 32})
    planner.keep(hash_key("kept"))
    planner.keep(hash_key("never-stored"))
    assert planner.stale_keys() == [hash_key("gone")]


@pytest.mark.parametrize(
    ("stale", "table", "rows", "share", "allow", "verdict"),
    [
        (0, 100, 100, 0.1, False, DeleteVerdict.NOTHING_TO_DELETE),
        (0, 0, 0, 0.1, False, DeleteVerdict.NOTHING_TO_DELETE),
        (5, 5, 0, 0.1, True, DeleteVerdict.REFUSED_NO_ROWS),  # even with the flag
        (10, 100, 90, 0.1, False, DeleteVerdict.ALLOWED),  # exactly the share
        (11, 100, 89, 0.1, False, DeleteVerdict.REFUSED_MASS_DELETE),
        (11, 100, 89, 0.1, True, DeleteVerdict.ALLOWED),
        (11, 100, 89, 0.5, False, DeleteVerdict.ALLOWED),
        (MASS_DELETE_FLOOR, 12, 2, 0.1, False, DeleteVerdict.ALLOWED),  # small tables: the floor
        (MASS_DELETE_FLOOR + 1, 12, 1, 0.1, False, DeleteVerdict.REFUSED_MASS_DELETE),
        (150, 1000, 900, 0.1, False, DeleteVerdict.REFUSED_MASS_DELETE),
    ],
)
def test_delete_verdicts(stale, table, rows, share, allow, verdict):
    assert judge_deletes(stale, table, rows, share, allow) is verdict
    assert verdict.refused == verdict.value.startswith("refused")


def test_summary_names_every_count():
    result = SyncResult(scanned=5, written=2, unchanged=2, skipped=1, table_size=4, stale=1, deleted=1)
    result.delete_verdict = DeleteVerdict.ALLOWED
    assert result.summary() == {
        "ok": True,
        "complete": True,
        "scanned": 5,
        "written": 2,
        "unchanged": 2,
        "deleted": 1,
        "skipped": 1,
        "stale": 1,
        "table_items": 4,
        "deletes": "allowed",
        "duration_s": 0.0,
        "error": None,
    }
