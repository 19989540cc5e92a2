"""Redis cache-aside for records: one round trip per batch, never one per item.

A cache may count its hits and misses in the hash `clarion:stats` (fields `cache:<name>:hit` and
`cache:<name>:miss`). Counting needs the lookup's result, so a counting cache reads with a small
Lua script that does the MGET and the HINCRBYs in Redis: still one round trip per batch.

Writes invalidate (DEL). An invalidation that fails (Redis unreachable) is remembered and done
by the next read, inside the same script and before its MGET, so a record written while Redis was
away is never served from the old cache entry when Redis comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import redis

T = TypeVar("T")

USER_TTL = 3600  # seconds (the seed's figure)
TEMPLATE_TTL = 3600
STATS_KEY = "clarion:stats"

# KEYS: the n records wanted, then the keys to delete first. ARGV: n, stats hash, hit field,
# miss field (empty fields: do not count).
_READ = """
local n = tonumber(ARGV[1])
if #KEYS > n then redis.call('DEL', unpack(KEYS, n + 1, #KEYS)) end
if n == 0 then return {} end
local values = redis.call('MGET', unpack(KEYS, 1, n))
if ARGV[3] ~= '' then
  local hits = 0
  for i = 1, n do if values[i] then hits = hits + 1 end end
  if hits > 0 then redis.call('HINCRBY', ARGV[2], ARGV[3], hits) end
  if n - hits > 0 then redis.call('HINCRBY', ARGV[2], ARGV[4], n - hits) end
end
return values
"""


USER_PREFIX = "clarion:user"  # the Users actor's cache; others only ever delete from it


def connect(url: str) -> redis.Redis:
    # Bounded timeouts: a Redis that hangs must not hang the actor that asked.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def stats_fields(name: str) -> tuple[str, str]:
    """The `clarion:stats` fields counting hits and misses of the cache named `name`."""
    return f"cache:{name}:hit", f"cache:{name}:miss"


class RecordCache(Generic[T]):
    """Records of one kind under `prefix:<id>`, stored as JSON with a TTL.

    `stats`: count hits and misses under this name in `clarion:stats` (None: do not count).
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        ttl: int,
        dump: Callable[[T], dict[str, Any]],
        load: Callable[[dict[str, Any]], T],
        stats: str | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl
        self._dump = dump
        self._load = load
        self._stats = stats_fields(stats) if stats else None
        self._unflushed: set[str] = set()  # ids whose invalidation has not reached Redis yet
        self._read = client.register_script(_READ)

    @property
    def client(self) -> redis.Redis:
        return self._client

    def _key(self, ident: str) -> str:
        return f"{self._prefix}:{ident}"

    def get_many(self, idents: Iterable[str]) -> dict[str, T]:
        wanted = list(dict.fromkeys(idents))
        if not wanted and not self._unflushed:
            return {}
        if self._stats is None and not self._unflushed:
            values = self._client.mget([self._key(i) for i in wanted])
        else:
            pending = sorted(self._unflushed)
            hit, miss = self._stats or ("", "")
            values = self._read(
                keys=[*(self._key(i) for i in wanted), *(self._key(i) for i in pending)],
                args=[len(wanted), STATS_KEY, hit, miss],
            )
            self._unflushed.difference_update(pending)
        return {i: self._load(json.loads(v)) for i, v in zip(wanted, values) if v is not None}

    def set_many(self, records: Mapping[str, T]) -> None:
        if not records:
            return
        pipe = self._client.pipeline(transaction=False)
        for ident, record in records.items():
            pipe.set(self._key(ident), json.dumps(self._dump(record)), ex=self._ttl)
        pipe.execute()
        # Overwritten with what storage holds now: nothing stale is left to delete.
        self._unflushed.difference_update(records)

    def invalidate(self, idents: Iterable[str]) -> None:
        """Delete these records; if Redis fails, remember them and delete them on the next read."""
        wanted = list(idents)
        keys = [self._key(i) for i in wanted]
        if not keys:
            return
        try:
            self._client.delete(*keys)
        except redis.RedisError:
            self._unflushed.update(wanted)
            raise
