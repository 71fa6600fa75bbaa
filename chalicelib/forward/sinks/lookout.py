"""The forwarder's I/O towards Lookout: one pooled HTTP client per container, and the edge token.

The token comes from `LOOKOUT_INGEST_EDGE_TOKEN`, or from the SSM SecureString named by
`LOOKOUT_INGEST_EDGE_TOKEN_PARAM` through Powertools Parameters (cached for
`token_cache_seconds`, so a rotated token is live within minutes without a deploy,
and re-read at once after the backend refused it).
"""

from __future__ import annotations

import time

from chalicelib.forward.settle import AUTH_STATUSES, BackendAnswer
from chalicelib.runtime import http, ssm
from chalicelib.runtime.config import ConfigError, settings

INGEST_PATH = "/api/ingest/edge"
_refresh_token = False


class TokenUnavailable(RuntimeError):
    """No token could be read; the message names the setting, never a value."""


def edge_token() -> str:
    """The current edge token: the plain variable, else SSM with a short cache."""
    global _refresh_token
    config = settings()
    if config.token:
        return config.token
    if not config.token_param:
        raise ConfigError("set LOOKOUT_INGEST_EDGE_TOKEN or LOOKOUT_INGEST_EDGE_TOKEN_PARAM")
    try:
        token = ssm.secure_parameter(config.token_param, config.token_cache_seconds, force=_refresh_token)
    except ssm.ParameterUnavailable as exc:
        raise TokenUnavailable(str(exc)) from None
    _refresh_token = False
    return token


def post_events(body: bytes, token: str) -> tuple[BackendAnswer, float]:
    """POST the batch; the answer (or the transport error) and the time it took, in ms."""
    global _refresh_token
    config = settings()
    url = config.require("backend_url") + INGEST_PATH
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    pool = http.pool(config.forward_connect_timeout, config.forward_read_timeout)
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
    http.reset()
    ssm.reset()
