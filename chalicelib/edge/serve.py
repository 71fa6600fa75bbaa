"""`serve(door)`: how every ingest protocol is answered, written once.

Preflight for OPTIONS; then, within the request's time budget (runtime/deadline.py: every
AWS call below is bounded by `deadline.current()`) and in the door's trace segment, `door.decode()` →
`pipeline.accept` → `door.answer(...)`. A refusal (`EdgeError`) is counted and logged
here and answered by `door.refuse`; anything else is logged with its traceback and
answered as the contract's 500 in the door's terms, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalice import Response

from chalicelib.contract.errors import EdgeError, bad_request
from chalicelib.edge import cors, pipeline
from chalicelib.runtime import deadline
from chalicelib.runtime.config import settings
from chalicelib.runtime.observability import count, logger, traced

if TYPE_CHECKING:
    from chalicelib.edge.doors import Door


def serve(door: Door) -> Response:
    """The door's answer to its request: success, refusal or 500."""
    request = door.request
    if request.method == "OPTIONS":
        return preflight(request.headers)
    try:
        with deadline.request_budget(settings().request_budget_seconds), traced(door.segment):
            try:
                if request.unreadable:
                    raise bad_request(request.unreadable)
                return door.answer(pipeline.accept(request, door.decode()))
            except EdgeError as error:
                count(f"rejected_{error.status}")
                extra = {"signal": door.signal_name, "status": error.status, "error": error.code}
                logger().info("ingest refused", extra=extra)
                return door.refuse(error)
    except Exception:
        logger().exception(f"{door.segment} failed unexpectedly")
        return door.refuse(internal_error())


def internal_error() -> EdgeError:
    return EdgeError(500, "internal_error", "the edge failed; retry shortly")


def preflight(headers: Mapping[str, str]) -> Response:
    """The CORS preflight: no key, nothing remote."""
    allowed: dict[str, str | list[str]] = dict(
        cors.preflight_headers(headers.get("origin"), headers.get("access-control-request-headers"))
    )
    return Response(body="", status_code=204, headers=allowed)


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})
