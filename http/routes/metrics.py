"""GET /metrics: Prometheus text format, across every worker and actor process.

Counters and histograms come from the multiprocess files every process writes. Three families
are read at scrape time instead, from where the truth lives: queue depths (RabbitMQ, passive
declares), the dead-letter count and the outbox backlog (PostgreSQL) and cache hits and misses (a Redis hash the Users
and Templates actors increment). Those reads are cached for a few seconds so a fast scraper
cannot load the services.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clarion.persistence import broker

_CACHE_SECONDS = 5.0
_cached: dict[str, Any] = {"at": 0.0, "families": []}


class _Snapshot:
    """A collector that yields metric families computed just before the scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _queue_depths(amqp_url: str) -> dict[str, int]:
    conn = broker.connect(amqp_url, "clarion-metrics")
    try:
        channel = conn.channel()
        names = broker.all_queues()
        return {name: channel.queue_declare(name, passive=True).method.message_count
                for name in names}
    finally:
        conn.close()


async def _live_families(request: Request) -> list[Metric]:
    state = request.app.state
    families: list[Metric] = []
    depth = GaugeMetricFamily("clarion_queue_depth", "Messages waiting in a RabbitMQ queue",
                              labels=["queue"])
    try:
        depths = await asyncio.wait_for(
            asyncio.to_thread(_queue_depths, state.settings.amqp_url), 3)
        for name, count in depths.items():
            depth.add_metric([name], count)
        families.append(depth)
    except Exception:  # noqa: BLE001 - the broker being down must not break the scrape
        pass
    try:
        async with state.db.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM dead_letters WHERE state = 'dead'")
            row = await cur.fetchone()
            cur = await conn.execute(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)"
                " FROM broker_outbox")
            outbox = await cur.fetchone()
        dlq = GaugeMetricFamily("clarion_dlq_size", "Dead letters waiting for an operator")
        dlq.add_metric([], row[0] if row else 0)
        families.append(dlq)
        waiting = GaugeMetricFamily("clarion_outbox_backlog",
                                    "Broker messages committed and not yet confirmed by RabbitMQ")
        waiting.add_metric([], outbox[0] if outbox else 0)
        families.append(waiting)
        age = GaugeMetricFamily("clarion_outbox_oldest_seconds",
                                "Age of the oldest message waiting in the outbox")
        age.add_metric([], float(outbox[1]) if outbox else 0.0)
        families.append(age)
    except Exception:  # noqa: BLE001
        pass
    try:
        stats = await state.redis.hgetall("clarion:stats")
        cache = GaugeMetricFamily("clarion_cache_requests", "Cache lookups since the cache's"
                                  " statistics began, by cache and result", labels=["cache",
                                                                                   "result"])
        for field, value in stats.items():
            parts = field.decode().split(":")  # cache:user:hit
            if len(parts) == 3 and parts[0] == "cache":
                cache.add_metric([parts[1], parts[2]], int(value))
        families.append(cache)
    except Exception:  # noqa: BLE001
        pass
    return families


async def metrics(request: Request) -> Response:
    if time.monotonic() - _cached["at"] > _CACHE_SECONDS:
        _cached["families"] = await _live_families(request)
        _cached["at"] = time.monotonic()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_Snapshot(_cached["families"]))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
