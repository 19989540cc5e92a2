"""The Starlette application: built by `create_app(settings)`, started by its lifespan.

The lifespan opens what every request may use (the actor bridge, an async PostgreSQL pool for
reads, a Redis client for health) and closes it on shutdown. `app_factory` is what uvicorn loads
in each worker process (`--factory`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from clarion.config.logging import configure_logging
from clarion.config.settings import Settings, load_settings
from clarion.http.auth import ApiKeyMiddleware, KeyChecker, KeyRecord
from clarion.http.bridge import ActorBridge
from clarion.http.middleware import (
    BodySizeLimitMiddleware,
    MetricsMiddleware,
    RequestIdLogFilter,
    RequestIdMiddleware,
    UrlSanityMiddleware,
)
from clarion.http.ratelimit import RateLimiter, RateLimitMiddleware
from clarion.http.responses import failure
from clarion.http.routes import (
    admin,
    callbacks,
    dlq,
    docs,
    health,
    metrics,
    notifications,
    outbox,
    provider_events,
    providers,
    suppressions,
    templates,
    twilio_status,
    users,
)
from clarion.http.routes.common import BadRequest
from clarion.persistence import database, queries

log = logging.getLogger(__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return failure(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _bad_request(request: Request, exc: Exception) -> Response:
    # `parse` refused the body: its envelope (400, 415 or 422) is the answer.
    assert isinstance(exc, BadRequest)
    return exc.response


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    # A read the HTTP layer runs itself met PostgreSQL away (or every pooled connection busy
    # past the pool's timeout): the caller may retry, it is not a bug.
    log.warning("storage unavailable", extra={"path": request.url.path, "error": repr(exc)})
    return failure(503, "storage_unavailable", "storage is unavailable, retry", retry_after=1)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Log the whole story; tell the client only that it failed (no stack trace, no internals).
    log.exception("unhandled error", extra={"path": request.url.path})
    return failure(500, "internal_error", "an unexpected error occurred")


def create_app(settings: Settings) -> Starlette:
    async def custom_plans(conn: Any) -> None:
        await conn.execute(database.CUSTOM_PLANS)  # why: persistence/database.py

    # timeout: a read waits this long for a connection (PostgreSQL away), then answers 503.
    pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=10, open=False,
                               timeout=settings.request_timeout,
                               kwargs={"autocommit": True}, configure=custom_plans)

    async def api_key(key_digest: str) -> KeyRecord | None:
        async with pool.connection() as conn:
            found = await queries.api_key(conn, key_digest)
        return KeyRecord(*found) if found else None

    keys = KeyChecker(api_key, settings.auth_lookups_per_second)
    limiter = RateLimiter(settings.redis_url, settings.rate_limit_per_second,
                          settings.rate_limit_burst)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=10)
        bridge = ActorBridge(settings.actor_port, settings.request_timeout,
                             settings.bridge_batches_in_flight, settings.node_address,
                             settings.cluster_peer_networks, settings.bridge_queue_limit)
        bridge.start()
        amqp = urlparse(settings.amqp_url)
        app.state.settings = settings
        app.state.keys = keys
        app.state.limiter = limiter
        app.state.db = pool
        app.state.redis = aioredis.from_url(settings.redis_url, socket_timeout=2)
        app.state.bridge = bridge
        app.state.amqp_address = (amqp.hostname or "127.0.0.1", amqp.port or 5672)
        # Everything made so far lives as long as the worker: take it out of the collector's
        # sight, so a full collection under load walks only what requests made (such pauses
        # held whole batches for tens of milliseconds).
        gc.freeze()
        try:
            yield
        finally:
            bridge.stop()
            await app.state.redis.aclose()
            await pool.close()

    secret = settings.internal_secret.get_secret_value() if settings.internal_secret else None
    return Starlette(
        routes=[*health.routes, *notifications.routes, *users.routes, *templates.routes,
                *outbox.routes, *dlq.routes, *metrics.routes, *docs.routes, *admin.routes,
                *providers.routes, *provider_events.routes, *twilio_status.routes,
                *suppressions.routes, *callbacks.routes],
        middleware=[
            Middleware(MetricsMiddleware),
            Middleware(RequestIdMiddleware),
            Middleware(UrlSanityMiddleware),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
            Middleware(ApiKeyMiddleware, keys=keys, internal_secret=secret),
            Middleware(RateLimitMiddleware, limiter=limiter),
        ],
        exception_handlers={HTTPException: _http_error, BadRequest: _bad_request,
                            psycopg.OperationalError: _storage_unavailable,
                            PoolTimeout: _storage_unavailable, Exception: _unexpected},
        lifespan=lifespan,
    )


def app_factory() -> Starlette:
    """Entry point for uvicorn workers: settings from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdLogFilter())
    return create_app(settings)
