"""The one SSM SecureString reader: Powertools Parameters on the container's shared client.

Values are cached for `max_age` seconds (a rotated secret is live within minutes, with no
deploy); `force` re-reads at once, e.g. after Lookout refused the edge token.
"""

from __future__ import annotations

from typing import Any

from chalicelib.runtime.container import per_container


class ParameterUnavailable(RuntimeError):
    """The parameter could not be read or is empty; the message names it, never a value."""


@per_container
def _provider() -> Any:
    """One provider (and value cache) per container, on the container's SSM client."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    from chalicelib.runtime.aws import client

    return SSMProvider(boto3_client=client("ssm"))


def secure_parameter(name: str, max_age: int, force: bool = False) -> str:
    """The decrypted value of SecureString `name`, stripped; ParameterUnavailable when unusable."""
    try:
        value = _provider().get(name, decrypt=True, max_age=max_age, force_fetch=force)
    except Exception as exc:
        raise ParameterUnavailable(f"cannot read SSM parameter {name}: {type(exc).__name__}") from None
    text = str(value or "").strip()
    if not text:
        raise ParameterUnavailable(f"SSM parameter {name} is empty")
    return text
