"""StoragePool: PostgreSQL calls on worker threads, their results handed back through a socket.

An actor that waits on PostgreSQL inside a handler is deaf meanwhile: Thespian acknowledges a
message only when the receiver's loop reads it, so a Gateway committing one batch held the HTTP
bridge's next send for as long (traces: a send blocked ~7 ms behind each commit). With the
commits on threads (each with its own connection), the actor goes back to its loop at once,
takes the next batch, and learns that a commit finished when `fileno()` is readable.

Only the submitted function runs on the thread, against that thread's connection; everything
else (the actor's state, its breakers) stays on the actor's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from clarion.actors.completions import Completions
from clarion.persistence import database


class StoragePool:
    def __init__(self, database_url: str, threads: int, name: str,
                 generic_plans: bool = False) -> None:
        self._url = database_url
        self._generic_plans = generic_plans
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._local = threading.local()
        self._connections: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._done: Completions[tuple[Hashable, Any, BaseException | None]] = Completions()
        self.in_flight = 0

    def fileno(self) -> int:
        return self._done.fileno()

    def submit(self, key: Hashable, call: Callable[[psycopg.Connection], Any]) -> None:
        """Run `call(conn)` on a worker thread; its result (or exception) comes back under
        `key` from `completions()`."""
        self.in_flight += 1
        self._pool.submit(self._run, key, call)

    def _connection(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = database.connect(self._url, autocommit=True)
            if self._generic_plans:
                conn.execute(database.GENERIC_PLANS)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _run(self, key: Hashable, call: Callable[[psycopg.Connection], Any]) -> None:
        try:
            result, error = call(self._connection()), None
        except BaseException as exc:  # noqa: BLE001 - handed to the actor, which decides
            result, error = None, exc
        self._done.put((key, result, error))

    def completions(self) -> list[tuple[Hashable, Any, BaseException | None]]:
        """(key, result, exception) of the calls finished since the last time."""
        done = self._done.take()
        self.in_flight -= len(done)
        return done

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
        self._done.close()
