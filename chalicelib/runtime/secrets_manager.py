"""The one Secrets Manager reader: Powertools Parameters on the container's shared client.

Like `runtime.ssm`: values cached for `max_age` seconds per container, `force` re-reads
(after MySQL refused rotated credentials).
"""

from __future__ import annotations

from typing import Any

from chalicelib.runtime.container import per_container


class SecretUnavailable(RuntimeError):
    """The secret could not be read or is not a JSON object; the message names it, never a value."""


@per_container
def _provider() -> Any:
    """One provider (and value cache) per container, on the container's Secrets Manager client."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from chalicelib.runtime.aws import client

    return SecretsProvider(boto3_client=client("secretsmanager"))


def secret_json(secret_id: str, max_age: int, force: bool = False) -> dict[str, Any]:
    """The secret's JSON object; SecretUnavailable when it cannot be read or is not one."""
    try:
        value = _provider().get(secret_id, max_age=max_age, force_fetch=force, transform="json")
    except Exception as exc:
        raise SecretUnavailable(f"cannot read secret {secret_id}: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise SecretUnavailable(f"secret {secret_id} is not a JSON object")
    return value
