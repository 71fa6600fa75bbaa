"""The one error type the edge answers with: `{"error": code, "message": text}`."""

from __future__ import annotations


class EdgeError(Exception):
    """A request the edge refuses, with its HTTP status and a plain-words message."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}

    def headers(self) -> dict[str, str]:
        """`Retry-After` when the client should wait before retrying (409, 429, 503)."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}


def bad_request(message: str) -> EdgeError:
    return EdgeError(400, "invalid_body", message)


def too_large(message: str) -> EdgeError:
    return EdgeError(413, "payload_too_large", message)


def unsupported(message: str) -> EdgeError:
    return EdgeError(415, "unsupported_media_type", message)


def unavailable(message: str, retry_after: int = 5) -> EdgeError:
    return EdgeError(503, "service_unavailable", message, retry_after=retry_after)
