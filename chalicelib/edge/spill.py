"""Spilling: events the region's queue refuses or does not answer go to a fallback queue in another
region, within the same request deadline, so an SQS outage in one region costs no event.

    regional queue  ──(refused, throttled, no answer within its share)──►  fallback queue
    (REGIONAL_SHARE of the time left)                                     (the rest of the time)

The regional queue gets one try per message, and a second only for what it throttled while it
took the rest; a queue that took nothing (errors, no answer) is spilled from at once, and the
container stops asking it for a while (`regional_backoff`: 1 s, doubling to 10 s while it keeps
failing, one request at a time probing it). Meanwhile requests go to the fallback first and to
the regional queue only with what the fallback did not take: during a stall only the probes wait
out the regional call's timeout, and a fallback that fails while the region is back still finds it.

The client gets its 202 only once every event is in one of the two queues, else the honest 503
(`pipeline._queue_down`). Both queues get the same message bodies, so the same event ids: an event
whose regional send got no answer (it may be there) and that then went to the fallback is in both,
and Lookout stores an event id once (CONTRACT §6 `duplicate`). The fallback region's forwarder
delivers what it finds there like its own events; nothing in a message names its region.

Which queue: `LOOKOUT_EDGE_FALLBACK_QUEUE_URL`; unset, in a multi-region edge outside the home
region, the home region's queue of the same name (docs/multi-region.md). The home region itself
and a single-region edge have none unless it is set. docs/reliability.md has the budget and what
is not covered (both regions down).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from chalicelib.runtime import sqs_batch
from chalicelib.runtime.aws import client
from chalicelib.runtime.backoff import BackingOff, Backoff
from chalicelib.runtime.config import Settings
from chalicelib.runtime.container import per_container
from chalicelib.runtime.deadline import Deadline
from chalicelib.runtime.observability import count, logger
from chalicelib.runtime.sqs_batch import Outgoing, SendReport

# The regional queue's share of the time left when the enqueue starts; the fallback keeps the rest.
# With the 3.5 s request budget and an enqueue starting ~0.2 s in: the regional queue until ~1.85 s
# (its calls get 0.5 s connect and read timeouts: runtime/deadline.call_timeout), the fallback at least
# ~1.6 s with 1 s timeouts (a call across regions takes 70-250 ms; a container's first one opens
# a TLS connection, 3 round trips more). docs/reliability.md, "Spilling to a fallback queue".
REGIONAL_SHARE = 0.5
# How long a container sends straight to the fallback after the regional queue took none of a
# request's messages: 1 s, doubling while the probes fail, at most 10 s (as the keys table's).
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_LONGEST_SECONDS = 10.0
# The AWS forms of a queue URL name the region in the host (sqs.REGION.amazonaws.com, or the
# legacy REGION.queue.amazonaws.com); a local endpoint (moto) serves every region on one host.
_AWS_HOST = re.compile(r"^(?:sqs\.(?P<new>[a-z0-9-]+)|(?P<legacy>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?$")


@dataclass(frozen=True)
class FallbackQueue:
    url: str
    region: str


def url_region(queue_url: str) -> str | None:
    """The region an AWS queue URL names; None for a local endpoint's URL."""
    match = _AWS_HOST.match(urlsplit(queue_url).hostname or "")
    return (match.group("new") or match.group("legacy")) if match else None


def in_region(queue_url: str, region: str) -> str:
    """The same queue name and account in `region` (a local endpoint's URL serves every region)."""
    parts = urlsplit(queue_url)
    own = url_region(queue_url)
    if own is None or parts.hostname is None:
        return queue_url
    return parts._replace(netloc=parts.netloc.replace(own, region, 1)).geturl()


def fallback_queue(conf: Settings, own_region: str) -> FallbackQueue | None:
    """Where this container spills, or None (see the module docstring)."""
    home = conf.home_region if conf.home_region and conf.home_region != own_region else None
    if conf.fallback_queue_url:
        url = conf.fallback_queue_url
        region = url_region(url) or home or own_region
    elif home and conf.queue_url:
        url, region = in_region(conf.queue_url, home), home
    else:
        return None
    if region == own_region and url == conf.queue_url:
        return None  # the same queue: nowhere to spill
    return FallbackQueue(url, region)


def may_spill(conf: Settings) -> bool:
    """Whether the settings name a fallback at all: a single-region edge never asks its region."""
    return bool(conf.fallback_queue_url or conf.home_region)


def own_region() -> str:
    """The container's region, as its clients see it (AWS_REGION in Lambda)."""
    region: str = client("sqs").meta.region_name
    return region


def send_or_spill(
    queue_url: str,
    fallback: FallbackQueue,
    messages: dict[int, Outgoing],
    limit: Deadline,
    skip: frozenset[int],
) -> SendReport[int]:
    """Every message in the regional queue or the fallback by `limit`; the report's `sent` is
    what is in either (an idempotency claim records it, so a retry sends only the rest)."""
    if all(key in skip for key in messages):
        return SendReport(sent=set(skip))
    try:
        regional = _regional_try(queue_url, messages, _share(limit), skip)
    except BackingOff:
        return _fallback_first(queue_url, fallback, messages, limit, skip)
    if not regional.failed:
        return regional
    spilled = sqs_batch.send_messages(fallback.url, messages, limit, frozenset(regional.sent), region=fallback.region)
    _note_spill(fallback, spilled.sent - regional.sent, regional.reason, spilled)
    return _then(regional, spilled)


class _TookNothing(Exception):
    """The regional queue took none of a request's messages: what opens its back-off."""


@per_container
def regional_backoff() -> Backoff:
    """The container's back-off for its region's queue (`send_or_spill`)."""
    return Backoff("regional queue", BACKOFF_FIRST_SECONDS, BACKOFF_LONGEST_SECONDS)


def _share(limit: Deadline) -> Deadline:
    """The first queue's part of the time left: REGIONAL_SHARE of it; the second keeps the rest."""
    return Deadline.after(REGIONAL_SHARE * max(0.0, limit.left()))


def _regional_try(
    queue_url: str, messages: dict[int, Outgoing], regional_limit: Deadline, skip: frozenset[int]
) -> SendReport[int]:
    """One try per message at the regional queue by `regional_limit` (a second for what it
    throttled while it took the rest), through its back-off: BackingOff, without a call, while
    it holds off; a try that took nothing opens it, one that took anything closes it."""
    report: SendReport[int] = SendReport(sent=set(skip))
    try:
        with regional_backoff().attempt((_TookNothing,)):
            report = sqs_batch.send_messages(queue_url, messages, regional_limit, skip, max_rounds=1)
            if report.failed and report.sent - skip:  # it works and throttled a part: that part once more
                again = sqs_batch.send_messages(
                    queue_url, messages, regional_limit, frozenset(report.sent), max_rounds=1
                )
                report = _then(report, again)
            if report.failed and not report.sent - skip:
                raise _TookNothing(report.reason)
    except _TookNothing:
        pass
    return report


def _fallback_first(
    queue_url: str,
    fallback: FallbackQueue,
    messages: dict[int, Outgoing],
    limit: Deadline,
    skip: frozenset[int],
) -> SendReport[int]:
    """While the regional queue's back-off holds: the fallback gets the first share and one try,
    the regional queue what the fallback did not take, in the time left."""
    spilled = sqs_batch.send_messages(fallback.url, messages, _share(limit), skip, max_rounds=1, region=fallback.region)
    _note_spill(fallback, spilled.sent - skip, "BackingOff", spilled)
    if not spilled.failed:
        return spilled
    return _then(spilled, sqs_batch.send_messages(queue_url, messages, limit, frozenset(spilled.sent)))


def _note_spill(fallback: FallbackQueue, moved: set[int], reason: str, spilled: SendReport[int]) -> None:
    """The `spilled` count and one warning per spilling request (bench/outages.py reads it)."""
    if moved:
        count("spilled", len(moved))
    logger().warning(
        "regional queue failed; spilled to the fallback queue",
        extra={
            "reason": reason,
            "fallback_region": fallback.region,
            "spilled": len(moved),
            "not_spilled": len(spilled.failed),
            "fallback_reason": spilled.reason,
        },
    )


def _then(first: SendReport[int], then: SendReport[int]) -> SendReport[int]:
    """A send of what `first` left (its `sent` skipped), folded into one report."""
    return SendReport(
        sent=then.sent,
        failed=then.failed,
        unconfirmed=(first.unconfirmed | then.unconfirmed) - then.sent,
        reason=then.reason or first.reason,
    )
