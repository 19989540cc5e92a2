"""Users in PostgreSQL: batch lookups for the hot path, and creation."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg.types.json import Jsonb

from clarion.persistence.records import User

COLUMNS = "user_id, email_address, phone_number, preferred_language, preferences, push_tokens"


class DuplicateUser(Exception):
    """A user with this id or email address already exists."""


def row_to_user(row: tuple) -> User:
    user_id, email, phone, language, preferences, tokens = row
    return User(user_id, email, phone, language, preferences or {}, tuple(tokens or ()))


def fetch_users(conn: psycopg.Connection, user_ids: Iterable[str]) -> dict[str, User]:
    """The users among `user_ids` that exist, by id: one query for a whole batch."""
    ids = list(set(user_ids))
    if not ids:
        return {}
    rows = conn.execute(f"SELECT {COLUMNS} FROM users WHERE user_id = ANY(%s)", (ids,))
    return {user.user_id: user for user in map(row_to_user, rows)}


def create_user(conn: psycopg.Connection, user: User) -> User:
    try:
        with conn.transaction():
            row = conn.execute(
                f"INSERT INTO users ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
                (
                    user.user_id,
                    user.email_address,
                    user.phone_number,
                    user.preferred_language,
                    Jsonb(user.preferences),
                    list(user.push_tokens),
                ),
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise DuplicateUser(str(exc.diag.constraint_name or "")) from None
    assert row is not None
    return row_to_user(row)
