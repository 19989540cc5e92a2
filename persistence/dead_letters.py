"""Dead letters: deliveries that failed for good, for operators to review, replay or discard.

Delivery actors write them (`notifications.record_outcomes`); the Publisher replays them; the
HTTP layer lists them itself (`list_dead`, async, read-only).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from clarion.persistence import notifications as notification_repo

_COLUMNS = ("dead_letter_id, notification_id::text, channel, attempts, error_code, error,"
            " state, created_at, resolved_at")


async def list_dead(conn: AsyncConnection, channel: str | None, error_code: str | None,
                    limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Dead letters not yet replayed or discarded, newest first, and how many there are."""
    cur = conn.cursor(row_factory=dict_row)
    where = ("state = 'dead' AND (%(channel)s::text IS NULL OR channel = %(channel)s::text)"
             " AND (%(code)s::text IS NULL OR error_code = %(code)s::text)")
    params = {"channel": channel, "code": error_code, "limit": limit, "offset": offset}
    await cur.execute(f"SELECT count(*) AS n FROM dead_letters WHERE {where}", params)
    total = (await cur.fetchone() or {"n": 0})["n"]
    await cur.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE {where}"
                      " ORDER BY dead_letter_id DESC LIMIT %(limit)s OFFSET %(offset)s", params)
    return await cur.fetchall(), int(total)


def take_for_replay(conn: psycopg.Connection, ids: list[int] | None, channel: str | None,
                    error_code: str | None, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Take up to `limit` dead letters matching the filter (call inside a transaction): they are
    marked replayed and their deliveries reset (queued, attempt count back to 0)."""
    rows = conn.execute(
        "SELECT dead_letter_id, message FROM dead_letters WHERE state = 'dead'"
        " AND (%(ids)s::bigint[] IS NULL OR dead_letter_id = ANY(%(ids)s::bigint[]))"
        " AND (%(channel)s::text IS NULL OR channel = %(channel)s::text)"
        " AND (%(code)s::text IS NULL OR error_code = %(code)s::text)"
        " ORDER BY dead_letter_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
        {"ids": ids, "channel": channel, "code": error_code, "limit": limit},
    ).fetchall()
    if not rows:
        return []
    taken = [int(r[0]) for r in rows]
    conn.execute("UPDATE dead_letters SET state = 'replayed', resolved_at = now()"
                 " WHERE dead_letter_id = ANY(%s)", (taken,))
    notification_repo.reset_for_replay(
        conn, [(r[1]["notification_id"], r[1]["channel"]) for r in rows])
    return [(int(r[0]), r[1]) for r in rows]


def undo_replay(conn: psycopg.Connection, dead_letter_ids: list[int]) -> None:
    """The broker refused the replayed messages: make them dead letters again."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE dead_letters SET state = 'dead', resolved_at = NULL"
            " WHERE dead_letter_id = ANY(%s) RETURNING notification_id::text, channel,"
            " attempts, error_code, error", (dead_letter_ids,)).fetchall()
        notification_repo.restore_failed(conn, [tuple(r) for r in rows])


def discard(conn: psycopg.Connection, dead_letter_id: int) -> bool:
    """Mark one dead letter discarded; False if there is no such live dead letter."""
    with conn.transaction():
        cur = conn.execute("UPDATE dead_letters SET state = 'discarded', resolved_at = now()"
                           " WHERE dead_letter_id = %s AND state = 'dead'", (dead_letter_id,))
        return cur.rowcount == 1
