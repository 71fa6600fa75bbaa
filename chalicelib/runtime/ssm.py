"""The one SSM SecureString reader: Powertools Parameters on the container's shared client.

Values are cached for `max_age` seconds (a rotated secret is live within minutes, with no
deploy); `force` re-reads at once, e.g. after Lookout refused the edge token.
"""

from __future__ import annotations

from functools import cache
from typing import Any


class ParameterUnavailable(RuntimeError):
    """The parameter could not be read or is empty; the message names it, never a value."""


@cache
def _provider(ssm_client: Any) -> Any:
    """One provider (and value cache) per shared client: a new client (tests) starts clean."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    return SSMProvider(boto3_client=ssm_client)


def secure_parameter(name: str, max_age: int, force: bool = False) -> str:
    """The decrypted value of SecureString `name`, stripped; ParameterUnavailable when unusable."""
    from chalicelib.runtime.aws import client

    try:
        value = _provider(client("ssm")).get(name, decrypt=True, max_age=max_age, force_fetch=force)
    except Exception as exc:
        raise ParameterUnavailable(f"cannot read SSM parameter {name}: {type(exc).__name__}") from None
    text = str(value or "").strip()
    if not text:
        raise ParameterUnavailable(f"SSM parameter {name} is empty")
    return text


def reset() -> None:
    """Forget the provider and its cached values (tests; a new container)."""
    _provider.cache_clear()
