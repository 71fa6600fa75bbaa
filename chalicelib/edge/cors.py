"""CORS for browser beacons (credentials mode "include"): echo the Origin, never `*`."""

from __future__ import annotations

DEFAULT_ALLOWED_HEADERS = "Content-Type, X-Api-Key, X-Api-Token, Authorization, Idempotency-Key"


def response_headers(origin: str | None) -> dict[str, str]:
    """Headers every answer to a request with `Origin` carries (202 and errors alike).

    An Origin with control characters is no browser's: echoing a line break into a
    header would make Chalice answer 500, so such a request gets no CORS headers.
    """
    if not origin or not origin.isprintable():
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
