"""Users in PostgreSQL: batch lookups for the hot path, and the writes of the users API.

Deleting a user deletes only the profile: notifications keep their `user_id` and their history
(there is no foreign key from notifications to users, on purpose).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from clarion.persistence.records import User

COLUMNS = "user_id, email_address, phone_number, preferred_language, preferences, push_tokens"
MAX_PUSH_TOKENS = 20
# The columns a partial update may set; `preferences` is merged key by key instead.
_UPDATABLE = ("email_address", "phone_number", "preferred_language", "push_tokens")


class DuplicateUser(Exception):
    """A user with this id or email address already exists."""


class TooManyPushTokens(Exception):
    """The user already has the most push tokens a user may have."""


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


def _locked(conn: psycopg.Connection, user_id: str) -> User | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM users WHERE user_id = %s FOR UPDATE",
                       (user_id,)).fetchone()
    return row_to_user(row) if row else None


def _store(conn: psycopg.Connection, user: User) -> User:
    row = conn.execute(
        "UPDATE users SET email_address = %s, phone_number = %s, preferred_language = %s,"
        " preferences = %s, push_tokens = %s, updated_at = now() WHERE user_id = %s"
        f" RETURNING {COLUMNS}",
        (user.email_address, user.phone_number, user.preferred_language,
         Jsonb(user.preferences), list(user.push_tokens), user.user_id),
    ).fetchone()
    assert row is not None
    return row_to_user(row)


def update_user(conn: psycopg.Connection, user_id: str, changes: Mapping[str, Any]) -> User | None:
    """Apply a partial update; None if there is no such user.

    `changes` holds only the fields to change (None clears an optional one); its `preferences`
    are merged into the stored ones key by key, as JSON Merge Patch (RFC 7396) does.
    """
    unknown = set(changes) - {*_UPDATABLE, "preferences"}
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    try:
        with conn.transaction():
            user = _locked(conn, user_id)
            if user is None:
                return None
            fields = {**user.to_json(), **{k: v for k, v in changes.items() if k in _UPDATABLE}}
            if "preferences" in changes:
                fields["preferences"] = {**user.preferences, **changes["preferences"]}
            return _store(conn, User.from_json(fields))
    except psycopg.errors.UniqueViolation as exc:
        raise DuplicateUser(str(exc.diag.constraint_name or "")) from None


def delete_user(conn: psycopg.Connection, user_id: str) -> bool:
    """Delete a user's profile; False if there was none."""
    with conn.transaction():
        return conn.execute("DELETE FROM users WHERE user_id = %s", (user_id,)).rowcount > 0


def add_push_token(conn: psycopg.Connection, user_id: str, token: str) -> tuple[User, bool] | None:
    """Add a token (idempotent): the user and whether it was added; None if no such user."""
    with conn.transaction():
        user = _locked(conn, user_id)
        if user is None:
            return None
        if token in user.push_tokens:
            return user, False
        if len(user.push_tokens) >= MAX_PUSH_TOKENS:
            raise TooManyPushTokens(f"a user can have at most {MAX_PUSH_TOKENS} push tokens")
        tokens = (*user.push_tokens, token)
        return _store(conn, replace(user, push_tokens=tokens)), True


def remove_push_token(
    conn: psycopg.Connection, user_id: str, token: str
) -> tuple[User, bool] | None:
    """Remove a token: the user and whether it had it; None if no such user."""
    with conn.transaction():
        user = _locked(conn, user_id)
        if user is None:
            return None
        if token not in user.push_tokens:
            return user, False
        tokens = tuple(t for t in user.push_tokens if t != token)
        return _store(conn, replace(user, push_tokens=tokens)), True


def queue_token_removals(conn: psycopg.Connection, removals: Iterable[tuple[str, str]]) -> None:
    """Hand (user_id, token) pairs to the Users actor for removal (`apply_token_removals`)."""
    pairs = sorted(set(removals))
    if not pairs:
        return
    conn.execute(
        "INSERT INTO push_token_removals (user_id, token)"
        " SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )


def apply_token_removals(conn: psycopg.Connection, limit: int = 500) -> set[str]:
    """Remove the queued tokens from their users, in one transaction with taking them off the
    queue; return the users changed (their cache entries are stale)."""
    with conn.transaction():
        rows = conn.execute(
            "DELETE FROM push_token_removals WHERE (user_id, token) IN ("
            "  SELECT user_id, token FROM push_token_removals ORDER BY created_at"
            "  LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING user_id, token",
            (limit,),
        ).fetchall()
        if not rows:
            return set()
        changed = conn.execute(
            "UPDATE users AS u SET push_tokens = ARRAY(SELECT t FROM unnest(u.push_tokens) AS t"
            "   WHERE t <> ALL(r.tokens)), updated_at = now()"
            "  FROM (SELECT user_id, array_agg(token) AS tokens"
            "          FROM unnest(%s::text[], %s::text[]) AS x(user_id, token)"
            "         GROUP BY user_id) AS r"
            " WHERE u.user_id = r.user_id AND u.push_tokens && r.tokens"
            " RETURNING u.user_id",
            ([r[0] for r in rows], [r[1] for r in rows]),
        ).fetchall()
    return {row[0] for row in changed}
