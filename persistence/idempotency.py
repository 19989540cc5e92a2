"""Idempotency keys in Redis: reserved atomically, completed with the response, kept 24 h.

    SET key {"state": "pending", "fp": ...} NX EX 86400   → reserved: go ahead
    otherwise the stored value says: pending (409), done with the same fingerprint (replay the
    stored response), or another fingerprint (422: the key was reused for a different request).

One pipeline per batch. PostgreSQL's unique index on notifications.idempotency_key is the
backstop when Redis is unavailable or has forgotten a key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

TTL_SECONDS = 24 * 3600
_PREFIX = "clarion:idem:"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What reserving one key found."""

    outcome: str  # "reserved", "in_flight", "replay", "mismatch"
    status: int = 0
    data: dict[str, Any] | None = None


class IdempotencyStore:
    def __init__(self, client: redis.Redis, ttl: int = TTL_SECONDS) -> None:
        self._client = client
        self._ttl = ttl

    def reserve(self, entries: Sequence[tuple[str, str]]) -> list[Reservation]:
        """Reserve (key, fingerprint) pairs, in order; a key repeated in `entries` is in flight."""
        if not entries:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key, fingerprint in entries:
            pipe.set(_PREFIX + key, json.dumps({"state": "pending", "fp": fingerprint}),
                     nx=True, ex=self._ttl)
            pipe.get(_PREFIX + key)
        results = pipe.execute()
        found: list[Reservation] = []
        seen: set[str] = set()
        for i, (key, fingerprint) in enumerate(entries):
            created, stored = results[2 * i], results[2 * i + 1]
            if created and key not in seen:
                found.append(Reservation("reserved"))
            else:
                found.append(self._judge(stored, fingerprint))
            seen.add(key)
        return found

    @staticmethod
    def _judge(stored: bytes | None, fingerprint: str) -> Reservation:
        value = json.loads(stored) if stored else {"state": "pending", "fp": fingerprint}
        if value.get("fp") != fingerprint:
            return Reservation("mismatch")
        if value.get("state") == "done":
            return Reservation("replay", int(value["status"]), value.get("data"))
        return Reservation("in_flight")

    def complete(self, entries: Sequence[tuple[str, str, int, dict[str, Any] | None]]) -> None:
        """Store the response of each finished (key, fingerprint, status, data)."""
        if not entries:
            return
        pipe = self._client.pipeline(transaction=False)
        for key, fingerprint, status, data in entries:
            pipe.set(_PREFIX + key, json.dumps(
                {"state": "done", "fp": fingerprint, "status": status, "data": data},
                default=str), ex=self._ttl)
        pipe.execute()

    def release(self, keys: Sequence[str]) -> None:
        """Forget keys whose request failed, so that the caller can retry with them."""
        if keys:
            self._client.delete(*(_PREFIX + k for k in keys))
