"""Who may send: API key extraction (contract order), IP allowlist, per-signal switches."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from chalicelib.contract.keys_item import KeyRecord
from chalicelib.contract.signals import Signal


def extract_api_key(headers: Mapping[str, str], first_event: Any) -> str | None:
    """The key, first found wins: X-Api-Key, X-Api-Token, Bearer, Basic user, body `api_key`.

    `headers` must be case-insensitive or lowercased.
    """
    for name in ("x-api-key", "x-api-token"):
        value = (headers.get(name) or "").strip()
        if value:
            return value
    authorization = (headers.get("authorization") or "").strip()
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        user = _basic_user(credentials)
        if user:
            return user
    if isinstance(first_event, dict):
        value = first_event.get("api_key")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _basic_user(credentials: str) -> str | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded.partition(":")[0] or None


@lru_cache(maxsize=1024)
def _networks(allowlist: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in allowlist:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue  # a malformed entry allows nobody; the others still apply
    return tuple(networks)


def ip_allowed(client_ip: str | None, allowlist: tuple[str, ...]) -> bool:
    """True when the list is empty or the client address falls in one of its networks."""
    if not allowlist:
        return True
    try:
        address = ipaddress.ip_address((client_ip or "").strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(allowlist))


def signal_enabled(record: KeyRecord, signal: Signal, env_forced: bool) -> bool:
    """False when the dashboard disabled the signal and the customer did not force it on."""
    if signal.flag is None or env_forced:
        return True
    return bool(getattr(record, signal.flag))
