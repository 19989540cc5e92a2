"""PostgreSQL connections and schema migrations.

Migrations are the `.sql` files in `migrations/`, applied in name order, each once, inside one
transaction with the migration table row that records it. An advisory lock serialises concurrent
`migrate` calls (several hosts starting at once), so applying them is idempotent.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 7_403_311


# Clarion's connections live as long as their process and run the same few statements, which
# psycopg prepares on the server after five runs. PostgreSQL then settles on a generic plan made
# with the statistics of that moment: for an actor started on empty tables, plans for tables of
# a few rows, kept while they grow to millions (draining a backlog ran at half speed with
# PostgreSQL busy a whole core; a fresh connection brought it back). Custom plans are made for
# each run's values with current statistics; parsing is still saved.
CUSTOM_PLANS = "SET plan_cache_mode = force_custom_plan"
# For connections that only run statements whose plan does not depend on the tables' sizes
# (the Gateway's one-statement insert: rows from a jsonb document, conflicts checked on unique
# indexes). Planning that statement afresh took 0.7 ms of every idle commit's 1.1 ms in
# PostgreSQL (log_min_duration_statement: bind 0.72 ms, execute 0.40 ms).
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """A connection with a bounded connect time (never hang start-up on a dead server)."""
    conn = psycopg.connect(url, connect_timeout=5, **kwargs)  # type: ignore[arg-type]
    conn.execute(CUSTOM_PLANS)
    if not conn.autocommit:
        conn.commit()
    return conn


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True if it was created."""
    params = conninfo_to_dict(url)
    name = params.get("dbname") or "postgres"
    admin_url = make_conninfo(url, dbname="postgres")
    with connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            # Another process created it meanwhile; losing that race surfaces as either error.
            return False
        log.info("database created", extra={"database": name})
        return True


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration shipped with Clarion, in the order they apply."""
    folder = resources.files("clarion.persistence.migrations")
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name, f.read_text(encoding="utf-8")) for f in files]


def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied; return their names."""
    applied: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, statements in migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(statements)  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
                log.info("migration applied", extra={"migration": name})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
