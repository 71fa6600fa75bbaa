"""`sync-keys`, `keys get RAW_KEY`, `keys count`: run the key sync now and look into the keys table.

Results go to stdout; progress and log lines to stderr, so the output can be piped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from decimal import Decimal
from typing import Any

EXIT_FAILED = 1
EXIT_DELETES_REFUSED = 3


def register(subparsers: Any) -> None:
    sync = subparsers.add_parser(
        "sync-keys",
        help="mirror Lookout's project API keys into the keys table now",
        description="Run the key sync once (the same code as the scheduled Lambda).",
    )
    sync.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="delete stale keys even when they are more than LOOKOUT_EDGE_MASS_DELETE_SHARE of the table",
    )
    sync.add_argument(
        "--db-url", metavar="URL", help="mysql://user:pass@host:port/db (default: LOOKOUT_DB_URL or its SSM parameter)"
    )
    sync.set_defaults(run=run_sync)

    keys = subparsers.add_parser("keys", help="inspect the keys table")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    get = actions.add_parser("get", help="show the stored item of a raw API key as JSON")
    get.add_argument("raw_key", metavar="RAW_KEY", help="the project API key (only its hash is looked up)")
    get.set_defaults(run=run_get)
    count = actions.add_parser("count", help="count the items in the keys table")
    count.set_defaults(run=run_count)


def run_sync(args: argparse.Namespace) -> int:
    from chalicelib.keysync import job as keysync_job
    from chalicelib.keysync.plan import DeleteVerdict, SyncResult
    from chalicelib.runtime.config import settings
    from chalicelib.runtime.observability import metrics

    def progress(result: SyncResult) -> None:
        print(
            f"... {result.scanned} rows read: {result.written} written, {result.unchanged} unchanged,"
            f" {result.skipped} skipped",
            file=sys.stderr,
            flush=True,
        )

    print(f"syncing keys into {settings().keys_table} ...", file=sys.stderr, flush=True)
    _logs_to_stderr(keysync_job.SERVICE)
    result = keysync_job.run(db_url=args.db_url, allow_mass_delete=args.allow_mass_delete, progress=progress)
    metrics(keysync_job.SERVICE).clear_metrics()  # EMF is for Lambda; here the summary says it all

    print(f"key sync {'finished' if result.ok else 'FAILED'} in {result.duration:.1f} s")
    for label, value in (
        ("source rows", result.scanned),
        ("written", result.written),
        ("unchanged", result.unchanged),
        ("deleted", result.deleted),
        ("skipped", result.skipped),
        ("table before", result.table_size),
    ):
        print(f"  {label:<13}{value}")
    if not result.ok:
        print(f"error: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    if result.delete_verdict is DeleteVerdict.REFUSED_NO_ROWS:
        print(
            f"refused to delete {result.stale} keys: the key query returned no rows."
            " A broken source must not wipe the edge; check LOOKOUT_DB_URL and the query.",
            file=sys.stderr,
        )
        return EXIT_DELETES_REFUSED
    if result.delete_verdict is DeleteVerdict.REFUSED_MASS_DELETE:
        share = result.stale / result.table_size
        print(
            f"refused to delete {result.stale} of {result.table_size} keys ({share:.0%}), over the"
            f" {settings().mass_delete_share:.0%} limit. Check the source, then rerun with --allow-mass-delete.",
            file=sys.stderr,
        )
        return EXIT_DELETES_REFUSED
    return 0


def run_get(args: argparse.Namespace) -> int:
    from chalicelib.contract.keys_item import hash_key, table_key
    from chalicelib.runtime.aws import client
    from chalicelib.runtime.config import settings

    table = settings().keys_table
    key_hash = hash_key(args.raw_key)
    response = client("dynamodb").get_item(TableName=table, Key=table_key(key_hash), ConsistentRead=True)
    item = response.get("Item")
    if not item:
        print(f"no item for this key (key_hash {key_hash}) in {table}; is it live and synced?", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(plain_item(item), indent=2, sort_keys=True))
    return 0


def run_count(args: argparse.Namespace) -> int:
    from chalicelib.runtime.aws import client
    from chalicelib.runtime.config import settings

    pages = client("dynamodb").get_paginator("scan").paginate(TableName=settings().keys_table, Select="COUNT")
    print(sum(page["Count"] for page in pages))
    return 0


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    """A low-level DynamoDB item as plain JSON values (numbers as int where whole)."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {name: plain(deserializer.deserialize(value)) for name, value in item.items()}


class _CurrentStderr:
    """A stream that writes to whatever `sys.stderr` is when a line is logged."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _logs_to_stderr(service: str) -> None:
    """Send the service's JSON log lines to stderr: stdout is the command's result."""
    from chalicelib.runtime.observability import logger

    for handler in logger(service).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.stream = _CurrentStderr()  # no setStream: it would flush the old stream
