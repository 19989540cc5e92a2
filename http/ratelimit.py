"""Rate limits per API key: a token bucket in Redis, shared by every worker and host.

The bucket lives in Redis, refilled by the time elapsed on Redis's own clock (hosts with skewed
clocks agree). A worker takes tokens from it in leases: with a high limit, a chunk at once (a
fiftieth of the burst, at most 20 ms of the rate), spent locally for up to a second, so that
thousands of requests a second cost a Redis call per hundred, not one each (it was a third of the
HTTP worker's CPU, py-spy); with a low limit, one token at a time, exactly. Tokens a worker
leased and did not use are lost, never lent twice: the limit is never exceeded. A request costs one token; a batch of N notifications costs N (the batch
route takes the other N - 1 once it has read the body: `RateLimiter.take`). Over the limit: 429
with `Retry-After` and the `RateLimit-*` headers, which every answer carries. If Redis is down
the request is let through: the limit protects Clarion, it must not take it down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.http.auth import ANONYMOUS
from clarion.http.middleware import send_error

log = logging.getLogger(__name__)

_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
local taken = 0
if tokens >= cost then
  taken = math.max(cost, math.min(want, math.floor(tokens)))
  tokens = tokens - taken
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(wait), tostring(taken)}
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One answer of the bucket: whether the tokens were taken, what is left, how long to wait."""

    allowed: bool
    tokens: float
    wait: float
    rate: float
    burst: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        reset = math.ceil((self.burst - self.tokens) / self.rate)
        found = [(b"ratelimit-limit", str(self.burst).encode()),
                 (b"ratelimit-remaining", str(max(0, math.floor(self.tokens))).encode()),
                 (b"ratelimit-reset", str(reset).encode())]
        if not self.allowed:
            found.append((b"retry-after", str(max(1, math.ceil(self.wait))).encode()))
        return found


LEASE_SECONDS = 1.0


@dataclass
class _Lease:
    """Tokens this worker took from a principal's bucket and has not spent yet."""

    tokens: float
    bucket: float  # what the bucket held after the lease was taken
    expires: float


class RateLimiter:
    """The per-principal buckets (`rate` tokens a second, `burst` at most; rate 0: off)."""

    def __init__(self, redis_url: str, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._chunk = max(1, int(min(burst / 50, rate * 0.02)))
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._redis = aioredis.from_url(redis_url, socket_timeout=0.5)
        self._script = self._redis.register_script(_BUCKET)

    async def take(self, principal: str, cost: int = 1) -> Verdict | None:
        """Take `cost` tokens from `principal`'s bucket (from this worker's lease when it has
        enough); None when limits are off or Redis cannot say (then the request goes through)."""
        if self.rate <= 0:
            return None
        local = self._from_lease(principal, cost)
        if local is not None:
            return local
        # One lease at a time per principal: requests arriving while it is on its way wait for
        # it instead of each taking a chunk (64 at once drained the burst in one go).
        lock = self._locks.setdefault(principal, asyncio.Lock())
        async with lock:
            local = self._from_lease(principal, cost)
            if local is not None:
                return local
            return await self._lease(principal, cost)

    def _from_lease(self, principal: str, cost: int) -> Verdict | None:
        lease = self._leases.get(principal)
        if lease is not None and lease.expires > self._clock() and lease.tokens >= cost:
            lease.tokens -= cost
            return Verdict(True, lease.bucket + lease.tokens, 0.0, self.rate, self.burst)
        return None

    async def _lease(self, principal: str, cost: int) -> Verdict | None:
        now = self._clock()
        try:
            allowed, tokens, wait, taken = await self._script(
                keys=[f"clarion:ratelimit:{principal}"],
                args=[self.rate, self.burst, cost, max(cost, self._chunk)])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable; request let through",
                        extra={"error": type(exc).__name__})
            return None
        left = float(tokens)
        if int(allowed):
            spare = float(taken) - cost
            if spare > 0:
                self._leases[principal] = _Lease(spare, left, now + LEASE_SECONDS)
            else:
                self._leases.pop(principal, None)
            if len(self._leases) > 10_000:
                self._leases = {k: v for k, v in self._leases.items() if v.expires > now}
                self._locks = {k: v for k, v in self._locks.items() if k in self._leases}
            return Verdict(True, left + max(0.0, spare), 0.0, self.rate, self.burst)
        return Verdict(False, left, float(wait), self.rate, self.burst)


class RateLimitMiddleware:
    """One token per authenticated request; the answer carries the bucket's latest state
    (`scope["state"]["rate_limit"]`, which a route that takes more tokens updates)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state", {}) if scope["type"] == "http" else {}
        principal = state.get("principal")
        verdict = None
        if principal is not None and principal != ANONYMOUS:
            verdict = await self.limiter.take(principal)
        if verdict is None:
            await self.app(scope, receive, send)
            return
        if not verdict.allowed:
            await send_error(send, 429, "rate_limited",
                             "too many requests for this API key; slow down", verdict.headers())
            return
        state["rate_limit"] = verdict

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                latest: Verdict = state["rate_limit"]
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in latest.headers() if h[0] != b"retry-after")]
            await send(message)

        await self.app(scope, receive, send_with_headers)
