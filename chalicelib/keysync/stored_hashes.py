"""What the keys table holds, in 41 bytes per key: the sync's memory bound.

A sync compares every source row with the table, so it holds one entry per stored key.
As a dict of hex strings that was ~257 MB per million keys; here each key is its 32-byte
SHA-256 in a bytearray, a 64-bit fingerprint of its content hash in an array, and one
state byte. A million keys take ~41 MB, with no per-key Python object.

Keys are grouped by their first 12 bits into 4,096 buckets (about 250 keys each at a
million), so a lookup is one C-level `bytearray.find` over a few kilobytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

_DIGEST = 32  # bytes of a SHA-256 key hash
_BUCKET_BITS = 12
_BUCKETS = 1 << _BUCKET_BITS
# State byte flags.
_STORED = 1  # the table holds this key (else a source row named a key the table lacks)
_SEEN = 2  # a source row named this key during the current sync
_HAS_CONTENT = 4  # the item carries a content hash (else it is rewritten under the sync's control)


def _bucket(digest: bytes) -> int:
    return (digest[0] << 4) | (digest[1] >> 4)


def fingerprint(content_hash: str) -> int:
    """The first 64 bits of a hex content hash: two contents that differ collide with
    probability 2^-64, which would leave one change unwritten until the next change."""
    return int(content_hash[:16], 16)


class StoredHashes:
    """key_hash → content fingerprint, with a seen mark per key (see module doc).

    Keys that rows name but the table lacks are added as they pass (32 + 9 bytes each),
    so a key named twice is noticed on a first load too.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()):
        """`pairs` of (key_hash hex, content_hash hex or "" when the item has none)."""
        self._keys = [bytearray() for _ in range(_BUCKETS)]
        self._prints = [array("Q") for _ in range(_BUCKETS)]
        self._states = [bytearray() for _ in range(_BUCKETS)]
        self.size = 0  # keys the table holds
        for key_hash, content in pairs:
            self._append(
                bytes.fromhex(key_hash),
                fingerprint(content) if content else 0,
                _STORED | (_HAS_CONTENT if content else 0),
            )
            self.size += 1

    def _append(self, digest: bytes, content: int, state: int) -> None:
        bucket = _bucket(digest)
        self._keys[bucket] += digest
        self._prints[bucket].append(content)
        self._states[bucket].append(state)

    def _find(self, digest: bytes) -> tuple[int, int]:
        """(bucket, position in it) of a digest; position -1 when absent."""
        bucket = _bucket(digest)
        keys = self._keys[bucket]
        found = keys.find(digest)
        while found != -1 and found % _DIGEST:  # a match straddling two keys
            found = keys.find(digest, found + 1)
        return bucket, (-1 if found == -1 else found // _DIGEST)

    def mark_seen(self, key_hash: str, add: bool = True) -> tuple[bool, bool, int | None]:
        """Mark the key seen (`add`: remember it even when the table lacks it); returns (the
        table holds it, a row already named it, its content fingerprint or None if it has none)."""
        digest = bytes.fromhex(key_hash)
        bucket, index = self._find(digest)
        if index < 0:
            if add:
                self._append(digest, 0, _SEEN)
            return False, False, None
        states = self._states[bucket]
        state = states[index]
        states[index] = state | _SEEN
        content = self._prints[bucket][index] if state & _HAS_CONTENT else None
        return bool(state & _STORED), bool(state & _SEEN), content

    def _stored(self) -> Iterator[tuple[str, int, int]]:
        for bucket in range(_BUCKETS):
            keys, prints = self._keys[bucket], self._prints[bucket]
            for index, state in enumerate(self._states[bucket]):
                if state & _STORED:
                    yield keys[index * _DIGEST : (index + 1) * _DIGEST].hex(), prints[index], state

    def unseen(self) -> Iterator[str]:
        """Stored key hashes (hex) no row has marked: the stale ones once every row went past."""
        return (key_hash for key_hash, _, state in self._stored() if not state & _SEEN)

    def items(self) -> Iterator[tuple[str, str]]:
        """Stored (key_hash, content fingerprint as 16 hex digits, or "" when the item has none)."""
        for key_hash, content, state in self._stored():
            yield key_hash, (f"{content:016x}" if state & _HAS_CONTENT else "")
