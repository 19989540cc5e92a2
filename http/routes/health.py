"""Health: GET /health (liveness: this process answers), GET /health/ready (each dependency and
the actor tree, 503 naming what is down; and every host of the cluster), GET /v1/system/actors
(this host's tree, detailed) and GET /v1/system/cluster (every host, from their heartbeats)."""

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


async def ready(request: Request) -> EnvelopeResponse:
    state = request.app.state

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
    # Other hosts being down does not make this one unready (it still serves); they are
    # listed so that one look shows the whole cluster.
    data = {"status": "ok" if healthy else "degraded", "checks": checks, "hosts": hosts}
    if healthy:
        return success(data)
    down = ", ".join(name for name, c in checks.items() if c["status"] != "up")
    return failure(503, "unhealthy", f"down: {down}", data)


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
