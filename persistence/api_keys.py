"""API keys: created and revoked by the `clarion apikey` command, stored only as digests.

Each key has a scope (`SCOPES`): `send` posts notifications and reads the ones created under its
name; `admin` may do everything. What each scope may call is http/auth.py's access table."""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

import psycopg

_PREFIX = "clk_"
Scope = Literal["send", "admin"]
SCOPES: tuple[Scope, ...] = ("send", "admin")


def digest(key: str) -> str:
    # The keys are 256 random bits, so a plain SHA-256 is enough: no dictionary to guess from,
    # and verifying stays cheap on every request (a slow KDF would cost each API call).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(conn: psycopg.Connection, name: str, *, scope: Scope) -> str:
    """Create a key named `name` with `scope`; return the key itself (it is not stored, show
    it once). The scope is always chosen by the caller: there is no default to forget."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    key = _PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute(
            "INSERT INTO api_keys (name, prefix, key_hash, scope) VALUES (%s, %s, %s, %s)",
            (name, key[:10], digest(key), scope),
        )
    return key


def revoke_api_keys(conn: psycopg.Connection, name: str) -> int:
    """Revoke every live key named `name`; return how many."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
            (name,),
        )
        return cur.rowcount


def list_api_keys(conn: psycopg.Connection) -> list[tuple[str, str, str, str, str | None]]:
    """(name, prefix, scope, created_at, revoked_at) of every key, newest first."""
    rows = conn.execute(
        "SELECT name, prefix, scope, created_at::text, revoked_at::text FROM api_keys"
        " ORDER BY created_at DESC"
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]
