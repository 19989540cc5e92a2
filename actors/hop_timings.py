"""QueuedTimings: the "queued" hop of each accepted notification, written behind the answer.

A timing is diagnostic: it is written on the Gateway's next tick, for every batch of that second
at once, never waiting on a row a delivery actor has locked (those are kept for the next tick,
for a minute at most). The Gateway is free for the next batch the moment it has answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from clarion.persistence import notifications as notification_repo

log = logging.getLogger("clarion.actors.gateway")


class QueuedTimings:
    def __init__(self, connection: Callable[[], psycopg.Connection]) -> None:
        self._connection = connection
        self._waiting: list[tuple[str, float]] = []  # (notification id, committed at)

    def add(self, notification_ids: list[str], at: float) -> None:
        self._waiting.extend((nid, at) for nid in notification_ids)

    def write(self) -> None:
        if not self._waiting:
            return
        timings, self._waiting = self._waiting, []
        try:
            left = notification_repo.record_hops(self._connection(), "queued", timings)
        except psycopg.Error as exc:
            log.warning("recording the queued hop failed", extra={"error": str(exc)})
            left = timings
        oldest = time.time() - 60
        self._waiting = [t for t in left if t[1] > oldest] + self._waiting
