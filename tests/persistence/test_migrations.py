"""Schema migrations against the real PostgreSQL: once each, on any database, even when racing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from clarion.config.settings import Settings
from clarion.persistence import database

pytestmark = pytest.mark.integration

T = TypeVar("T")

TABLES = {"users", "templates", "notifications", "deliveries", "delivery_attempts", "outbox",
          "api_keys"}


def _migration_names() -> list[str]:
    return [name for name, _ in database.migration_files()]


def _applied(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {row[0] for row in rows}


def _race(n: int, call: Callable[[], T]) -> tuple[list[T], list[BaseException]]:
    """Run `call` in `n` threads released together: what they returned, and what they raised
    (for the test's thread to report)."""
    start = threading.Barrier(n, timeout=10)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results, errors


def test_migration_files_are_sql_in_name_order() -> None:
    names = _migration_names()
    assert names, "no migration shipped"
    assert names == sorted(names)
    assert all(name.endswith(".sql") for name in names)


def test_migrating_an_up_to_date_database_applies_nothing(test_settings: Settings) -> None:
    assert database.migrate(test_settings.database_url) == []
    assert _applied(test_settings.database_url) == _migration_names()


def test_ensure_database_reports_an_existing_database_as_not_created(
    fresh_database_url: str,
) -> None:
    assert database.ensure_database(fresh_database_url) is False


def test_a_new_database_gets_every_migration_and_every_table(fresh_database_url: str) -> None:
    assert _tables(fresh_database_url) == set()

    assert database.migrate(fresh_database_url) == _migration_names()

    assert _applied(fresh_database_url) == _migration_names()
    assert TABLES <= _tables(fresh_database_url)
    assert database.migrate(fresh_database_url) == []


def test_two_racing_migrations_both_succeed_and_apply_each_file_once(
    fresh_database_url: str,
) -> None:
    results, errors = _race(2, partial(database.migrate, fresh_database_url))

    assert not errors, errors
    assert len(results) == 2
    # Between them they applied every migration, and none twice.
    assert sorted(results[0] + results[1]) == _migration_names()
    assert _applied(fresh_database_url) == _migration_names()
    assert TABLES <= _tables(fresh_database_url)


def test_racing_ensure_database_calls_create_the_database_once_and_none_fails(
    test_settings: Settings,
) -> None:
    admin_url = make_conninfo(test_settings.database_url, dbname="postgres")
    for _ in range(3):  # the race is lost nearly every time; three rounds make it certain
        name = f"clarion_mig_{uuid.uuid4().hex[:12]}"
        url = make_conninfo(test_settings.database_url, dbname=name)
        try:
            results, errors = _race(4, partial(database.ensure_database, url))
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))

        assert not errors, errors
        assert sorted(results) == [False, False, False, True]


def test_clarion_connections_plan_each_run_with_current_statistics(
    test_settings: Settings,
) -> None:
    # A generic plan made while the tables were empty must not outlive their growth.
    for autocommit in (True, False):
        with database.connect(test_settings.database_url, autocommit=autocommit) as conn:
            row = conn.execute("SHOW plan_cache_mode").fetchone()
            assert row is not None and row[0] == "force_custom_plan"


def test_api_keys_made_before_scopes_existed_become_admin_keys(fresh_database_url: str) -> None:
    before = [(n, text) for n, text in database.migration_files() if n < "0008"]
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        for _, text in before:
            conn.execute(text)  # type: ignore[call-overload]
        conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY,"
                     " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for name, _ in before:
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
        conn.execute("INSERT INTO api_keys (name, prefix, key_hash) VALUES ('old', 'clk_old', 'h')")

    assert database.migrate(fresh_database_url) == [
        n for n, _ in database.migration_files() if n >= "0008"]

    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT scope FROM api_keys WHERE name = 'old'").fetchone() == (
            "admin",)
        # A new key has no default scope to fall into: it must name one.
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("INSERT INTO api_keys (name, prefix, key_hash) VALUES ('n', 'p', 'h2')")
