"""Who may send: API key extraction (contract order), the key's record, IP allowlist, per-signal switches.

The 401 answers are written here once, for the ingest doors and `/api/config`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from chalicelib.contract.errors import EdgeError, unavailable
from chalicelib.contract.keys_item import KeyRecord, hash_key
from chalicelib.contract.signals import Signal
from chalicelib.edge.doors import IngestRequest
from chalicelib.edge.keys import KeyStoreUnavailable, key_cache

# Where the ingest doors look for a key (CONTRACT §3); `/api/config` reads headers only.
INGEST_KEY_SOURCES = "X-Api-Key, a Bearer token or api_key in the body"


def missing_key(sources: str = INGEST_KEY_SOURCES) -> EdgeError:
    return EdgeError(401, "missing_api_key", f"no API key: send {sources}")


def invalid_key() -> EdgeError:
    return EdgeError(401, "invalid_api_key", "the API key is not known to this edge")


def known_key(key_hash: str) -> KeyRecord:
    """The key's record: 401 for a key this edge does not know, 503 when the store cannot say."""
    try:
        record = key_cache().get(key_hash)
    except KeyStoreUnavailable:
        raise unavailable("the key store is unavailable; retry shortly") from None
    if record is None:
        raise invalid_key()
    return record


def authenticate(request: IngestRequest, signal: Signal, raw_key: str | None) -> KeyRecord:
    """401/402/403/503 as the contract says; the raw key goes no further than here."""
    if raw_key is None:
        raise missing_key()
    record = known_key(hash_key(raw_key))
    if not record.billing_ok:
        raise EdgeError(402, "billing_required", "the organization's billing is not in good standing")
    if not ip_allowed(request.client_ip, record.ip_allowlist):
        raise EdgeError(403, "ip_not_allowed", "the client IP address is not in the organization's ingest allowlist")
    forced = request.headers.get("x-lookout-env-forced", "").strip() == "1"
    if not signal_enabled(record, signal, forced):
        raise EdgeError(403, "signal_disabled", f"the {signal.name} signal is disabled for this project")
    return record


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
        body_key = first_event.get("api_key")
        if isinstance(body_key, str) and body_key.strip():
            return body_key.strip()
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
