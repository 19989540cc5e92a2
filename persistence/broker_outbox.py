"""The transactional outbox: broker messages kept in PostgreSQL until RabbitMQ confirmed them.

    writer (one transaction)                      relay (Publisher, delivery actors)
    ─────────────────────────                     ─────────────────────────────────────────
    INSERT notifications, deliveries ...          BEGIN
    INSERT broker_outbox (the messages)  ──────▶  DELETE ... RETURNING (rows locked, SKIP LOCKED)
    COMMIT  → 202 / ack                           publish them, wait for the broker's confirms
                                                  COMMIT  (or ROLLBACK: the rows stay)

A message exists as soon as the state change it stands for is committed, and leaves the table only
in a transaction that commits after the broker confirmed it. So a committed message is published
at least once, whatever fails: the relay's own process, the broker, the database. If the relay
dies between the confirm and its commit, the rows are published again by the next relay; the
delivery actors' claims (`notifications.claim_attempts`) keep such a copy from being delivered
twice. Several relays on several hosts share the table without taking the same row (SKIP LOCKED).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from clarion.persistence.broker import BatchPublisher, Envelope, UnroutableError

# Rows per relay transaction: one publish of this many messages and one confirm wait.
RELAY_CHUNK = 1000


def add(cur: psycopg.Cursor[Any], envelopes: Sequence[Envelope]) -> list[int]:
    """Add messages inside the caller's transaction; return their ids, in order."""
    if not envelopes:
        return []
    rows = cur.execute(
        "INSERT INTO broker_outbox (exchange, routing_key, headers, body)"
        " SELECT m.exchange, m.routing_key, m.headers, convert_to(m.body, 'UTF8')"
        " FROM jsonb_to_recordset(%s::jsonb) AS m(exchange text, routing_key text,"
        " headers jsonb, body text, n int)"
        " ORDER BY m.n RETURNING message_id",
        # One jsonb document, not four arrays: psycopg escapes array elements one by one in
        # Python. ORDER BY n: the ids come back in the order the messages were given.
        (json.dumps([{"exchange": e.exchange, "routing_key": e.routing_key,
                      "headers": e.headers, "body": e.body.decode("utf-8"), "n": i}
                     for i, e in enumerate(envelopes)]),),
    ).fetchall()
    return [int(r[0]) for r in rows]


def relay(conn: psycopg.Connection, publisher: BatchPublisher,
          message_ids: Sequence[int] | None = None, limit: int = RELAY_CHUNK) -> int:
    """Publish waiting messages (these ids, or the oldest `limit`) and delete them once the
    broker confirmed them; return how many were published.

    Raises the publisher's PublishError (the transaction rolls back: the rows stay for the next
    relay) or psycopg.Error. Rows another relay holds are skipped, not waited for.
    """
    if message_ids is not None and not message_ids:
        return 0
    unroutable: UnroutableError | None = None
    with conn.transaction():
        # The delete is not waited on for the disk: lost in a crash, it only means the rows are
        # published again, and a second copy is never delivered twice (see the module doc).
        conn.execute("SET LOCAL synchronous_commit TO off")
        rows = conn.execute(
            "DELETE FROM broker_outbox WHERE message_id IN ("
            "  SELECT message_id FROM broker_outbox"
            "   WHERE %(ids)s::bigint[] IS NULL OR message_id = ANY(%(ids)s::bigint[])"
            "   ORDER BY message_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " RETURNING message_id, exchange, routing_key, headers, body",
            {"ids": list(message_ids) if message_ids is not None else None, "limit": limit},
        ).fetchall()
        if not rows:
            return 0
        rows.sort(key=lambda r: r[0])  # RETURNING has no order; the table's order is FIFO
        try:
            # Each message names its row, so that one the broker could not route is known.
            publisher.publish([Envelope(r[1], r[2], {**r[3], "x-outbox-id": r[0]}, bytes(r[4]))
                               for r in rows])
        except UnroutableError as exc:
            # The others are queued (their deletion commits): the returned rows are put back,
            # to be tried again once the topology is declared again. One that can never route
            # stays, and shows as backlog. Any other PublishError rolls everything back.
            unroutable = exc
            kept = [r for r in rows if r[0] in exc.outbox_ids]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO broker_outbox (message_id, exchange, routing_key, headers, body)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [(r[0], r[1], r[2], Jsonb(r[3]), r[4]) for r in kept])
    if unroutable is not None:
        raise unroutable
    return len(rows)


def backlog(conn: psycopg.Connection) -> tuple[int, float]:
    """(messages waiting, age in seconds of the oldest): what the console and metrics show."""
    row = conn.execute(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)"
        " FROM broker_outbox").fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)
