"""`dlq status | redrive | peek`: look into the forwarder's dead-letter queue and move it back.

A redrive keeps the `delivered_to` attribute and strips the `dlq_*` ones, so a message goes
back only to the destinations that refused it (docs/sinks.md).

Reading SQS hides what it reads; these commands hold messages for a short time and
make them visible again at once when they are done, so a look never delays a redrive.

They run on an operator's machine, not in a function: their AWS calls wait up to a minute
(`aws.use_operator_timeouts`), not the functions' 2 s, so a large DLQ behind a busy endpoint
(the local stack's single moto process) still moves. A redrive that stops on an error says
how far it got; what it held comes back within HOLD_SECONDS and the command can be run again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.forward.settle import boto_attributes, without_dlq_attributes
from chalicelib.runtime import aws, sqs_batch
from chalicelib.runtime.config import ConfigError, settings

HOLD_SECONDS = 60
# Messages the forwarder did not dead-letter itself came through the queue's redrive policy.
REDRIVE_POLICY_REASON = "max_receives"


def register(subparsers: Any) -> None:
    urls = argparse.ArgumentParser(add_help=False)
    urls.add_argument("--queue-url", help="main queue (default: LOOKOUT_EDGE_QUEUE_URL)")
    urls.add_argument("--dlq-url", help="dead-letter queue (default: LOOKOUT_EDGE_DLQ_URL)")
    dlq = subparsers.add_parser("dlq", help="inspect and redrive the forwarder's dead-letter queue")
    actions = dlq.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)

    status = actions.add_parser("status", parents=[urls], help="depth, oldest age, counts by reason")
    status.add_argument("--max-scan", type=int, default=1000, help="messages to read for the counts (default 1000)")
    status.set_defaults(run=run_status)

    redrive = actions.add_parser("redrive", parents=[urls], help="move messages back to the main queue")
    redrive.add_argument("--limit", type=int, default=None, help="move at most N messages")
    redrive.add_argument("--dry-run", action="store_true", help="count what would move, move nothing")
    redrive.set_defaults(run=run_redrive)

    peek = actions.add_parser("peek", parents=[urls], help="show N envelopes (never the payload)")
    peek.add_argument("count", type=int, nargs="?", default=10)
    peek.set_defaults(run=run_peek)


def _url(explicit: str | None, setting: str) -> str:
    return explicit or settings().require(setting)


def _reason(message: dict[str, Any]) -> str:
    """`batch_rejected (400) by loki`: the first refusal, and who refused (when not Lookout alone)."""
    attributes = message.get("MessageAttributes", {})
    reason = attributes.get("dlq_reason", {}).get("StringValue", REDRIVE_POLICY_REASON)
    status = attributes.get("dlq_status", {}).get("StringValue")
    sinks = attributes.get("dlq_sinks", {}).get("StringValue")
    text = f"{reason} ({status})" if status else reason
    return f"{text} by {sinks}" if sinks and sinks != "lookout" else text


def _scan(queue_url: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` messages, each read once (hidden meanwhile); stops when the queue is empty."""
    seen: list[dict[str, Any]] = []
    while len(seen) < limit:
        batch = sqs_batch.receive(queue_url, limit - len(seen), visibility=HOLD_SECONDS)
        if not batch:
            break
        seen.extend(batch)
    return seen


def _release(queue_url: str, messages: list[dict[str, Any]]) -> None:
    if messages:
        sqs_batch.change_visibility(queue_url, {m["MessageId"]: (m["ReceiptHandle"], 0) for m in messages})


def _age(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days}d{hours}h" if days else f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_status(args: argparse.Namespace) -> int:
    aws.use_operator_timeouts()
    try:
        dlq_url = _url(args.dlq_url, "dlq_url")
        queue_url = args.queue_url or settings().queue_url
    except ConfigError as exc:
        return _fail(str(exc))
    visible, in_flight = sqs_batch.depth(dlq_url)
    messages = _scan(dlq_url, min(args.max_scan, visible))
    _release(dlq_url, messages)
    print(f"dead-letter queue {dlq_url}")
    print(f"  depth {visible} (in flight {in_flight})")
    if messages:
        oldest = min(int(m["Attributes"]["SentTimestamp"]) for m in messages) / 1000
        print(f"  oldest {_age(time.time() - oldest)}")
        print(f"  by reason ({len(messages)} read):")
        for reason, count in Counter(_reason(m) for m in messages).most_common():
            print(f"    {reason:<28} {count}")
    if queue_url:
        queued, queued_in_flight = sqs_batch.depth(queue_url)
        print(f"main queue {queue_url}")
        print(f"  depth {queued} (in flight {queued_in_flight})")
    return 0


def run_peek(args: argparse.Namespace) -> int:
    aws.use_operator_timeouts()
    try:
        dlq_url = _url(args.dlq_url, "dlq_url")
    except ConfigError as exc:
        return _fail(str(exc))
    messages = _scan(dlq_url, max(0, args.count))
    _release(dlq_url, messages)
    for message in messages:
        print(json.dumps(_envelope(message), sort_keys=True))
    return 0


def _envelope(message: dict[str, Any]) -> dict[str, Any]:
    """What an operator needs to judge a message: ids, reason, metadata; not the payload."""
    sent_ms = int(message["Attributes"]["SentTimestamp"])
    shown: dict[str, Any] = {
        "message_id": message["MessageId"],
        "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sent_ms / 1000)),
        "reason": _reason(message),
        "attributes": {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()},
        "body_bytes": len(message["Body"].encode()),
    }
    try:
        body = json.loads(message["Body"])
    except ValueError:
        return {**shown, "envelope": None}
    if isinstance(body, dict):
        shown["envelope"] = {k: v for k, v in body.items() if k not in ("payload", "api_key")}
    return shown


def run_redrive(args: argparse.Namespace) -> int:
    aws.use_operator_timeouts()
    try:
        dlq_url, queue_url = _url(args.dlq_url, "dlq_url"), _url(args.queue_url, "queue_url")
    except ConfigError as exc:
        return _fail(str(exc))
    visible, _ = sqs_batch.depth(dlq_url)
    # Bounded by the depth at start: events the forwarder dead-letters again meanwhile wait for the next run.
    target = min(visible, args.limit) if args.limit is not None else visible
    if args.dry_run:
        messages = _scan(dlq_url, target)
        _release(dlq_url, messages)
        print(f"would move {len(messages)} message(s) to {queue_url}")
        for reason, count in Counter(_reason(m) for m in messages).most_common():
            print(f"  {reason:<28} {count}")
        return 0
    moved = failed = 0
    while moved + failed < target:
        try:
            moved_now, failed_now = _redrive_batch(dlq_url, queue_url, target - moved - failed)
        except (BotoCoreError, ClientError) as exc:
            print(
                f"error: redrive stopped after {moved} of {target} moved: {sqs_batch.reason(exc)}; the rest stays "
                f"in the DLQ (anything held comes back within {HOLD_SECONDS} s): run it again",
                file=sys.stderr,
            )
            return 1
        if not moved_now and not failed_now:
            break
        moved, failed = moved + moved_now, failed + failed_now
        print(f"redrive: {moved}/{target} moved, {failed} failed", file=sys.stderr)
    print(f"moved {moved} message(s) from {dlq_url} to {queue_url}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


def _redrive_batch(dlq_url: str, queue_url: str, wanted: int) -> tuple[int, int]:
    """Up to ten messages from the DLQ to the main queue: (moved, failed); (0, 0) when the DLQ is empty."""
    batch = sqs_batch.receive(dlq_url, wanted, visibility=HOLD_SECONDS)
    if not batch:
        return 0, 0
    outgoing = {
        m["MessageId"]: sqs_batch.Outgoing(
            m["Body"], without_dlq_attributes(boto_attributes(m.get("MessageAttributes", {})))
        )
        for m in batch
    }
    # Send first, delete after: a crash in between duplicates (the backend dedups by event_id), never loses.
    not_sent = sqs_batch.send_messages(queue_url, outgoing).failed
    sent = {m["MessageId"]: m["ReceiptHandle"] for m in batch if m["MessageId"] not in not_sent}
    not_deleted = sqs_batch.delete_messages(dlq_url, sent) if sent else set()
    _release(dlq_url, [m for m in batch if m["MessageId"] in not_sent])
    return len(sent) - len(not_deleted), len(not_sent) + len(not_deleted)
