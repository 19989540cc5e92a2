"""SendPool: provider calls on worker threads, their completions handed back through a socket.

An actor must never block its mailbox on a provider call (tens to hundreds of ms each), so it
submits calls here and watches `fileno()`: a byte arrives when calls have finished, and
`completions()` takes them (actors/completions.py).

Calls wait for a free thread in priority order: an urgent (transactional) call goes before every
bulk one already waiting, so a bulk backlog in hand delays it by at most one call's duration
(README "Lanes"). The standard ThreadPoolExecutor serves strictly first come, first served.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Hashable
from typing import Any

from clarion.actors.completions import Completions
from clarion.actors.providers.base import DeliveryResult, Provider


class SendPool:
    _URGENT, _BULK, _STOP = 1, 2, 0  # queue priorities: stopping first, then urgent, then bulk

    def __init__(self, provider: Provider | None, concurrency: int, name: str) -> None:
        """`provider`: the one `submit` calls unless it is given another."""
        self._provider = provider
        self._size = concurrency
        self._name = name
        # (priority, order, call): the order keeps each priority first come, first served.
        self._calls: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._finished: Completions[tuple[Hashable, DeliveryResult]] = Completions()
        self.in_flight = 0

    def fileno(self) -> int:
        return self._finished.fileno()

    def submit(self, key: Hashable, message: dict[str, Any],
               provider: Provider | None = None, urgent: bool = True) -> None:
        """Send `message` (through `provider`, else the pool's) on a worker thread; its result
        comes back under `key`. A call not `urgent` (bulk) waits behind every urgent one."""
        chosen = provider or self._provider
        if chosen is None:
            raise ValueError("no provider to send through")
        self.in_flight += 1
        priority = self._URGENT if urgent else self._BULK
        self._calls.put((priority, next(self._order), (key, message, chosen)))
        if len(self._threads) < min(self._size, self.in_flight):
            # Threads are started as calls need them, up to `concurrency`.
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"{self._name}_{len(self._threads)}")
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            priority, _, call = self._calls.get()
            if priority == self._STOP or self._closed:
                return
            self._send(*call)

    def _send(self, key: Hashable, message: dict[str, Any], provider: Provider) -> None:
        """Runs on a worker thread: the provider call, then a wake-up for the owner."""
        try:
            result = provider.send(message)
        except Exception as exc:  # noqa: BLE001 - providers must not raise; if one does, record it
            result = DeliveryResult(False, error_code="provider_exception",
                                    error=f"{type(exc).__name__}: {exc}")
        self._finished.put((key, result))

    def completions(self) -> list[tuple[Hashable, DeliveryResult]]:
        """The calls finished since the last time, in the order they finished."""
        done = self._finished.take()
        self.in_flight -= len(done)
        return done

    def close(self) -> None:
        """Stop the threads; calls still waiting are dropped (their messages go back to the
        queue with the broker connection), calls in progress finish on their own."""
        self._closed = True
        for _ in self._threads:
            self._calls.put((self._STOP, next(self._order), None))
        self._finished.close()
