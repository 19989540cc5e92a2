"""One call's way through its attempts: the request each attempt sends, whether an outcome is
worth another attempt and after how long, and what the final outcome gives the caller.

It does no I/O, so the sync and the async client share it and differ only in how they send and
sleep (a ten-line loop each). What is retried:

- a connection that never opened (nothing was sent): any call;
- `429` and the `503`s that Clarion documents as refused before any work: any call;
- other `503`s, `504`, and a connection lost after sending (the outcome is unknown): only a call
  that is safe to repeat: a GET, a route marked idempotent, or a send with its idempotency key,
  which every retry carries unchanged, so Clarion answers the repeat with the first answer;
- `409 idempotency_in_progress` for a keyed send: our own earlier attempt is still being
  processed, and the next repeat gets its answer.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Generic, TypeVar

import httpx

from clarion_client.errors import (
    ClarionError,
    ConnectionFailed,
    InvalidResponse,
    error_class,
    parse_retry_after,
)
from clarion_client.retry import RetryPolicy
from clarion_client.routes import Call

log = logging.getLogger("clarion_client")

T = TypeVar("T")
Outcome = httpx.Response | httpx.TransportError

# The request never reached Clarion: repeating it cannot do anything twice.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# 503 codes Clarion answers before doing anything (http/openapi.py ERRORS): "nothing was kept".
REFUSED_BEFORE_WORK = frozenset({"auth_unavailable", "storage_unavailable", "overloaded",
                                 "not_ready", "shutting_down"})


def envelope(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's envelope, or None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "success" in body else None


class Attempts(Generic[T]):
    """The attempts of one call. `request()` before each, `next_delay(outcome)` after it; when
    that is None, `result(outcome)` returns the parsed data or raises."""

    def __init__(self, call: Call[T], policy: RetryPolicy) -> None:
        self.call = call
        self.policy = policy
        # One id for every attempt: Clarion's logs show the retries of a call together.
        self.request_id = call.request_id or uuid.uuid4().hex
        self.number = 0

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        self.number += 1
        headers = {"X-Request-ID": self.request_id}
        if self.call.idempotency_key is not None:
            headers["Idempotency-Key"] = self.call.idempotency_key
        return http.build_request(self.call.route.method, self.call.path,
                                  params=self.call.params or None, json=self.call.body,
                                  headers=headers)

    def next_delay(self, outcome: Outcome) -> float | None:
        """Seconds to wait before the next attempt, or None: this outcome is the answer."""
        if self.number >= self.policy.max_attempts:
            return None
        if isinstance(outcome, httpx.TransportError):
            if not (isinstance(outcome, NEVER_SENT) or self.call.repeatable):
                return None
            return self._wait(None, type(outcome).__name__)
        status = outcome.status_code
        code = _code(outcome)
        retry_after = parse_retry_after(outcome.headers.get("retry-after"))
        if status == 429 or (status == 503 and code in REFUSED_BEFORE_WORK):
            return self._wait(retry_after, f"{status} {code}")
        if status in (503, 504) and self.call.repeatable:
            return self._wait(retry_after, f"{status} {code}")
        if (status == 409 and code == "idempotency_in_progress"
                and self.call.idempotency_key is not None):
            return self._wait(retry_after, f"{status} {code}")
        return None

    def _wait(self, retry_after: float | None, why: str) -> float | None:
        if retry_after is not None and retry_after > self.policy.max_retry_after:
            return None  # the caller decides whether to wait that long (error.retry_after)
        delay = max(self.policy.backoff(self.number), retry_after or 0.0)
        log.info("retrying %s %s after %s in %.2f s (attempt %d of %d, request %s)",
                 self.call.route.method, self.call.route.path, why, delay, self.number + 1,
                 self.policy.max_attempts, self.request_id)
        return delay

    def result(self, outcome: Outcome) -> T:
        """The call's result from its last outcome, or the error it amounts to."""
        if isinstance(outcome, httpx.TransportError):
            raise ConnectionFailed(
                f"no answer from Clarion after {self.number} attempt(s):"
                f" {type(outcome).__name__}: {outcome}", code="connection_failed",
                request_id=self.request_id, idempotency_key=self.call.idempotency_key,
            ) from outcome
        body = envelope(outcome)
        if outcome.is_success and body is not None and body.get("success") is True:
            try:
                return self.call.parse(body.get("data"), body.get("meta"))
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise self._error(outcome, None, InvalidResponse,
                                  f"unexpected answer shape: {exc}") from exc
        if outcome.is_success:
            raise self._error(outcome, None, InvalidResponse, "the answer is not an envelope")
        raise self._error(outcome, body, error_class(outcome.status_code))

    def _error(self, response: httpx.Response, body: dict[str, Any] | None,
               cls: type[ClarionError], message: str | None = None) -> ClarionError:
        if body is not None and isinstance(body.get("error"), str):
            code, text, details = body["error"], str(body.get("message") or ""), body.get("data")
        else:
            code = "invalid_response" if cls is InvalidResponse else f"http_{response.status_code}"
            text, details = message or response.reason_phrase or "unexpected answer", None
        return cls(text, status=response.status_code, code=code,
                   request_id=response.headers.get("x-request-id") or self.request_id,
                   retry_after=parse_retry_after(response.headers.get("retry-after")),
                   details=details, idempotency_key=self.call.idempotency_key)


def _code(response: httpx.Response) -> str:
    body = envelope(response)
    code = body.get("error") if body is not None else None
    return code if isinstance(code, str) else f"http_{response.status_code}"
