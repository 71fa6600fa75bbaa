"""Key sync, the pure part: a Lookout key row → keys-table item, and what to write or delete.

No I/O here. `chalicelib.keysync.job` wires it to MySQL and DynamoDB. The raw API key
only ever passes through `item_from_row` to be hashed; nothing here puts it in a
message or an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from chalicelib.contract.keys_item import CONTENT_HASH, KeyRecord, hash_key
from chalicelib.keysync.stored_hashes import StoredHashes, fingerprint

# Columns the key query must return (CONTRACT §7).
REQUIRED_COLUMNS = (
    "key_id",
    "api_key",
    "project_id",
    "organization_id",
    "billing_ok",
    "ip_allowlist",
    "trace_enabled",
    "rum_enabled",
    "rate_limit_per_minute",
)
# Below this many deletes the share rule does not apply: in a small table one
# revocation is already "more than 10 %", and a revoked key must not stay live.
MASS_DELETE_FLOOR = 10


class BadRow(ValueError):
    """A source row that cannot become an item. The message names the key_id, never the key.

    `key_hash` is set when the key itself was readable: the sync then keeps the item the
    table already holds for it rather than deleting a customer's key over bad org data.
    """

    def __init__(self, message: str, key_hash: str | None = None):
        super().__init__(message)
        self.key_hash = key_hash


def missing_columns(columns: list[str]) -> list[str]:
    """The contract columns a query result lacks (empty when it is usable)."""
    return [name for name in REQUIRED_COLUMNS if name not in columns]


def item_from_row(row: Mapping[str, Any], synced_at: int) -> dict[str, dict[str, Any]]:
    """The keys-table item (CONTRACT §4, low-level form) for one row, with its content hash."""
    key_id = _text(row, "key_id", None)
    raw_key = row.get("api_key")
    if isinstance(raw_key, bytes):
        raw_key = raw_key.decode("utf-8")
    if not isinstance(raw_key, str) or not raw_key:
        raise BadRow(f"key_id={key_id}: api_key is empty")
    key_hash = hash_key(raw_key)
    try:
        limit = row.get("rate_limit_per_minute")
        record = KeyRecord(
            key_hash=key_hash,
            key_id=key_id,
            project_id=_text(row, "project_id", key_id),
            organization_id=_text(row, "organization_id", key_id),
            # NULL = 'ok' is NULL in SQL: an unknown billing state is not ok.
            billing_ok=_flag(row.get("billing_ok"), default=False),
            ip_allowlist=tuple(parse_allowlist(row.get("ip_allowlist"), key_id)),
            trace_enabled=_flag(row.get("trace_enabled"), default=True),
            rum_enabled=_flag(row.get("rum_enabled"), default=True),
            rate_limit_per_minute=_whole_number(limit, key_id) if limit is not None else None,
        )
    except BadRow as exc:
        raise BadRow(str(exc), key_hash=key_hash) from None
    return record.to_item(synced_at)


def _whole_number(value: Any, key_id: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRow(f"key_id={key_id}: rate_limit_per_minute is not a number") from None


def parse_allowlist(value: Any, key_id: str) -> list[str]:
    """The org allowlist from its JSON text; NULL, empty text and `null` mean no restriction."""
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRow(f"key_id={key_id}: ip_allowlist is not valid JSON") from None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise BadRow(f"key_id={key_id}: ip_allowlist must be a JSON array of strings")
    return [entry.strip() for entry in value if entry.strip()]


def _text(row: Mapping[str, Any], column: str, key_id: str | None) -> str:
    value = row.get(column)
    if value is None or str(value) == "":
        raise BadRow(f"key_id={key_id if column != 'key_id' else None}: {column} is empty")
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _flag(value: Any, default: bool) -> bool:
    """MySQL BOOL arrives as 0/1 (or b'\\x01' for BIT); NULL takes the default."""
    if value is None:
        return default
    if isinstance(value, bytes):
        return any(value)
    return bool(value)


class DuplicateKey(ValueError):
    """The source listed the same key twice; the later row is skipped."""


class SyncPlanner:
    """The diff between the table (its key hashes and content hashes) and the rows streamed
    past it, in StoredHashes' compact form: memory stays ~41 bytes per key."""

    def __init__(self, existing: StoredHashes | Mapping[str, str]):
        self.existing = existing if isinstance(existing, StoredHashes) else StoredHashes(existing.items())
        self.table_size = self.existing.size

    def needs_write(self, item: Mapping[str, Any]) -> bool:
        """True when the table lacks this item or holds other content for its key."""
        stored, seen, content = self.existing.mark_seen(item["key_hash"]["S"])
        if seen:
            raise DuplicateKey("the same API key appears in two rows")
        return not stored or content != fingerprint(item[CONTENT_HASH]["S"])

    def keep(self, key_hash: str) -> None:
        """Leave whatever the table holds for this key as it is (its row was unusable)."""
        self.existing.mark_seen(key_hash, add=False)

    def stale_keys(self) -> list[str]:
        """Key hashes the table holds that no row mentioned: revoked or gone."""
        return list(self.existing.unseen())


class DeleteVerdict(Enum):
    """Whether a sync may delete the stale keys it found."""

    ALLOWED = "allowed"
    NOTHING_TO_DELETE = "nothing_to_delete"
    REFUSED_SOURCE_FAILED = "refused_source_failed"
    REFUSED_NO_ROWS = "refused_no_rows"
    REFUSED_MASS_DELETE = "refused_mass_delete"
    DEFERRED = "deferred"  # the run stopped before its timeout: not every row was read

    @property
    def refused(self) -> bool:
        return self.value.startswith("refused")


def judge_deletes(
    stale: int, table_size: int, rows_read: int, max_share: float, allow_mass_delete: bool
) -> DeleteVerdict:
    """Whether a source that finished cleanly may delete `stale` keys. A broken source must
    never wipe the edge: no deletes after an empty result, and no more than `max_share`
    of the table at once (beyond MASS_DELETE_FLOOR) unless the operator allows it.
    (A source that failed never gets here: its error stops the sync before any delete.)"""
    if stale == 0:
        return DeleteVerdict.NOTHING_TO_DELETE
    if rows_read == 0:
        return DeleteVerdict.REFUSED_NO_ROWS
    if not allow_mass_delete and stale > max(MASS_DELETE_FLOOR, max_share * table_size):
        return DeleteVerdict.REFUSED_MASS_DELETE
    return DeleteVerdict.ALLOWED


@dataclass
class SyncResult:
    """What one sync did; `summary()` is the log line and the CLI's last words."""

    scanned: int = 0  # source rows read
    written: int = 0
    unchanged: int = 0
    skipped: int = 0
    stale: int = 0
    deleted: int = 0
    table_size: int = 0  # items in the table before the sync
    delete_verdict: DeleteVerdict = DeleteVerdict.NOTHING_TO_DELETE
    error: str | None = None
    duration: float = 0.0
    complete: bool = True  # false: the run stopped in time and the next one carries on

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "complete": self.complete,
            "scanned": self.scanned,
            "written": self.written,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "stale": self.stale,
            "table_items": self.table_size,
            "deletes": self.delete_verdict.value,
            "duration_s": round(self.duration, 3),
            "error": self.error,
        }
