"""NearCache: a process-local copy of records another actor owns, evicted by the owner's writes.

The Gateway reads users and templates on every request; asking their owners (the Users and
Templates actors) costs a Thespian round trip each, most of an idle request's time. So it keeps
what it was told in memory, and the owners stay the only writers:

    owner writes PostgreSQL → deletes the shared Redis entry → PUBLISH clarion:invalidate:<kind> id
    every NearCache of that kind (any process, any host) → evicts id

Pub/sub is fire-and-forget, so the cache trusts nothing it could have missed: entries are
accepted only while the subscription is up, everything is evicted when it drops (Redis away or
restarted), and every entry also expires after `ttl` seconds. The owner of the process watches
`fileno()` and calls `drain()` when it is readable (and on its tick, to notice a dead link).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import redis

T = TypeVar("T")
CHANNEL_PREFIX = "clarion:invalidate:"


def publish_invalidations(client: redis.Redis, kind: str, idents: Iterable[str]) -> None:
    """Tell every NearCache of `kind` to forget these records (one message, ids joined)."""
    ids = sorted(set(idents))
    if ids:
        client.publish(CHANNEL_PREFIX + kind, "\n".join(ids))


class NearCache(Generic[T]):
    def __init__(self, client: redis.Redis, kind: str, ttl: float = 60.0,
                 max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._channel = CHANNEL_PREFIX + kind
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[T, float]] = {}
        # When each record was last invalidated: a record read before that (its answer was on
        # its way while the invalidation overtook it) is not kept.
        self._evicted: dict[str, float] = {}
        self._pubsub: Any = None
        self.subscribed = False

    # -- the subscription ---------------------------------------------------------------------

    def connect(self) -> bool:
        """Subscribe (again); True once invalidations are heard. Until then nothing is kept."""
        self._drop()
        try:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            pubsub.subscribe(self._channel)
            # The subscription is live once Redis confirmed it: wait for that, briefly.
            deadline = self._clock() + 2.0
            while self._clock() < deadline:
                message = pubsub.get_message(timeout=0.1)
                if message and message.get("type") == "subscribe":
                    self._pubsub, self.subscribed = pubsub, True
                    return True
            pubsub.close()
        except (redis.RedisError, OSError):
            pass
        return False

    def fileno(self) -> int | None:
        """The subscription's socket, to watch for readability (None while unsubscribed)."""
        if self._pubsub is None:
            return None
        try:
            return int(self._pubsub.connection._sock.fileno())  # a private redis-py name
        except (AttributeError, OSError, TypeError):
            return None

    def drain(self) -> None:
        """Apply every invalidation that arrived; on a broken link, forget everything."""
        if self._pubsub is None:
            return
        try:
            while True:
                message = self._pubsub.get_message(timeout=0)
                if message is None:
                    return
                if message.get("type") == "message":
                    data = message.get("data") or b""
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    self.forget(text.split("\n"))
        except (redis.RedisError, OSError, ValueError):
            self._drop()

    def _drop(self) -> None:
        self._entries.clear()
        self.subscribed = False
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except (redis.RedisError, OSError):
                pass
        self._pubsub = None

    def close(self) -> None:
        self._drop()

    # -- the records --------------------------------------------------------------------------

    def get_many(self, idents: Iterable[str]) -> dict[str, T]:
        now = self._clock()
        found: dict[str, T] = {}
        for ident in idents:
            entry = self._entries.get(ident)
            if entry is None:
                continue
            if entry[1] <= now:
                del self._entries[ident]
                continue
            found[ident] = entry[0]
        return found

    def put_many(self, records: dict[str, T], read_at: float) -> None:
        """Keep these records, read from their owner at `read_at` (this cache's clock): not
        one invalidated since, and nothing while unsubscribed (an eviction could be missed)."""
        if not self.subscribed or not records:
            return
        if len(self._entries) + len(records) > self._max:
            self._entries.clear()  # crude, and rare: the working set is far below the bound
        expires = self._clock() + self._ttl
        for ident, record in records.items():
            if self._evicted.get(ident, float("-inf")) < read_at:
                self._entries[ident] = (record, expires)

    def forget(self, idents: Iterable[str]) -> None:
        now = self._clock()
        for ident in idents:
            self._entries.pop(ident, None)
            self._evicted[ident] = now
        if len(self._evicted) > self._max:
            # An answer is never older than the request timeout: older marks can go.
            oldest = now - 2 * self._ttl
            self._evicted = {k: t for k, t in self._evicted.items() if t > oldest}

    def now(self) -> float:
        """This cache's clock: note it before asking the owner, pass it to `put_many`."""
        return self._clock()
