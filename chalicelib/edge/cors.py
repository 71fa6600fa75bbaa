"""CORS for browser beacons (credentials mode "include"): echo the Origin, never `*`."""

from __future__ import annotations

import re

# RFC 6454 serialized origin, as browsers send it: scheme "://" ASCII host (punycode, [IPv6]) [":" port].
_SERIALIZED_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9._~%\[\]:-]+")
DEFAULT_ALLOWED_HEADERS = "Content-Type, X-Api-Key, X-Api-Token, Authorization, Idempotency-Key"


def response_headers(origin: str | None) -> dict[str, str]:
    """Headers every answer to a request with `Origin` carries (202 and errors alike).

    Only a real origin (`scheme://host[:port]`) is echoed. `null` (sandboxed frames,
    file: pages, redirects) and `*` are not origins a site owns: echoing them with
    `Allow-Credentials: true` would hand any such context a credentialed answer, and
    `*` with credentials is refused by every browser anyway. An Origin with control
    characters is no browser's (a line break echoed into a header would be a 500).
    Those requests get no CORS headers; the answer itself is unchanged.
    """
    if not origin or not _SERIALIZED_ORIGIN.fullmatch(origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight_headers(origin: str | None, requested_headers: str | None) -> dict[str, str]:
    """The 204 answer to an OPTIONS preflight: allows what the browser asked for."""
    headers = response_headers(origin)
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": _allowed_headers(requested_headers),
            "Access-Control-Max-Age": "600",
        }
    )
    headers.setdefault("Vary", "Origin")
    return headers


def _allowed_headers(requested: str | None) -> str:
    names = [h.strip() for h in DEFAULT_ALLOWED_HEADERS.split(",")]
    seen = {n.lower() for n in names}
    for name in (requested or "").split(","):
        name = name.strip()
        if name and name.lower() not in seen and _is_token(name):
            names.append(name)
            seen.add(name.lower())
    return ", ".join(names)


def _is_token(name: str) -> bool:
    return len(name) <= 100 and all(c.isalnum() or c in "-_" for c in name)
