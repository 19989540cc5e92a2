"""Idempotency keys in Redis: reserved atomically, completed with the first answer, kept 24 h.

    reserve  → no value: store {"state": "pending", "fp", "owner"} for `pending_ttl` → reserved
               pending, owner alive:           409 (in flight)
               pending, owner dead:            taken over → reserved (the first try died with it)
               done, same fingerprint:         replay the stored answer (status, data, message)
               another fingerprint:            422 (the key was reused for a different request)
    complete → {"state": "done", "fp", "status", "data", "message"} for 24 h
    release  → deleted: the request failed and may be tried again with the key

A reservation lives about twice the request timeout, not 24 h: if the Gateway that made it is
killed, a retry gets a fresh attempt instead of a day of 409s. Sooner still: each Gateway keeps an
"alive" key with a TTL of a few seconds (`beat`), and a reservation whose owner's key has expired
is taken over at once. Reserving is one Lua script per batch, so it is atomic: two retries never
both take a key over. PostgreSQL's unique index on notifications.idempotency_key is the backstop
when Redis is unavailable or has forgotten a key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

TTL_SECONDS = 24 * 3600
_PREFIX = "clarion:idem:"
_ALIVE_PREFIX = "clarion:gateway-alive:"

# KEYS: the idempotency keys. ARGV: owner, pending TTL, alive prefix, then one fingerprint per
# key. Returns, per key, "" when reserved, else the stored value (a repeat of a key within the
# call finds the reservation made for its first occurrence: in flight).
_RESERVE = """
local owner, ttl, alive = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local found = {}
for i, key in ipairs(KEYS) do
  local fingerprint = ARGV[3 + i]
  local mine = cjson.encode({state = "pending", fp = fingerprint, owner = owner})
  local stored = redis.call("GET", key)
  local take = not stored
  if stored then
    local ok, value = pcall(cjson.decode, stored)
    take = ok and value.state == "pending" and value.fp == fingerprint
           and value.owner ~= owner and value.owner ~= nil
           and redis.call("EXISTS", alive .. value.owner) == 0
  end
  if take then
    redis.call("SET", key, mine, "EX", ttl)
    found[i] = ""
  else
    found[i] = stored
  end
end
return found
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What reserving one key found."""

    outcome: str  # "reserved", "in_flight", "replay", "mismatch"
    status: int = 0
    data: dict[str, Any] | None = None
    message: str = ""


class IdempotencyStore:
    def __init__(self, client: redis.Redis, owner: str, pending_ttl: float,
                 ttl: int = TTL_SECONDS) -> None:
        """`owner`: this Gateway's name for its reservations; `pending_ttl`: how long one
        lives if never completed (about twice the request timeout)."""
        self._client = client
        self._owner = owner
        self._pending_ttl = max(1, int(round(pending_ttl)))
        self._ttl = ttl
        self._reserve = client.register_script(_RESERVE)

    def beat(self, seconds: float) -> None:
        """Say this owner is alive for `seconds` more (call it more often than that)."""
        self._client.set(_ALIVE_PREFIX + self._owner, "1", px=int(seconds * 1000))

    def reserve(self, entries: Sequence[tuple[str, str]]) -> list[Reservation]:
        """Reserve (key, fingerprint) pairs, in order; a key repeated in `entries` is in flight."""
        if not entries:
            return []
        stored = self._reserve(keys=[_PREFIX + key for key, _ in entries],
                               args=[self._owner, self._pending_ttl, _ALIVE_PREFIX,
                                     *(fingerprint for _, fingerprint in entries)])
        found: list[Reservation] = []
        for (_key, fingerprint), value in zip(entries, stored):
            found.append(Reservation("reserved") if value in (b"", "")
                         else self._judge(value, fingerprint))
        return found

    @staticmethod
    def _judge(stored: bytes | str, fingerprint: str) -> Reservation:
        try:
            value = json.loads(stored)
        except ValueError:
            value = {"state": "pending", "fp": fingerprint}
        if value.get("fp") != fingerprint:
            return Reservation("mismatch")
        if value.get("state") == "done":
            return Reservation("replay", int(value["status"]), value.get("data"),
                               str(value.get("message") or ""))
        return Reservation("in_flight")

    def complete(self, entries: Sequence[tuple[str, str, int, dict[str, Any] | None, str]]
                 ) -> None:
        """Store the answer of each finished (key, fingerprint, status, data, message)."""
        if not entries:
            return
        pipe = self._client.pipeline(transaction=False)
        for key, fingerprint, status, data, message in entries:
            pipe.set(_PREFIX + key, json.dumps(
                {"state": "done", "fp": fingerprint, "status": status, "data": data,
                 "message": message}, default=str), ex=self._ttl)
        pipe.execute()

    def release(self, keys: Sequence[str]) -> None:
        """Forget keys whose request failed, so that the caller can retry with them."""
        if keys:
            self._client.delete(*(_PREFIX + k for k in keys))
