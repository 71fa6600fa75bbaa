"""AWS clients, created once per container on first use.

`AWS_ENDPOINT_URL` (read by botocore itself) points them at a local moto server.
Timeouts are short because the edge must answer well within the PHP SDK's 5 s.

Plain botocore, not boto3: the clients are the same low-level clients, but `import boto3`
also imports s3transfer and boto3's resource layer (~40 ms of a cold start, measured by
`make bench`), and one shared session loads the endpoint and retry data once for every client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.runtime.container import per_container

if TYPE_CHECKING:
    from chalicelib.runtime.deadline import Deadline


@dataclass
class Timeouts:
    """Connect and read timeouts (s) of the clients built from now on. The functions' are short:
    their callers wait (the edge answers well within the PHP SDK's 5 s). An operator's command
    has nobody waiting and may meet a busy endpoint (a large DLQ, the local stack's one moto
    process): it asks for `use_operator_timeouts()`."""

    connect: float = 1.0
    read: float = 2.0


OPERATOR_TIMEOUTS = Timeouts(connect=5.0, read=60.0)


@per_container
def _timeouts() -> Timeouts:
    return Timeouts()


def use_operator_timeouts() -> None:
    """For `edgectl` commands run by an operator: every client (re)built with OPERATOR_TIMEOUTS."""
    timeouts = _timeouts()
    timeouts.connect, timeouts.read = OPERATOR_TIMEOUTS.connect, OPERATOR_TIMEOUTS.read
    _client.cache_clear()


@per_container
def _session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def client(
    service: str, region: str | None = None, *, single_attempt: bool = False, timeout_seconds: float | None = None
) -> Any:
    """A shared low-level client for `service` (sqs, dynamodb, ssm, cloudwatch).

    `region` None is the container's own region; another region is for a multi-region
    edge's home-region key lookups and `status --regions` (docs/multi-region.md).
    `single_attempt` is for a caller that retries on its own within a deadline (the edge's
    enqueue): botocore's retry would double a stalled call's time past that deadline.
    `timeout_seconds` replaces the connect and read timeouts (1 s and 2 s, see `Timeouts`) for a
    call that must be short (the rate counter's, bounded by the request's deadline).
    """
    return _client(service, region, single_attempt, timeout_seconds)


def bounded_client(service: str, deadline: Deadline, cap: float, region: str | None = None) -> Any:
    """A single-attempt client whose connect and read timeouts are `deadline.call_timeout(cap)`:
    one call of it ends before the request's deadline; OutOfTime when no call fits any more.

    No client per request: the timeout is one of a few steps (runtime/deadline.TIMEOUT_STEPS) or
    the caller's cap, and each (service, region, timeout) client is built once per container.
    Measured on the shared session: the first client of a service ~120-260 ms (its model is
    loaded), each further one ~3-4 ms, and a client brings its own connection pool (its first
    call opens a connection); a warm request nearly always gets its cap, so one client.
    """
    return _client(service, region, True, deadline.call_timeout(cap))


@per_container
def _client(service: str, region: str | None, single_attempt: bool, timeout_seconds: float | None) -> Any:
    from botocore.config import Config

    timeouts = _timeouts()
    config = Config(
        connect_timeout=timeout_seconds or timeouts.connect,
        read_timeout=timeout_seconds or timeouts.read,
        # botocore's max_attempts counts retries after the first try: 2 means 3 tries in all.
        retries={"mode": "standard", "total_max_attempts": 1}
        if single_attempt
        else {"mode": "standard", "max_attempts": 2},
        max_pool_connections=25,
    )
    # Built under the container's lock: botocore sessions are not thread-safe (the local edge is threaded).
    return _session().create_client(service, region_name=region, config=config)
