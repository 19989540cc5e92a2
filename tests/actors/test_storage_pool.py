"""PostgreSQL calls on threads, handed back through a watched socket (actors/storage_pool.py)."""

from __future__ import annotations

import select
import threading
import time

import psycopg
import pytest

from clarion.actors.storage_pool import StoragePool
from clarion.config.settings import Settings

pytestmark = pytest.mark.integration


def test_every_result_comes_back_with_a_wake_up_even_when_they_race(
        test_settings: Settings) -> None:
    pool = StoragePool(test_settings.database_url, 4, "test-commit")
    gate = threading.Barrier(4, timeout=10)

    def racing(conn: psycopg.Connection, n: int) -> int:
        gate.wait()  # four calls finish at the same moment, racing for the wake-up
        return int(conn.execute("SELECT %s::int", (n,)).fetchone()[0])

    try:
        for rounds in range(30):
            for n in range(4):
                pool.submit((rounds, n), lambda conn, n=n: racing(conn, n))
            got: dict[object, object] = {}
            deadline = time.monotonic() + 5
            while len(got) < 4:
                # Only a wake-up may bring the results: no polling.
                readable, _, _ = select.select([pool.fileno()], [], [], 
                                               max(0.0, deadline - time.monotonic()))
                assert readable, f"round {rounds}: {len(got)} of 4 results, and no wake-up"
                got.update((key, result) for key, result, _ in pool.completions())
            assert sorted(got.values()) == [0, 1, 2, 3]
        assert pool.in_flight == 0
    finally:
        pool.close()


def test_an_exception_comes_back_as_the_result_of_its_call(test_settings: Settings) -> None:
    pool = StoragePool(test_settings.database_url, 1, "test-commit")
    try:
        pool.submit("bad", lambda conn: conn.execute("SELECT no_such_column FROM users"))
        select.select([pool.fileno()], [], [], 5)
        [(key, result, error)] = pool.completions()
        assert key == "bad" and result is None
        assert isinstance(error, psycopg.errors.UndefinedColumn)
    finally:
        pool.close()
