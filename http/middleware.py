"""Pure ASGI middleware: request ids, body size limits, API-key authentication.

Pure ASGI (not BaseHTTPMiddleware) because these run on every request of the hot path.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                             default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def send_error(send: Send, status: int, code: str, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"success": False, "data": None, "error": code, "message": message,
                       "meta": None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestIdLogFilter(logging.Filter):
    """Puts the current request's id on every log record made while handling it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class RequestIdMiddleware:
    """Accepts a well-formed `X-Request-ID` or makes one; returns it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class UrlSanityMiddleware:
    """422 for a URL carrying the NUL character: no stored id or key can contain one, and
    PostgreSQL refuses it in text, so it would only turn a lookup into an error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"")  # "%00" has no letters: no case to fold
            if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
                await send_error(send, 422, "validation_error",
                                 "the URL must not contain the NUL character (%00)")
                return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """413 for a body over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, "payload_too_large",
                              f"the request body exceeds {self.max_bytes} bytes")
            return
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_error(send, 413, "payload_too_large",
                                  f"the request body exceeds {self.max_bytes} bytes")


class _TooLarge(Exception):
    pass


# What needs credentials (the OpenAPI document reads these too).
SECURED_PREFIXES = ("/v1/", "/admin", "/metrics")
# Management routes that other services may call with the shared service secret instead.
_INTERNAL_ROUTES = ("/v1/users", "/v1/templates", "/v1/system", "/v1/dlq", "/admin",
                    "/metrics")


class ApiKeyMiddleware:
    """Every route under /v1 and /admin needs `Authorization: Bearer <api key>`; management
    routes also take `X-Internal-Secret` (compared in constant time).

    Verified keys are remembered for `cache_seconds` so the hot path does not query PostgreSQL
    per request; a revoked key therefore stops working within that time.
    """

    def __init__(self, app: ASGIApp, lookup: Callable[[str], Awaitable[str | None]],
                 internal_secret: str | None = None, cache_seconds: float = 30.0) -> None:
        self.app = app
        self.lookup = lookup
        self.internal_secret = internal_secret
        self.cache_seconds = cache_seconds
        self._known: dict[str, tuple[str, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(SECURED_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._authenticate(scope)
        except Exception:  # noqa: BLE001 - the key store is unreachable: say so, briefly
            log.warning("api key lookup failed", exc_info=True)
            await send_error(send, 503, "auth_unavailable",
                             "credentials cannot be checked right now, retry",
                             [(b"retry-after", b"1")])
            return
        if principal is None:
            # One answer for every failure: no hint of which part was wrong.
            await send_error(send, 401, "unauthorized", "missing or invalid credentials",
                              [(b"www-authenticate", b'Bearer realm="clarion"')])
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> str | None:
        from clarion.http.routes.admin import console_principal

        secret = _header(scope, b"x-internal-secret")
        internal_route = scope.get("path", "").startswith(_INTERNAL_ROUTES)
        if secret is not None and self.internal_secret and internal_route:
            if hmac.compare_digest(secret.encode(), self.internal_secret.encode()):
                return "internal"
            return None
        auth = _header(scope, b"authorization")
        if secret is None and auth is None:
            # No API credentials: the admin console's session cookie, or its public pages.
            return await console_principal(scope, self.internal_secret)
        auth = auth or ""
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key or len(key) > 256:
            return None
        now = time.monotonic()
        known = self._known.get(key)
        if known and now - known[1] < self.cache_seconds:
            return known[0]
        name = await self.lookup(key.strip())
        if name is None:
            self._known.pop(key, None)
            return None
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key] = (f"key:{name}", now)
        return f"key:{name}"


class MetricsMiddleware:
    """Counts every HTTP request and its duration by route template (never by raw path, which
    would make one time series per notification id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from clarion.supervision import metrics

        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(template, method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(template, method).observe(time.perf_counter() - started)
