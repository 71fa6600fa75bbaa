"""The forwarder's I/O towards Lookout: one pooled HTTP client per container, and the edge token.

The token comes from `LOOKOUT_INGEST_EDGE_TOKEN`, or from the SSM SecureString named by
`LOOKOUT_INGEST_EDGE_TOKEN_PARAM` through Powertools Parameters (cached for
`token_cache_seconds`, so a rotated token is live within minutes without a deploy,
and re-read at once after the backend refused it).
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from chalicelib.aws import client
from chalicelib.config import ConfigError, settings
from chalicelib.forwarder import AUTH_STATUSES, BackendAnswer

INGEST_PATH = "/api/ingest/edge"
_refresh_token = False


class TokenUnavailable(RuntimeError):
    """No token could be read; the message names the setting, never a value."""


@cache
def http_pool(connect_timeout: float, read_timeout: float) -> Any:
    """Keep-alive connections reused across invocations of this container."""
    import urllib3

    return urllib3.PoolManager(
        num_pools=4,
        maxsize=10,
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        retries=False,
    )


@cache
def _ssm_provider(ssm_client: Any) -> Any:
    """Powertools' SSM provider on our shared client (its own cache lives as long as the client)."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    return SSMProvider(boto3_client=ssm_client)


def edge_token() -> str:
    """The current edge token: the plain variable, else SSM with a short cache."""
    global _refresh_token
    config = settings()
    if config.token:
        return config.token
    if not config.token_param:
        raise ConfigError("set LOOKOUT_INGEST_EDGE_TOKEN or LOOKOUT_INGEST_EDGE_TOKEN_PARAM")
    try:
        token = _ssm_provider(client("ssm")).get(
            config.token_param, decrypt=True, max_age=config.token_cache_seconds, force_fetch=_refresh_token
        )
    except Exception as exc:
        raise TokenUnavailable(f"cannot read {config.token_param} from SSM: {type(exc).__name__}") from None
    _refresh_token = False
    if not token:
        raise TokenUnavailable(f"{config.token_param} is empty")
    return str(token).strip()


def post_events(body: bytes, token: str) -> tuple[BackendAnswer, float]:
    """POST the batch; the answer (or the transport error) and the time it took, in ms."""
    global _refresh_token
    config = settings()
    url = config.require("backend_url") + INGEST_PATH
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pool = http_pool(config.forward_connect_timeout, config.forward_read_timeout)
    import urllib3

    started = time.perf_counter()
    try:
        response = pool.request("POST", url, body=body, headers=headers, redirect=False, retries=False)
        answer = BackendAnswer(response.status, response.data, response.headers.get("Retry-After"))
    except urllib3.exceptions.NewConnectionError:  # refused, DNS: checked first, it subclasses a timeout
        answer = BackendAnswer(None, error="connection")
    except urllib3.exceptions.TimeoutError:
        answer = BackendAnswer(None, error="timeout")
    except (urllib3.exceptions.HTTPError, OSError):
        answer = BackendAnswer(None, error="connection")
    elapsed_ms = (time.perf_counter() - started) * 1000
    if answer.status in AUTH_STATUSES:
        # The token may have been rotated: read SSM again on the next batch instead of in 5 minutes.
        _refresh_token = True
    return answer, elapsed_ms


def reset() -> None:
    """Forget pooled connections and cached providers (what a new container starts from)."""
    global _refresh_token
    _refresh_token = False
    for cached in (http_pool, _ssm_provider):
        cached.cache_clear()
