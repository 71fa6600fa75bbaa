"""Spilling: events the region's queue refuses or does not answer go to a fallback queue in another
region, within the same request deadline, so an SQS outage in one region costs no event.

    regional queue  ──(refused, throttled, no answer within its share)──►  fallback queue
    (REGIONAL_SHARE of the time left)                                     (the rest of the time)

The regional queue gets one try per message, and a second only for what it throttled while it
took the rest; a queue that took nothing (errors, no answer) is spilled from at once.

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
from chalicelib.runtime.config import Settings
from chalicelib.runtime.deadline import Deadline
from chalicelib.runtime.observability import count, logger
from chalicelib.runtime.sqs_batch import Outgoing, SendReport

# The regional queue's share of the time left when the enqueue starts; the fallback keeps the rest.
# With the 3.5 s request budget and an enqueue starting ~0.2 s in: the regional queue until ~1.85 s
# (its calls get 0.5 s connect and read timeouts: runtime/deadline.call_timeout), the fallback at least
# ~1.6 s with 1 s timeouts (a call across regions takes 70-250 ms; a container's first one opens
# a TLS connection, 3 round trips more). docs/reliability.md, "Spilling to a fallback queue".
REGIONAL_SHARE = 0.5
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
    regional_limit = Deadline.after(REGIONAL_SHARE * max(0.0, limit.left()))
    regional = sqs_batch.send_messages(queue_url, messages, regional_limit, skip, max_rounds=1)
    if regional.failed and regional.sent - skip:  # it works and throttled a part: that part once more
        again = sqs_batch.send_messages(queue_url, messages, regional_limit, frozenset(regional.sent), max_rounds=1)
        regional = _then(regional, again)
    if not regional.failed:
        return regional
    spilled = sqs_batch.send_messages(fallback.url, messages, limit, frozenset(regional.sent), region=fallback.region)
    moved = spilled.sent - regional.sent
    if moved:
        count("spilled", len(moved))
    logger().warning(
        "regional queue failed; spilled to the fallback queue",
        extra={
            "reason": regional.reason,
            "fallback_region": fallback.region,
            "spilled": len(moved),
            "not_spilled": len(spilled.failed),
            "fallback_reason": spilled.reason,
        },
    )
    return _then(regional, spilled)


def _then(first: SendReport[int], then: SendReport[int]) -> SendReport[int]:
    """A send of what `first` left (its `sent` skipped), folded into one report."""
    return SendReport(
        sent=then.sent,
        failed=then.failed,
        unconfirmed=(first.unconfirmed | then.unconfirmed) - then.sent,
        reason=then.reason or first.reason,
    )
