"""What the admin console's live charts draw, read from what Clarion already keeps.

Traffic comes from PostgreSQL, counted into time buckets of `step` seconds since `since`:

    accepted     deliveries.queued_at (a channel's row is written with the 202), per channel;
                 channels skipped at acceptance or held on standby for a fallback not counted
    delivered    delivery_attempts with outcome `sent` (the provider accepted it), per channel
    latency      p50 and p99 of finished_at − queued_at over those attempts: acceptance to the
                 provider's acceptance, as `clarion_delivery_latency_seconds` measures it
                 (scheduled sends included: their wait counts)
    failures     delivery_attempts with outcome `failed` (retried or final), per error code

The attempt queries use the `delivery_attempts_finished` index, `accepted` the BRIN index on
deliveries' `queued_at` (migration 0017); every statement here still runs under a statement
timeout and the HTTP layer caches the answers.

Queue depths have no history in PostgreSQL or RabbitMQ, so the console keeps one: each call for
charts reads every queue's depth (work queues, the delay ladder, the DLQ) at most once per
`SAMPLE_SECONDS` across all workers and hosts (a Redis lock), and adds it to a sorted set in
Redis trimmed to a day. The history covers the times some console was open.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from psycopg import AsyncConnection
from redis.asyncio import Redis

from clarion.persistence import broker

STATEMENT_TIMEOUT_MS = 5000
DEPTHS_KEY = "clarion:console:queue_depths"
_SAMPLE_LOCK = DEPTHS_KEY + ":sampling"
SAMPLE_SECONDS = 5
KEEP_SECONDS = 86_400

# (bucket start, label, value) rows; the bucket start is in epoch seconds, a multiple of step.
_BUCKET = "(floor(extract(epoch FROM {column}) / %(step)s) * %(step)s)::bigint"

_ACCEPTED = (
    f"SELECT {_BUCKET.format(column='queued_at')}, channel, count(*) FROM deliveries"
    " WHERE queued_at >= to_timestamp(%(since)s) AND status NOT IN ('skipped', 'standby')"
    " GROUP BY 1, 2")
_DELIVERED = (
    f"SELECT {_BUCKET.format(column='finished_at')}, channel, count(*) FROM delivery_attempts"
    " WHERE finished_at >= to_timestamp(%(since)s) AND outcome = 'sent' GROUP BY 1, 2")
_LATENCY = (
    f"SELECT {_BUCKET.format(column='a.finished_at')},"
    " percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP"
    "   (ORDER BY extract(epoch FROM a.finished_at - d.queued_at))"
    " FROM delivery_attempts a JOIN deliveries d"
    "   ON d.notification_id = a.notification_id AND d.channel = a.channel"
    " WHERE a.finished_at >= to_timestamp(%(since)s) AND a.outcome = 'sent' GROUP BY 1")
_FAILURES = (
    f"SELECT {_BUCKET.format(column='finished_at')}, coalesce(error_code, 'unknown'), count(*)"
    " FROM delivery_attempts WHERE finished_at >= to_timestamp(%(since)s)"
    " AND outcome = 'failed' GROUP BY 1, 2")


Counts = dict[str, dict[int, int]]  # label → bucket start → count


async def traffic(conn: AsyncConnection, since: float, step: int) -> dict[str, Any]:
    """Counts per bucket since `since`: {accepted, delivered, failures: label → bucket →
    count, latency: bucket → (p50, p99) in seconds}. Raises psycopg's QueryCanceled when a
    statement outlives STATEMENT_TIMEOUT_MS."""
    params = {"since": since, "step": step}
    async with conn.transaction():
        await conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        accepted = await _counts(conn, _ACCEPTED, params)
        delivered = await _counts(conn, _DELIVERED, params)
        failures = await _counts(conn, _FAILURES, params)
        cur = await conn.execute(_LATENCY, params)
        latency = {int(at): (float(p[0]), float(p[1])) for at, p in await cur.fetchall()}
    return {"accepted": accepted, "delivered": delivered, "failures": failures,
            "latency": latency}


async def _counts(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> Counts:
    cur = await conn.execute(sql, params)
    found: Counts = defaultdict(dict)
    for at, label, count in await cur.fetchall():
        found[str(label)][int(at)] = int(count)
    return dict(found)


# -- queue depths ---------------------------------------------------------------------------


def read_queue_depths(amqp_url: str) -> dict[str, int]:
    """Every queue's depth now (passive declares on a connection of its own; blocking)."""
    conn = broker.connect(amqp_url, "clarion-console")
    try:
        channel = conn.channel()
        return {name: channel.queue_declare(name, passive=True).method.message_count
                for name in broker.all_queues()}
    finally:
        conn.close()


async def may_sample(redis: Redis) -> bool:
    """True for one caller per SAMPLE_SECONDS, across every worker and host."""
    return bool(await redis.set(_SAMPLE_LOCK, b"1", nx=True, ex=SAMPLE_SECONDS))


async def record_depths(redis: Redis, at: float, depths: dict[str, int]) -> None:
    """Keep one sample (only the queues that held messages: most are empty most of the time)
    and forget those older than KEEP_SECONDS."""
    sample = json.dumps({"t": round(at, 3), "d": {q: n for q, n in depths.items() if n}},
                        separators=(",", ":"))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(DEPTHS_KEY, {sample: at})
        pipe.zremrangebyscore(DEPTHS_KEY, "-inf", at - KEEP_SECONDS)
        await pipe.execute()


async def depth_history(redis: Redis, since: float) -> list[tuple[float, dict[str, int]]]:
    """The samples taken since `since`, oldest first: (when, queue → depth; absent: empty)."""
    samples = []
    for raw in await redis.zrangebyscore(DEPTHS_KEY, since, "+inf"):
        if not isinstance(raw, (bytes, str)):
            continue  # a score came along: not asked for
        try:
            sample = json.loads(raw)
            samples.append((float(sample["t"]), {str(q): int(n)
                                                  for q, n in sample["d"].items()}))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not ours: skip it rather than fail the charts
    return samples
