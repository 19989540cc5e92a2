"""Redis cache-aside for records: one pipeline per batch, never one round trip per item."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import redis

T = TypeVar("T")

USER_TTL = 3600  # seconds (the seed's figure)
TEMPLATE_TTL = 3600


def connect(url: str) -> redis.Redis:
    # Bounded timeouts: a Redis that hangs must not hang the actor that asked.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


class RecordCache(Generic[T]):
    """Records of one kind under `prefix:<id>`, stored as JSON with a TTL."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        ttl: int,
        dump: Callable[[T], dict[str, Any]],
        load: Callable[[dict[str, Any]], T],
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl
        self._dump = dump
        self._load = load

    def _key(self, ident: str) -> str:
        return f"{self._prefix}:{ident}"

    def get_many(self, idents: Iterable[str]) -> dict[str, T]:
        wanted = list(dict.fromkeys(idents))
        if not wanted:
            return {}
        values = self._client.mget([self._key(i) for i in wanted])
        return {i: self._load(json.loads(v)) for i, v in zip(wanted, values) if v is not None}

    def set_many(self, records: Mapping[str, T]) -> None:
        if not records:
            return
        pipe = self._client.pipeline(transaction=False)
        for ident, record in records.items():
            pipe.set(self._key(ident), json.dumps(self._dump(record)), ex=self._ttl)
        pipe.execute()

    def invalidate(self, idents: Iterable[str]) -> None:
        keys = [self._key(i) for i in idents]
        if keys:
            self._client.delete(*keys)
