"""One small exception hierarchy: every refusal from Clarion, and every failure to reach it.

Clarion answers an error as the envelope `{success: false, data, error, message, meta}` with a
stable `error` code. The code is what a caller branches on; the class only groups codes by HTTP
status so that `except NotFound` reads well. Each error also carries what is needed to act on it:
the request id (to find the request in Clarion's logs), `Retry-After`, and the idempotency key a
send used (after a 504 the outcome is unknown: retry with that key).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any


class ClarionError(Exception):
    """Clarion refused the request, or could not be reached (`status` is None then)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error",
                 request_id: str | None = None, retry_after: float | None = None,
                 details: Any = None, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.details = details
        self.idempotency_key = idempotency_key

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(status={self.status!r}, code={self.code!r},"
                f" message={self.message!r}, request_id={self.request_id!r})")


class BadRequest(ClarionError):
    """400, 405, 413, 415: the request itself is malformed (JSON, size, media type)."""


class Unauthorized(ClarionError):
    """401: the API key is missing or wrong (Clarion does not say which)."""


class Forbidden(ClarionError):
    """403: the key's scope (`send`) does not reach this route."""


class NotFound(ClarionError):
    """404: no such user, template, notification, suppression, dead letter or callback."""


class Conflict(ClarionError):
    """409: already exists, no longer cancellable, or the same idempotency key in flight."""


class ValidationError(ClarionError):
    """422: a field, a template or an idempotency key was refused; `fields` names bad fields."""

    @property
    def fields(self) -> list[dict[str, str]]:
        """`[{field, message}]` of a `validation_error`; empty for the other 422 codes."""
        if isinstance(self.details, Mapping) and isinstance(self.details.get("fields"), list):
            return list(self.details["fields"])
        return []


class RateLimited(ClarionError):
    """429: over the key's rate limit; `retry_after` says for how long."""


class ServerError(ClarionError):
    """500 and other 5xx: Clarion failed; the details are in its log under the request id."""


class Unavailable(ServerError):
    """503 or 504: Clarion (or what it depends on) is away or too slow; retry later. After a
    504 `timeout` the outcome is unknown: a send retried with the same key is safe."""


class ConnectionFailed(ClarionError):
    """No answer at all: the connection failed, was cut, or timed out (`__cause__` says how)."""


class InvalidResponse(ClarionError):
    """An answer that is not Clarion's envelope (a proxy's page, a truncated body)."""


_BY_STATUS: dict[int, type[ClarionError]] = {
    400: BadRequest, 405: BadRequest, 413: BadRequest, 415: BadRequest,
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: ValidationError,
    429: RateLimited, 503: Unavailable, 504: Unavailable,
}


def error_class(status: int) -> type[ClarionError]:
    """The class for an error status: the exact one, else by family."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else BadRequest if status >= 400 else ClarionError


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds: Clarion sends whole seconds; an HTTP date (a proxy's) is read
    too. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
