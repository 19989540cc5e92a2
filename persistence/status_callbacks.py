"""Status callbacks to the caller (README "Status callbacks"): the endpoints API keys register,
and the changes waiting to be POSTed to them.

Changes are written by triggers (migration 0015) in the transaction that changes a status, so
none is lost and none is made up. The Callbacks actor leases the due *head* of each
notification's queue (its oldest pending change): a notification's changes go out one at a
time, in order; a change that keeps failing holds back the ones after it until it is delivered
or dead-lettered. A lease that outlives its holder (a crash mid-POST) lapses, and the change is
posted again: the receiver deduplicates on the callback's id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

CHANNEL = "callback"  # the channel a callback's dead letter is filed under


# -- endpoints (the HTTP layer, async) ---------------------------------------------------------

async def register(conn: AsyncConnection, principal: str, url: str,
                   secret: str) -> dict[str, Any]:
    """Set `principal`'s endpoint (one per principal: a second registration replaces it)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO callback_endpoints (principal, url, secret) VALUES (%s, %s, %s)"
        " ON CONFLICT (principal) DO UPDATE SET url = EXCLUDED.url, secret = EXCLUDED.secret,"
        " updated_at = now()"
        " RETURNING principal, url, created_at, updated_at", (principal, url, secret))
    row = await cur.fetchone()
    assert row is not None
    return row


async def endpoint(conn: AsyncConnection, principal: str) -> dict[str, Any] | None:
    """`principal`'s endpoint (never its secret) and how its callbacks stand."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT principal, url, created_at, updated_at FROM callback_endpoints"
                      " WHERE principal = %s", (principal,))
    row = await cur.fetchone()
    if row is None:
        return None
    await cur.execute("SELECT state, count(*) AS n FROM status_callbacks WHERE principal = %s"
                      " GROUP BY state", (principal,))
    row["callbacks"] = {r["state"]: r["n"] for r in await cur.fetchall()}
    return row


async def unregister(conn: AsyncConnection, principal: str) -> bool:
    """Remove `principal`'s endpoint; its changes not yet delivered are cancelled."""
    async with conn.transaction():
        cur = await conn.execute("DELETE FROM callback_endpoints WHERE principal = %s",
                                 (principal,))
        if cur.rowcount == 0:
            return False
        await conn.execute("UPDATE status_callbacks SET state = 'cancelled', leased_by = NULL,"
                           " leased_until = NULL WHERE principal = %s AND state = 'pending'",
                           (principal,))
    return True


async def history(conn: AsyncConnection, principal: str, notification_id: str,
                  ) -> list[dict[str, Any]]:
    """One notification's callbacks, in order, as the API shows them."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT callback_id, kind, channel, status, previous_status, error_code, occurred_at,"
        "       state, attempts, next_attempt_at, last_error, delivered_at"
        "  FROM status_callbacks WHERE principal = %s AND notification_id = %s::uuid"
        " ORDER BY callback_id", (principal, notification_id))
    return await cur.fetchall()


# -- delivering them (the Callbacks actor) -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class DueCallback:
    """A change to POST now, with where and how to sign it."""

    callback_id: int
    principal: str
    notification_id: str
    kind: str
    channel: str | None
    status: str
    previous_status: str | None
    error_code: str | None
    occurred_at: datetime
    attempts: int
    url: str
    secret: str

    def __repr__(self) -> str:  # never the secret
        return f"DueCallback(callback_id={self.callback_id}, url={self.url!r})"

    def payload(self) -> dict[str, Any]:
        """The JSON body the endpoint receives."""
        return {"id": f"cb_{self.callback_id}", "type": f"{self.kind}.status_changed",
                "sequence": self.callback_id, "notification_id": self.notification_id,
                "channel": self.channel, "status": self.status,
                "previous_status": self.previous_status, "error_code": self.error_code,
                "occurred_at": self.occurred_at.isoformat()}


def lease_due(conn: psycopg.Connection, owner: str, limit: int, lease_seconds: float,
              per_principal: int, blocked: Sequence[str] = ()) -> list[DueCallback]:
    """Lease up to `limit` due changes, each the oldest pending change of its notification and
    not leased by anyone else (a lapsed lease is taken over), at most `per_principal` of one
    principal's and none of `blocked` principals' (their endpoint's host is busy or its breaker
    open): one caller's backlog never fills the lease for everyone."""
    rows = conn.execute(
        "WITH heads AS ("
        "  SELECT DISTINCT ON (notification_id) callback_id, principal, next_attempt_at,"
        "         leased_until"
        "    FROM status_callbacks WHERE state = 'pending'"
        "   ORDER BY notification_id, callback_id),"
        " ranked AS ("
        "  SELECT h.callback_id,"
        "         row_number() OVER (PARTITION BY h.principal ORDER BY h.callback_id) AS n"
        "    FROM heads AS h JOIN callback_endpoints AS e ON e.principal = h.principal"
        "   WHERE h.next_attempt_at <= now()"
        "     AND (h.leased_until IS NULL OR h.leased_until < now())"
        "     AND NOT h.principal = ANY(%(blocked)s::text[])),"
        " due AS ("
        "  SELECT callback_id FROM ranked WHERE n <= %(per_principal)s"
        "   ORDER BY callback_id LIMIT %(limit)s),"
        " leased AS ("
        "  UPDATE status_callbacks AS c SET leased_by = %(owner)s,"
        "         leased_until = now() + make_interval(secs => %(lease)s)"
        "    FROM due WHERE c.callback_id = due.callback_id AND c.state = 'pending'"
        "     AND (c.leased_until IS NULL OR c.leased_until < now())"
        "  RETURNING c.*)"
        " SELECT l.callback_id, l.principal, l.notification_id::text, l.kind, l.channel,"
        "        l.status, l.previous_status, l.error_code, l.occurred_at, l.attempts,"
        "        e.url, e.secret"
        "   FROM leased AS l JOIN callback_endpoints AS e ON e.principal = l.principal"
        "  ORDER BY l.callback_id",
        {"owner": owner, "limit": limit, "lease": lease_seconds,
         "per_principal": per_principal, "blocked": list(blocked)}).fetchall()
    return [DueCallback(*row) for row in rows]


def release(conn: psycopg.Connection, owner: str, callback_ids: Sequence[int],
            delay_seconds: float = 0.0) -> None:
    """Give back leases not used (their host is busy, or its breaker open): due again after
    `delay_seconds`, no attempt spent."""
    if callback_ids:
        conn.execute("UPDATE status_callbacks SET leased_by = NULL, leased_until = NULL,"
                     " next_attempt_at = now() + make_interval(secs => %s)"
                     " WHERE callback_id = ANY(%s) AND leased_by = %s",
                     (delay_seconds, list(callback_ids), owner))


@dataclass(frozen=True, slots=True)
class Attempted:
    """How one POST went: delivered, or failed and due again in `retry_in` seconds (None:
    out of time, dead-lettered)."""

    callback_id: int
    ok: bool
    error_code: str | None = None
    error: str | None = None
    retry_in: float | None = None


def record_attempts(conn: psycopg.Connection, owner: str, window_seconds: float,
                    attempts: Sequence[Attempted]) -> list[int]:
    """Record a run of POSTs in one transaction; returns the ids that were dead-lettered.

    A failure is retried while its window (from its first attempt) lasts: `retry_in` later,
    or, if that would fall after the window, never: it becomes a dead letter (channel
    `callback`) that an operator can replay like any other. Only the lease holder's record
    counts (a lapsed lease taken over by another holder is theirs to record)."""
    if not attempts:
        return []
    with conn.transaction(), conn.cursor() as cur:
        rows = cur.execute(
            "UPDATE status_callbacks AS c SET attempts = c.attempts + 1,"
            "       give_up_at = coalesce(c.give_up_at,"
            "                             now() + make_interval(secs => %(window)s)),"
            "       leased_by = NULL, leased_until = NULL,"
            "       last_error = a.error,"
            "       state = CASE WHEN a.ok THEN 'delivered'"
            "                    WHEN now() + make_interval(secs => a.retry_in)"
            "                         > coalesce(c.give_up_at,"
            "                                    now() + make_interval(secs => %(window)s))"
            "                    THEN 'dead' ELSE 'pending' END,"
            "       delivered_at = CASE WHEN a.ok THEN now() END,"
            "       next_attempt_at = now() + make_interval(secs => coalesce(a.retry_in, 0))"
            "  FROM jsonb_to_recordset(%(attempts)s::jsonb)"
            "       AS a(callback_id bigint, ok bool, error text, retry_in float8)"
            " WHERE c.callback_id = a.callback_id AND c.leased_by = %(owner)s"
            "   AND c.state = 'pending'"
            " RETURNING c.callback_id, c.state, c.notification_id, c.attempts, c.principal,"
            "           c.kind, c.channel, c.status",
            {"window": window_seconds, "owner": owner, "attempts": json.dumps([
                {"callback_id": a.callback_id, "ok": a.ok, "error": a.error,
                 "retry_in": 0 if a.ok else a.retry_in if a.retry_in is not None else 1e9}
                for a in attempts])}).fetchall()
        dead = [r for r in rows if r[1] == "dead"]
        codes = {a.callback_id: a for a in attempts}
        for callback_id, _, notification_id, tries, principal, kind, channel, status in dead:
            failure = codes[callback_id]
            cur.execute(
                "INSERT INTO dead_letters (notification_id, channel, message, attempts,"
                " error_code, error) VALUES (%s, %s, %s, %s, %s, %s)",
                (notification_id, CHANNEL,
                 Jsonb({"callback_id": callback_id, "principal": principal, "kind": kind,
                        "channel": channel, "status": status}),
                 tries, failure.error_code, (failure.error or "")[:500]))
    return [r[0] for r in dead]


def replay(cur: psycopg.Cursor[Any], callback_ids: Sequence[int]) -> None:
    """Dead-lettered callbacks due again (in the replay's transaction), with a fresh window."""
    if callback_ids:
        cur.execute("UPDATE status_callbacks SET state = 'pending', attempts = 0,"
                    " give_up_at = NULL, next_attempt_at = now(), leased_by = NULL,"
                    " leased_until = NULL WHERE callback_id = ANY(%s) AND state = 'dead'",
                    (list(callback_ids),))
