"""Rate limits per API key: a token bucket in Redis, shared by every worker and host.

One Lua script call per request: it refills the bucket by the time elapsed (Redis's own clock,
so hosts with skewed clocks agree), takes a token if there is one, and says how long to wait if
not. Over the limit: 429 with `Retry-After` and the `RateLimit-*` headers. If Redis is down the
request is let through: the limit protects Clarion, it must not take it down.
"""

from __future__ import annotations

import logging
import math

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.http.middleware import send_error

log = logging.getLogger(__name__)

_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(wait)}
"""


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, redis_url: str, rate: float, burst: int) -> None:
        self.app = app
        self.rate = rate
        self.burst = burst
        self._redis = aioredis.from_url(redis_url, socket_timeout=0.5)
        self._script = self._redis.register_script(_BUCKET)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal") if scope["type"] == "http" else None
        if principal is None or self.rate <= 0:
            await self.app(scope, receive, send)
            return
        try:
            allowed, tokens, wait = await self._script(keys=[f"clarion:ratelimit:{principal}"],
                                                       args=[self.rate, self.burst])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable; request let through",
                        extra={"error": type(exc).__name__})
            await self.app(scope, receive, send)
            return
        remaining = max(0, math.floor(float(tokens)))
        headers = [
            (b"ratelimit-limit", str(self.burst).encode()),
            (b"ratelimit-remaining", str(remaining).encode()),
            (b"ratelimit-reset", str(math.ceil((self.burst - float(tokens)) / self.rate)).encode()),
        ]
        if not int(allowed):
            retry_after = str(max(1, math.ceil(float(wait)))).encode()
            await send_error(send, 429, "rate_limited",
                             "too many requests for this API key; slow down",
                             [*headers, (b"retry-after", retry_after)])
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
