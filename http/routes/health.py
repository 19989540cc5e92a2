"""Health: GET /health (liveness: this process answers), GET /health/ready (each dependency and
the actor tree, 503 naming what is down; and how many hosts of the cluster are up), GET
/v1/system/actors (this host's tree, detailed) and GET /v1/system/cluster (every host, from
their heartbeats).

The two health routes answer anyone, so they name no host, address, port or pid: that detail is
behind auth, in /v1/system/*. And `/health/ready` probes the services at most once a second per
worker: every request in between gets the last result (requests that arrive while a probe runs
wait for it), so a flood of it cannot reach PostgreSQL, Redis, RabbitMQ or the actors."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import StatusRequest
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.supervision import cluster


async def _timed(name: str, check: Any) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), 2.0)
        result: dict[str, Any] = {"status": "up"}
    except Exception as exc:  # noqa: BLE001 - any failure means down; say which kind
        result = {"status": "down", "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return name, result


async def live(request: Request) -> EnvelopeResponse:
    return success({"status": "ok"})


READY_CACHE_SECONDS = 1.0


async def ready(request: Request) -> EnvelopeResponse:
    state = request.app.state
    cached: tuple[float, asyncio.Future[tuple[int, dict[str, Any]]]] | None = getattr(
        state, "ready_probe", None)
    # A new probe once the last one has finished and is a second old, never two at once.
    if cached is None or (cached[1].done()
                          and time.monotonic() - cached[0] >= READY_CACHE_SECONDS):
        cached = (time.monotonic(), asyncio.ensure_future(_probe(request)))
        state.ready_probe = cached
    status, data = await asyncio.shield(cached[1])
    if status == 200:
        return success(data)
    down = ", ".join(name for name, c in data["checks"].items() if c["status"] != "up")
    return failure(503, "unhealthy", f"down: {down}", data)


async def _probe(request: Request) -> tuple[int, dict[str, Any]]:
    """Probe every dependency once: (200 or 503, the answer's data)."""
    state = request.app.state
    started = time.time()  # `checked_at`: probes start at least a second apart

    async def postgres() -> None:
        async with state.db.connection() as conn:
            await conn.execute("SELECT 1")

    async def redis() -> None:
        await state.redis.ping()

    async def rabbitmq() -> None:
        host, port = state.amqp_address
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()

    async def actors() -> None:
        reply = await state.bridge.request(StatusRequest(uuid.uuid4().hex))
        if reply.status != 200:
            raise RuntimeError(reply.error_code)
        down = [c["name"] for c in reply.data["children"] if c["state"] != "running"]
        if down:
            raise RuntimeError(",".join(down))

    checks, hosts = await asyncio.gather(
        asyncio.gather(_timed("postgres", postgres), _timed("redis", redis),
                       _timed("rabbitmq", rabbitmq), _timed("actors", actors)),
        _hosts(request),
    )
    checks = dict(checks)
    healthy = all(c["status"] == "up" for c in checks.values())
    # Other hosts being down does not make this one unready (it still serves); how many are
    # up shows the cluster's state at a glance. Which ones, and where, is for /v1/system/cluster.
    cluster_counts = None if hosts is None else {
        status: sum(1 for h in hosts if h["status"] == status)
        for status in ("up", "down", "stopped")}
    data = {"status": "ok" if healthy else "degraded", "checks": checks,
            "hosts": cluster_counts, "checked_at": started}
    return (200 if healthy else 503), data


async def _hosts(request: Request) -> list[dict[str, Any]] | None:
    """Every host from the heartbeats in Redis; None when Redis cannot say."""
    state = request.app.state
    try:
        raw = await asyncio.wait_for(state.redis.hgetall(cluster.NODES_KEY), 2.0)
    except Exception:  # noqa: BLE001 - Redis down is reported by its own check
        return None
    return cluster.view(raw, state.settings.host_down_after)


async def cluster_view(request: Request) -> EnvelopeResponse:
    hosts = await _hosts(request)
    if hosts is None:
        return failure(503, "cluster_view_unavailable",
                       "the hosts' heartbeats are in Redis, which did not answer", retry_after=1)
    up = sum(1 for h in hosts if h["status"] == "up")
    return success({"hosts": hosts, "up": up, "down": len(hosts) - up})


async def actor_tree(request: Request) -> EnvelopeResponse:
    return from_reply(await request.app.state.bridge.request(StatusRequest(uuid.uuid4().hex)))


async def alerts(request: Request) -> EnvelopeResponse:
    reply = await request.app.state.bridge.request(StatusRequest(uuid.uuid4().hex))
    if reply.status != 200 or reply.data is None:
        return from_reply(reply)
    return success(reply.data["alerts"])


routes = [
    Route("/v1/alerts", alerts, methods=["GET"]),
    Route("/health", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/v1/system/actors", actor_tree, methods=["GET"]),
    Route("/v1/system/cluster", cluster_view, methods=["GET"]),
]
