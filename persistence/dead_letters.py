"""Dead letters: deliveries that failed for good, for operators to review, replay or discard.

Delivery actors write them (`notifications.record_outcomes`); the Publisher replays them
through the outbox; the HTTP layer lists them itself (`list_dead`, async, read-only).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from clarion.persistence import broker_outbox, status_callbacks
from clarion.persistence import notifications as notification_repo
from clarion.persistence import delivery_message as framing
from clarion.persistence.delivery_message import DeliveryMessage

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


def replay(conn: psycopg.Connection, ids: list[int] | None, channel: str | None,
           error_code: str | None, limit: int) -> tuple[list[int], list[int]]:
    """Replay up to `limit` dead letters matching the filter, in one transaction: each is marked
    replayed, its delivery starts again (queued, no attempt spent) and its message goes back to
    its work queue through the outbox, at attempt 1. Returns (dead letter ids, outbox ids)."""
    with conn.transaction(), conn.cursor() as cur:
        rows = cur.execute(
            "SELECT dead_letter_id, message, channel FROM dead_letters WHERE state = 'dead'"
            " AND (%(ids)s::bigint[] IS NULL OR dead_letter_id = ANY(%(ids)s::bigint[]))"
            " AND (%(channel)s::text IS NULL OR channel = %(channel)s::text)"
            " AND (%(code)s::text IS NULL OR error_code = %(code)s::text)"
            " ORDER BY dead_letter_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
            {"ids": ids, "channel": channel, "code": error_code, "limit": limit},
        ).fetchall()
        if not rows:
            return [], []
        taken = [int(r[0]) for r in rows]
        cur.execute("UPDATE dead_letters SET state = 'replayed', resolved_at = now()"
                    " WHERE dead_letter_id = ANY(%s)", (taken,))
        # A status callback is not a broker message: it is simply due again.
        status_callbacks.replay(cur, [int(body["callback_id"]) for _, body, channel in rows
                                      if channel == status_callbacks.CHANNEL])
        deliveries = [(i, body) for i, body, channel in rows
                      if channel != status_callbacks.CHANNEL]
        notification_repo.reset_for_replay(
            conn, [(body["notification_id"], body["channel"]) for _, body in deliveries])
        outbox_ids = broker_outbox.add(cur, [
            DeliveryMessage.from_body(body).first_attempt().to_amqp(
                **{framing.REPLAYED_FROM: dead_letter_id})
            for dead_letter_id, body in deliveries])
    return taken, outbox_ids


def discard(conn: psycopg.Connection, dead_letter_id: int) -> bool:
    """Mark one dead letter discarded; False if there is no such live dead letter."""
    with conn.transaction():
        cur = conn.execute("UPDATE dead_letters SET state = 'discarded', resolved_at = now()"
                           " WHERE dead_letter_id = %s AND state = 'dead'", (dead_letter_id,))
        return cur.rowcount == 1
