"""StoredHashes: the sync's compact picture of the keys table."""

from __future__ import annotations

import hashlib
import tracemalloc

from chalicelib.keysync.stored_hashes import StoredHashes, fingerprint


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_stored_keys_are_found_with_their_content_and_marked_once():
    stored = StoredHashes([(digest("a"), digest("content a")), (digest("legacy"), "")])
    assert stored.size == 2
    assert stored.mark_seen(digest("a")) == (True, False, fingerprint(digest("content a")))
    assert stored.mark_seen(digest("a")) == (True, True, fingerprint(digest("content a")))
    assert stored.mark_seen(digest("legacy")) == (True, False, None)  # no content hash: rewrite it


def test_a_key_the_table_lacks_is_remembered_so_a_second_row_is_a_duplicate():
    stored = StoredHashes()
    assert stored.mark_seen(digest("new")) == (False, False, None)
    assert stored.mark_seen(digest("new")) == (False, True, None)
    assert stored.mark_seen(digest("kept only"), add=False) == (False, False, None)
    assert stored.mark_seen(digest("kept only")) == (False, False, None)
    assert stored.size == 0 and list(stored.items()) == []


def test_unseen_lists_only_stored_keys_no_row_named():
    keys = [digest(str(i)) for i in range(5000)]
    stored = StoredHashes((key, digest("c" + key)) for key in keys)
    for key in keys[1:]:
        stored.mark_seen(key)
    stored.mark_seen(digest("brand new"))
    assert list(stored.unseen()) == [keys[0]]
    assert dict(stored.items()) == {key: digest("c" + key)[:16] for key in keys}


def test_a_key_is_never_matched_across_two_stored_keys():
    """find() could match bytes straddling two neighbours; only aligned matches count."""
    first = bytes(2) + bytes(range(1, 15)) + bytes(2) + bytes(range(100, 114))  # all in bucket 0
    second = bytes(2) + bytes(range(200, 230))
    straddling = (first[16:] + second[:16]).hex()
    stored = StoredHashes([(first.hex(), ""), (second.hex(), "")])
    assert stored.mark_seen(straddling, add=False) == (False, False, None)


def test_memory_is_tens_of_bytes_per_key():
    keys = [(digest(str(i)), digest(f"c{i}")) for i in range(50_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stored = StoredHashes(iter(keys))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert stored.size == 50_000
    assert held < 50_000 * 60 + 1_000_000  # 41 bytes a key plus the 4,096 buckets; a dict of str took ~250
