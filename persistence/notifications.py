"""Notifications, their per-channel deliveries and every delivery attempt.

The Gateway writes a whole batch in one transaction; delivery actors record a run of outcomes in
one transaction. A notification's status is derived from its deliveries in SQL, in the same
transaction that changes them, so it can never disagree with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# Notification status, derived from its deliveries:
#   queued          some channel is still on its way (queued, or retrying after a passing failure)
#   scheduled       nothing on its way yet: held for the user's quiet hours
#   sent            every channel that was not skipped was delivered
#   failed          no channel was delivered
#   partially_sent  some channels delivered, others failed
_DERIVE_STATUS = """
UPDATE notifications AS n
   SET status = d.status, updated_at = now()
  FROM (SELECT notification_id,
               CASE WHEN bool_or(status IN ('queued', 'retrying')) THEN 'queued'
                    WHEN bool_or(status = 'scheduled') THEN 'scheduled'
                    WHEN bool_and(status IN ('sent', 'skipped')) AND bool_or(status = 'sent')
                         THEN 'sent'
                    WHEN bool_or(status = 'sent') THEN 'partially_sent'
                    ELSE 'failed' END AS status
          FROM deliveries WHERE notification_id = ANY(%s) GROUP BY notification_id) AS d
 WHERE n.notification_id = d.notification_id
"""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    channel: str
    status: str  # "queued"; "scheduled" (quiet hours); or "skipped" with a reason
    recipient: str | None
    content: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None
    scheduled_for: datetime | None = None
    pending_message: dict[str, Any] | None = None  # published when it falls due


@dataclass(frozen=True, slots=True)
class NewNotification:
    notification_id: str
    user_id: str
    template_key: str
    template_version: int
    language: str
    priority: str
    request_id: str | None
    idempotency_key: str | None
    message_data: dict[str, Any]
    deliveries: tuple[NewDelivery, ...]
    request_fingerprint: str | None = None
    hops: dict[str, float] = field(default_factory=dict)  # hop → epoch seconds

    @property
    def status(self) -> str:
        statuses = {d.status for d in self.deliveries}
        if "queued" in statuses:
            return "queued"
        return "scheduled" if "scheduled" in statuses else "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one delivery attempt ended, as a delivery actor reports it.

    A failed attempt is either retried (`retry_in` seconds later) or final: then `dead_message`
    (the broker message) is kept as a dead letter for operators.
    """

    notification_id: str
    channel: str
    attempt: int
    ok: bool
    provider: str
    started_at: float
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    retry_in: float | None = None
    dead_message: dict[str, Any] | None = None

    @property
    def delivery_status(self) -> str:
        if self.ok:
            return "sent"
        return "retrying" if self.retry_in is not None else "failed"


class DuplicateIdempotencyKey(Exception):
    """A notification with this idempotency key already exists."""


def insert_batch(conn: psycopg.Connection, batch: Sequence[NewNotification]) -> None:
    """Write a batch of new notifications and their deliveries in one transaction."""
    if not batch:
        return
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO notifications (notification_id, user_id, template_key,"
                " template_version, language, status, priority, request_id, idempotency_key,"
                " message_data, request_fingerprint, hops)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        n.notification_id, n.user_id, n.template_key, n.template_version,
                        n.language, n.status, n.priority, n.request_id, n.idempotency_key,
                        Jsonb(n.message_data), n.request_fingerprint, Jsonb(n.hops),
                    )
                    for n in batch
                ],
            )
            cur.executemany(
                "INSERT INTO deliveries (notification_id, channel, status, recipient, content,"
                " error_code, error, next_attempt_at, pending_message, finished_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " CASE WHEN %s = 'skipped' THEN now() END)",
                [
                    (
                        n.notification_id, d.channel, d.status, d.recipient, Jsonb(d.content),
                        d.error_code, d.error, d.scheduled_for,
                        Jsonb(d.pending_message) if d.pending_message is not None else None,
                        d.status,
                    )
                    for n in batch
                    for d in n.deliveries
                ],
            )
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "notifications_idempotency_key_key":
            raise DuplicateIdempotencyKey() from None
        raise


def record_hops(conn: psycopg.Connection, hop: str,
                timings: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Note when each notification passed a hop; return the timings not written because the
    notification's row was locked (a delivery actor recording it): the caller tries them later.

    Never waits: a timing is diagnostic, and waiting on delivery actors' row locks took most of
    the Gateway's time under load (py-spy). Nor does its commit wait for the disk
    (`synchronous_commit off`: a crash can lose the last timings, never a notification)."""
    if not timings:
        return []
    ids = [t[0] for t in timings]
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit TO off")
        written = conn.execute(
            "UPDATE notifications AS n"
            " SET hops = n.hops || jsonb_build_object(%s::text, t.at)"
            " FROM unnest(%s::uuid[], %s::float8[]) AS t(id, at)"
            " WHERE n.notification_id = t.id AND n.notification_id IN ("
            "   SELECT notification_id FROM notifications WHERE notification_id = ANY(%s::uuid[])"
            "   FOR NO KEY UPDATE SKIP LOCKED)"
            " RETURNING n.notification_id::text",
            (hop, ids, [t[1] for t in timings], ids),
        ).fetchall()
    done = {row[0] for row in written}
    return [t for t in timings if t[0] not in done]


def by_idempotency_keys(conn: psycopg.Connection,
                        keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Existing notifications for these idempotency keys, by key."""
    rows = conn.execute(
        "SELECT idempotency_key, notification_id::text, request_fingerprint, status, language,"
        " template_version, request_id FROM notifications WHERE idempotency_key = ANY(%s)",
        (list(keys),),
    )
    return {
        r[0]: {"notification_id": r[1], "fingerprint": r[2], "status": r[3], "language": r[4],
               "template_version": r[5], "request_id": r[6]}
        for r in rows
    }


def delete(conn: psycopg.Connection, notification_ids: Iterable[str]) -> None:
    """Remove notifications that were never accepted (the broker refused them)."""
    with conn.transaction():
        conn.execute("DELETE FROM notifications WHERE notification_id = ANY(%s)",
                     (list(notification_ids),))


def pending_attempts(conn: psycopg.Connection,
                     keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """For the (notification_id, channel) pairs still waiting for delivery: attempts made so far.

    A delivery actor sends a message only if its pair is here and the message's attempt is
    beyond the attempts recorded. So a message redelivered after a crash between the provider
    call and the ack (its outcome already recorded) does not reach the provider twice, and a
    withdrawn notification (the broker failed its batch, the caller got a 503) has no row.
    """
    pairs = list(keys)
    if not pairs:
        return {}
    rows = conn.execute(
        "SELECT notification_id::text, channel, attempts FROM deliveries"
        " WHERE (notification_id, channel) IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))"
        # 'scheduled' too: a released delivery's message can arrive before its release commits.
        " AND status IN ('queued', 'retrying', 'scheduled')",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    return {(row[0], row[1]): int(row[2]) for row in rows}


def take_due(conn: psycopg.Connection, limit: int = 500) -> list[dict[str, Any]]:
    """Scheduled deliveries whose time has come, marked queued (call inside a transaction, and
    commit it only once their messages are published). Returns their stored messages."""
    rows = conn.execute(
        "SELECT notification_id::text, channel, pending_message FROM deliveries"
        " WHERE status = 'scheduled' AND next_attempt_at <= now()"
        " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    ).fetchall()
    if not rows:
        return []
    conn.execute(
        "UPDATE deliveries SET status = 'queued', next_attempt_at = NULL, pending_message = NULL"
        " WHERE (notification_id, channel) IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))",
        ([r[0] for r in rows], [r[1] for r in rows]),
    )
    conn.execute(_DERIVE_STATUS, (sorted({r[0] for r in rows}),))
    return [r[2] for r in rows]


def reset_for_replay(conn: psycopg.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """Put failed deliveries back to `queued` with no attempts spent (their log stays)."""
    if not pairs:
        return
    conn.execute(
        "UPDATE deliveries SET status = 'queued', attempts = 0, error_code = NULL, error = NULL,"
        " finished_at = NULL, next_attempt_at = NULL"
        " WHERE (notification_id, channel) IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    conn.execute(_DERIVE_STATUS, (sorted({p[0] for p in pairs}),))


def restore_failed(conn: psycopg.Connection,
                   rows: Sequence[tuple[Any, ...]]) -> None:
    """Undo `reset_for_replay`: (notification_id, channel, attempts, error_code, error) each."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deliveries SET status = 'failed', attempts = %s, error_code = %s, error = %s,"
            " finished_at = now() WHERE notification_id = %s AND channel = %s",
            [(r[2], r[3], r[4], r[0], r[1]) for r in rows],
        )
        cur.execute(_DERIVE_STATUS, (sorted({r[0] for r in rows}),))


def record_outcomes(conn: psycopg.Connection, outcomes: Sequence[Outcome]) -> None:
    """Record a run of attempts, update their deliveries and derive the notifications' status."""
    if not outcomes:
        return
    ids = sorted({o.notification_id for o in outcomes})
    with conn.transaction(), conn.cursor() as cur:
        # KEY SHARE: the notifications cannot be deleted under us, yet the other channel's
        # actor, recording the same notifications, is not held up.
        cur.execute(
            "SELECT notification_id::text FROM notifications WHERE notification_id = ANY(%s)"
            " FOR KEY SHARE",
            (ids,),
        )
        # A notification deleted meanwhile has nothing to record against; skipping it keeps
        # one withdrawn notification from blocking the whole run.
        present = {row[0] for row in cur.fetchall()}
        outcomes = [o for o in outcomes if o.notification_id in present]
        if not outcomes:
            return
        cur.executemany(
            "INSERT INTO delivery_attempts (notification_id, channel, attempt, outcome, provider,"
            " provider_message_id, error_code, error, started_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    o.notification_id, o.channel, o.attempt, "sent" if o.ok else "failed",
                    o.provider, o.provider_message_id, o.error_code, o.error,
                    datetime.fromtimestamp(o.started_at, tz=timezone.utc),
                )
                for o in outcomes
            ],
        )
        cur.executemany(
            # attempts = the attempt's number, not +1: recording one twice changes nothing.
            "UPDATE deliveries SET status = %s, attempts = GREATEST(attempts, %s), provider = %s,"
            " provider_message_id = %s, error_code = %s, error = %s,"
            " next_attempt_at = now() + make_interval(secs => %s),"
            " finished_at = CASE WHEN %s = 'retrying' THEN NULL ELSE now() END"
            " WHERE notification_id = %s AND channel = %s",
            [
                (
                    o.delivery_status, o.attempt, o.provider, o.provider_message_id,
                    o.error_code, o.error, o.retry_in, o.delivery_status,
                    o.notification_id, o.channel,
                )
                for o in outcomes
            ],
        )
        dead = [o for o in outcomes if o.dead_message is not None]
        if dead:
            cur.executemany(
                "INSERT INTO dead_letters (notification_id, channel, message, attempts,"
                " error_code, error) VALUES (%s, %s, %s, %s, %s, %s)",
                [(o.notification_id, o.channel, Jsonb(o.dead_message), o.attempt, o.error_code,
                  o.error) for o in dead],
            )
        # Each channel is recorded by its own actor. Without this lock two channels finishing
        # at once would each derive the status before seeing the other's commit, and leave it
        # "queued" for ever: the second waits here until the first has committed, and its
        # UPDATE below then reads the first one's deliveries. Taken only now, so that the
        # writes above never wait for the other channel; in id order, so no deadlock.
        cur.execute(
            "SELECT 1 FROM notifications WHERE notification_id = ANY(%s)"
            " ORDER BY notification_id FOR NO KEY UPDATE",
            (sorted(present),),
        )
        cur.execute(_DERIVE_STATUS, (sorted(present),))
