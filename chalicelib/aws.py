"""boto3 clients, created once per container on first use.

`AWS_ENDPOINT_URL` (read by botocore itself) points them at a local moto server.
Timeouts are short because the edge must answer well within the PHP SDK's 5 s.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str) -> Any:
    """A shared low-level client for `service` (sqs, dynamodb, ssm, cloudwatch)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=1,
        read_timeout=2,
        retries={"mode": "standard", "max_attempts": 2},
        max_pool_connections=25,
    )
    return boto3.session.Session().client(service, config=config)


def reset_clients() -> None:
    """Forget cached clients (tests switch between moto backends)."""
    client.cache_clear()
