"""Completions: results that worker threads hand to an actor's thread, with a socket to wake it.

The actor watches `fileno()` (ThespianWatch) and calls `take()` when it is readable. Only the
first result since the last `take()` writes a byte: at 1,000 completions/s a byte each (and a
lock around the write) cost a syscall and a GIL hand-over per result, and threads queued on the
lock. Shared by SendPool (provider calls) and StoragePool (PostgreSQL calls).
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Completions(Generic[T]):
    def __init__(self) -> None:
        self._done: deque[T] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def put(self, result: T) -> None:
        """On a worker thread: hand over a result, waking the owner unless a wake-up is due."""
        self._done.append(result)
        if self._wake_pending:
            return  # the owner has a wake-up coming and will find this one with it
        self._wake_pending = True
        try:
            self._wake_w.send(b"x")
        except OSError:  # BlockingIOError included: the buffer is full of wake-ups already
            pass

    def take(self) -> list[T]:
        """On the owner's thread: the results handed over since the last time, in order."""
        # Drain first, then clear the flag: cleared first, a worker could set it and write its
        # byte, the drain eat that byte, and the next worker, seeing the flag still set, write
        # none, leaving its result unseen until something else woke us (a lost wake-up, seen as
        # commits that never came back).
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
        self._wake_pending = False
        done = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()
