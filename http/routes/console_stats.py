"""GET /admin/api/stats?window=15m|24h: the series the console's live charts draw.

One answer holds every chart of a window, bucketed on the server's clock (10 s buckets for the
last 15 minutes, 5 min for the last 24 hours; the current bucket is the time since it began):

    accepted, delivered   per channel, per second
    latency               p50 and p99, seconds from the 202 to the provider's acceptance
                          (null where nothing was delivered)
    failures              failed delivery attempts per bucket, by error code
    queues                the deepest reading of each queue in the bucket (null: no reading),
                          for the work queues, the DLQ and any queue of the delay ladder that
                          held messages in the window

The counts are persistence/console_stats.py's; they are cached per worker a few seconds (the
15-minute window) or half a minute (the day), so several consoles cost one count. Each call
may also take the cluster's next queue-depth reading (at most one every 5 s, whoever asks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.routing import Route

from clarion.http.responses import EnvelopeResponse, failure, success
from clarion.persistence import broker, console_stats

log = logging.getLogger(__name__)

# window → (seconds it spans, bucket seconds, seconds its counts are reused)
WINDOWS = {"15m": (900, 10, 4.0), "24h": (86_400, 300, 30.0)}
_QUEUE_READ_TIMEOUT = 3.0
# Always drawn, empty or not: the lanes' work queues and the DLQ. The delay ladder's 30 queues
# are drawn only when they held something, or the chart would be a legend.
_ALWAYS_DRAWN = (*broker.WORK_QUEUES.values(), *broker.BULK_QUEUES.values(),
                 broker.FAILED_QUEUE)

_counted: dict[str, tuple[float, dict[str, Any]]] = {}  # window → (when, counts)


async def stats(request: Request) -> EnvelopeResponse:
    window = request.query_params.get("window", "15m")
    if window not in WINDOWS:
        return failure(422, "validation_error", "window is 15m or 24h",
                       {"fields": [{"field": "window", "message": "15m or 24h"}]})
    span, step, reuse = WINDOWS[window]
    until = time.time()
    since = (until - span) // step * step + step
    times = list(range(int(since), int(until) + 1, step))
    await _take_queue_reading(request)
    try:
        counts = await _traffic(request, window, since, step, reuse)
    except psycopg.errors.QueryCanceled:
        return failure(503, "stats_timeout",
                       f"counting the last {window} took longer than"
                       f" {console_stats.STATEMENT_TIMEOUT_MS // 1000} s; try the shorter"
                       " window", retry_after=30)
    queues, readings = await _queue_series(request, times, step)

    def rates(by_bucket: dict[int, int]) -> list[float]:
        # The current bucket has lasted only since it began.
        return [round(by_bucket.get(t, 0) / max(1.0, min(step, until - t)), 3) for t in times]

    channels = list(broker.CHANNELS)
    latency = counts["latency"]
    return success({
        "window": window, "step": step, "since": since, "until": until, "times": times,
        "channels": channels,
        "accepted": {c: rates(counts["accepted"].get(c, {})) for c in channels},
        "delivered": {c: rates(counts["delivered"].get(c, {})) for c in channels},
        "latency": {"p50": [latency[t][0] if t in latency else None for t in times],
                    "p99": [latency[t][1] if t in latency else None for t in times]},
        "failures": {code: [by_bucket.get(t, 0) for t in times]
                     for code, by_bucket in sorted(counts["failures"].items())},
        "queues": queues,
        "queue_readings": readings,
        "totals": {name: sum(sum(b.values()) for b in counts[name].values())
                   for name in ("accepted", "delivered", "failures")},
    })


async def _traffic(request: Request, window: str, since: float, step: int,
                   reuse: float) -> dict[str, Any]:
    cached = _counted.get(window)
    if cached is not None and time.monotonic() - cached[0] < reuse:
        return cached[1]
    async with request.app.state.db.connection() as conn:
        counts = await console_stats.traffic(conn, since, step)
    _counted[window] = (time.monotonic(), counts)
    return counts


async def _take_queue_reading(request: Request) -> None:
    """Add a reading of every queue to the history, if nobody did in the last few seconds.
    RabbitMQ or Redis away: no reading (the chart shows a gap), never a failed answer."""
    state = request.app.state
    try:
        if not await console_stats.may_sample(state.redis):
            return
        depths = await asyncio.wait_for(
            asyncio.to_thread(console_stats.read_queue_depths, state.settings.amqp_url),
            _QUEUE_READ_TIMEOUT)
        await console_stats.record_depths(state.redis, time.time(), depths)
    except Exception as exc:  # noqa: BLE001 - a reading is best effort
        log.info("no queue depth reading for the console", extra={"error": repr(exc)})


async def _queue_series(request: Request, times: list[int], step: int
                        ) -> tuple[dict[str, list[int | None]], int]:
    """Each drawn queue's deepest reading per bucket (None: no reading in it), and how many
    readings the window holds."""
    try:
        readings = await console_stats.depth_history(request.app.state.redis, times[0])
    except Exception as exc:  # noqa: BLE001 - Redis away: no history, the rest still draws
        log.info("no queue depth history for the console", extra={"error": repr(exc)})
        readings = []
    first = times[0]
    deepest: dict[int, dict[str, int]] = {}  # bucket index → queue → deepest reading
    for at, depths in readings:
        index = int((at - first) // step)
        if 0 <= index < len(times):
            bucket = deepest.setdefault(index, {})
            for queue, depth in depths.items():
                bucket[queue] = max(depth, bucket.get(queue, 0))
    held = {queue for bucket in deepest.values() for queue in bucket}
    drawn = [*_ALWAYS_DRAWN, *sorted(held - set(_ALWAYS_DRAWN))]
    return ({queue: [deepest[i].get(queue, 0) if i in deepest else None
                     for i in range(len(times))] for queue in drawn}, len(readings))


routes = [Route("/admin/api/stats", stats, methods=["GET"])]
