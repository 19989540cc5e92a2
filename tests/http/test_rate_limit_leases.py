"""The rate limiter takes tokens from Redis in leases when the limit is high, exactly when low."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from clarion.config.settings import Settings
from clarion.http.ratelimit import RateLimiter

pytestmark = pytest.mark.integration


def _bucket(test_settings: Settings, principal: str) -> float:
    client = redis.Redis.from_url(test_settings.redis_url)
    try:
        return float(client.hget(f"clarion:ratelimit:{principal}", "tokens") or 0)
    finally:
        client.close()


def test_a_high_limit_is_leased_a_chunk_at_a_time_and_spent_locally(
        test_settings: Settings) -> None:
    principal = f"key:lease-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(test_settings.redis_url, rate=5000, burst=10_000)

    async def run() -> list[bool]:
        verdicts = [await limiter.take(principal) for _ in range(60)]
        return [v is not None and v.allowed for v in verdicts]

    assert all(asyncio.run(run()))
    # One lease of 100 tokens served all 60: Redis saw one call (plus what refilled since).
    assert 9_900 <= _bucket(test_settings, principal) < 9_901 + 5000 * 0.5


def test_a_low_limit_takes_exactly_one_token_per_request_and_refuses_past_it(
        test_settings: Settings) -> None:
    principal = f"key:exact-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(test_settings.redis_url, rate=1, burst=3)

    async def run() -> list[tuple[bool, float]]:
        out = []
        for _ in range(4):
            verdict = await limiter.take(principal)
            assert verdict is not None
            out.append((verdict.allowed, verdict.tokens))
        return out

    found = asyncio.run(run())
    assert [allowed for allowed, _ in found] == [True, True, True, False]
    assert [round(tokens) for _, tokens in found[:3]] == [2, 1, 0]
