"""KeyGuard: the Gateway's idempotency keys, from a batch's arrival to its answer.

    admit   a key another request here holds (this batch, or one in flight) → 409 for the repeat
            alone; then one Redis call reserves the batch's keys (persistence/idempotency.py):
            a finished key replays its first answer, a pending one is 409, another body 422
    settle  an accepted request's answer is stored under its key for 24 h; a refused one frees
            its key for a retry
    beat    says this Gateway is alive, so that its reservations are taken over if it dies

Redis is behind the actor's breaker (`cached`): while it is away, keys are checked in memory
here and by PostgreSQL's unique index (persistence/notifications.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clarion.actors.batch import PendingBatch
from clarion.actors.messages import Reply
from clarion.actors.planning import fingerprint
from clarion.persistence.idempotency import IdempotencyStore

ACCEPTED = "notification accepted"  # the 202's message; a replay says exactly the same
# Seconds a Gateway's "alive" mark lasts in Redis (renewed every tick): a reservation of an
# idempotency key whose Gateway has been dead this long is taken over by a retry.
ALIVE_SECONDS = 3.0
IN_PROGRESS = "a request with this idempotency key is still being processed"


class KeyGuard:
    def __init__(self, store: IdempotencyStore, cached: Callable[[Callable[[], Any], Any], Any]
                 ) -> None:
        """`cached(call, default)`: the actor's Redis breaker around a call."""
        self._store = store
        self._cached = cached
        self._in_flight: set[str] = set()

    def beat(self) -> None:
        self._cached(lambda: self._store.beat(ALIVE_SECONDS), None)

    def admit(self, batch: PendingBatch) -> None:
        self._hold(batch)
        self._reserve(batch)

    def _hold(self, batch: PendingBatch) -> None:
        """Refuse an item whose key another request here holds: only the repeat is refused,
        never its batch (even with Redis away)."""
        for item in batch.open_items():
            key = item.idempotency_key
            if not key:
                continue
            if key in self._in_flight:
                batch.refuse(item, 409, "idempotency_in_progress", IN_PROGRESS)
            else:
                self._in_flight.add(key)
                batch.keys.add(key)

    def _reserve(self, batch: PendingBatch) -> None:
        keyed = [i for i in batch.open_items() if i.idempotency_key]
        if not keyed:
            return
        found = self._cached(lambda: self._store.reserve(
            [(i.idempotency_key or "", fingerprint(i)) for i in keyed]), None)
        if found is None:
            return
        for item, reservation in zip(keyed, found):
            if reservation.outcome == "reserved":
                batch.reserved.add(item.correlation_id)
            elif reservation.outcome == "replay":
                batch.replies[item.correlation_id] = Reply(
                    item.correlation_id, reservation.status, data=reservation.data,
                    message=reservation.message or ACCEPTED, replayed=True)
            elif reservation.outcome == "in_flight":
                batch.refuse(item, 409, "idempotency_in_progress", IN_PROGRESS)
            else:
                batch.refuse(item, 422, "idempotency_key_reused",
                             "this idempotency key was used for a different request")

    def settle(self, batch: PendingBatch) -> None:
        """Remember accepted requests under their keys; free the keys of refused ones."""
        self._in_flight -= batch.keys
        if not batch.reserved:
            return
        done, failed = [], []
        for item in batch.items:
            if item.correlation_id not in batch.reserved:
                continue
            reply = batch.replies[item.correlation_id]
            if reply.status == 202:
                done.append((item.idempotency_key or "", fingerprint(item), 202, reply.data,
                             reply.message))
            else:
                # Refused, or unknown (504): free the key. If the notification was written after
                # all, the database's unique key answers the retry with it.
                failed.append(item.idempotency_key or "")
        self._cached(lambda: (self._store.complete(done), self._store.release(failed)), None)
