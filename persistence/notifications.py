"""Notifications, their per-channel deliveries and every delivery attempt.

The Gateway writes a whole batch in one transaction; delivery actors record a run of outcomes in
one transaction. A notification's status is derived from its deliveries in SQL, in the same
transaction that changes them, so it can never disagree with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from clarion.persistence import broker_outbox, suppressions
from clarion.persistence.broker import Envelope
from clarion.persistence.delivery_message import DeliveryMessage
from clarion.persistence.suppressions import Suppression

# Notification status, derived from its deliveries:
#   queued          some channel is still on its way (queued, or retrying after a passing failure)
#   scheduled       nothing on its way yet: held for `send_at` or the user's quiet hours
#   cancelled       every channel that was not skipped was cancelled while scheduled
#   delivered       every channel that was not skipped was delivered, as its provider told us
#   sent            every channel that was not skipped went out (the provider accepted it;
#                   delivered, or complained about: it arrived)
#   failed          no channel went out, or each that did bounced or was not delivered
#   partially_sent  some channels went out, others failed
# A fallback delivery on `standby` counts for nothing until it is released.
_DERIVE_STATUS = """
UPDATE notifications AS n
   SET status = d.status, updated_at = now()
  FROM (SELECT notification_id,
               CASE WHEN bool_or(status IN ('queued', 'retrying')) THEN 'queued'
                    WHEN bool_or(status = 'scheduled') THEN 'scheduled'
                    WHEN bool_and(status IN ('cancelled', 'skipped'))
                         AND bool_or(status = 'cancelled') THEN 'cancelled'
                    WHEN bool_and(status IN ('delivered', 'skipped'))
                         AND bool_or(status = 'delivered') THEN 'delivered'
                    WHEN bool_and(status IN ('sent', 'delivered', 'complained', 'skipped'))
                         AND bool_or(status IN ('sent', 'delivered', 'complained')) THEN 'sent'
                    WHEN bool_or(status IN ('sent', 'delivered', 'complained'))
                         THEN 'partially_sent'
                    ELSE 'failed' END AS status
          FROM deliveries WHERE notification_id = ANY(%s) AND status <> 'standby'
         GROUP BY notification_id) AS d
 WHERE n.notification_id = d.notification_id
"""


def derive_status(cur: psycopg.Cursor[Any] | psycopg.Connection[Any],
                  notification_ids: Sequence[str]) -> None:
    """Set these notifications' status from their deliveries' (in the caller's transaction)."""
    cur.execute(_DERIVE_STATUS, (list(notification_ids),))


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
    created_by: str | None = None  # the principal that asked for it
    # The 202's data, kept for a request with an idempotency key: a replay answered from the
    # database then says exactly what the first answer said.
    accepted_reply: dict[str, Any] | None = None
    messages: tuple[Envelope, ...] = ()  # its broker messages, for the outbox

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
    messages: tuple[Envelope, ...] = ()  # what to publish: the retry, or the DLQ copy
    skipped: bool = False  # not sent at all: the recipient is suppressed (error_code says so)
    permanent: bool = False  # refused for good by the provider (no retry can help)
    # The recipient's address to put on the suppression list, and why (Twilio's 21610: the
    # number replied STOP).
    suppress: tuple[str, str] | None = None

    @property
    def delivery_status(self) -> str:
        if self.skipped:
            return "skipped"
        if self.ok:
            return "sent"
        return "retrying" if self.retry_in is not None else "failed"


@dataclass(frozen=True, slots=True)
class Inserted:
    """What `insert_batch` wrote: the notifications (by id) and their outbox messages."""

    notification_ids: frozenset[str]
    outbox_ids: tuple[int, ...]


# One statement, so one round trip and its own transaction: the notifications, then only the
# deliveries and outbox messages of those actually inserted (ON CONFLICT left the others out).
# The deliveries' foreign key is checked at the end of the statement, when the notifications
# the first part inserted are there. The rows travel as one JSON document: one json.dumps in C
# and one string parameter, where arrays of text, uuid and jsonb cost psycopg a Python-level
# escape per element (py-spy: nearly half the Gateway's time under load); as jsonb, parsed once
# (as json, each `->` parsed the whole text again).
_INSERT_BATCH = """
WITH doc AS (SELECT %s::jsonb AS doc),
notification AS (
    INSERT INTO notifications (notification_id, user_id, template_key, template_version,
                               language, status, priority, request_id, idempotency_key,
                               message_data, request_fingerprint, hops, accepted_reply,
                               created_by)
    SELECT n.id, n.user_id, n.template_key, n.version, n.language, n.status, n.priority,
           n.request_id, n.idempotency_key, n.data, n.fingerprint, n.hops, n.reply, n.created_by
      FROM doc, jsonb_to_recordset(doc.doc -> 'n') AS n(
           id uuid, user_id text, template_key text, version int, language text, status text,
           priority text, request_id text, idempotency_key text, data jsonb, fingerprint text,
           hops jsonb, reply jsonb, created_by text)
    ON CONFLICT DO NOTHING
    RETURNING notification_id),
delivery AS (
    INSERT INTO deliveries (notification_id, channel, status, recipient, content, error_code,
                            error, next_attempt_at, pending_message, finished_at)
    SELECT d.id, d.channel, d.status, d.recipient, d.content, d.error_code, d.error,
           d.next_at, d.pending, CASE WHEN d.status = 'skipped' THEN now() END
      FROM doc, jsonb_to_recordset(doc.doc -> 'd') AS d(
           id uuid, channel text, status text, recipient text, content jsonb,
           error_code text, error text, next_at timestamptz, pending jsonb)
     WHERE d.id IN (SELECT notification_id FROM notification)),
message AS (
    INSERT INTO broker_outbox (exchange, routing_key, headers, body)
    SELECT m.exchange, m.routing_key, m.headers, convert_to(m.body, 'UTF8')
      FROM doc, jsonb_to_recordset(doc.doc -> 'm') AS m(
           id uuid, exchange text, routing_key text, headers jsonb, body text, n int)
     WHERE m.id IN (SELECT notification_id FROM notification)
     ORDER BY m.n
    RETURNING message_id)
SELECT notification_id::text, NULL::bigint FROM notification
UNION ALL SELECT NULL, message_id FROM message
"""


def insert_batch(conn: psycopg.Connection, batch: Sequence[NewNotification]) -> Inserted:
    """Write new notifications, their deliveries and their broker messages (the transactional
    outbox) in one statement, so in one transaction: once it commits, each is as good as queued.

    A notification whose id or idempotency key is taken already is left out, alone, and not in
    the result: the caller answers it from what is stored (`existing`). (Its id: an earlier try
    of this very batch committed although its commit was not acknowledged. Its key: another
    request with the key got there first, or is committing now; ON CONFLICT waits for that one.)
    """
    if not batch:
        return Inserted(frozenset(), ())
    doc = {
        "n": [{"id": n.notification_id, "user_id": n.user_id, "template_key": n.template_key,
               "version": n.template_version, "language": n.language, "status": n.status,
               "priority": n.priority, "request_id": n.request_id,
               "idempotency_key": n.idempotency_key, "data": n.message_data,
               "fingerprint": n.request_fingerprint, "hops": n.hops,
               "reply": n.accepted_reply, "created_by": n.created_by} for n in batch],
        "d": [{"id": n.notification_id, "channel": d.channel, "status": d.status,
               "recipient": d.recipient, "content": d.content, "error_code": d.error_code,
               "error": d.error,
               "next_at": d.scheduled_for.isoformat() if d.scheduled_for else None,
               "pending": d.pending_message} for n in batch for d in n.deliveries],
        "m": [{"id": n.notification_id, "exchange": m.exchange, "routing_key": m.routing_key,
               "headers": m.headers, "body": m.body.decode("utf-8"), "n": i}
              for i, (n, m) in enumerate((n, m) for n in batch for m in n.messages)],
    }
    rows = conn.execute(_INSERT_BATCH, (json.dumps(doc, separators=(",", ":"), default=str),)
                        ).fetchall()
    return Inserted(frozenset(r[0] for r in rows if r[0] is not None),
                    tuple(sorted(r[1] for r in rows if r[1] is not None)))


def _jsonb_or_null(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def existing(conn: psycopg.Connection, notification_ids: Iterable[str],
             idempotency_keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Stored notifications with these ids or idempotency keys, by id and by key (both keys
    in one dict: ids are UUIDs and keys carry a principal prefix, so they never meet)."""
    rows = conn.execute(
        "SELECT notification_id::text, idempotency_key, request_fingerprint, status, language,"
        " template_version, request_id, accepted_reply FROM notifications"
        " WHERE notification_id = ANY(%s::uuid[]) OR idempotency_key = ANY(%s::text[])",
        (list(notification_ids), list(idempotency_keys)),
    ).fetchall()
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        record = {"notification_id": r[0], "idempotency_key": r[1], "fingerprint": r[2],
                  "status": r[3], "language": r[4], "template_version": r[5],
                  "request_id": r[6], "accepted_reply": r[7]}
        found[r[0]] = record
        if r[1] is not None:
            found[r[1]] = record
    return found


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


@dataclass(frozen=True, slots=True)
class Claim:
    """One message a delivery actor wants to send: its delivery and attempt number."""

    notification_id: str
    channel: str
    attempt: int


# What claiming found, per message:
SEND = "send"  # claimed for us: call the provider
DONE = "done"  # recorded already, or not waiting for delivery (sent, failed, gone): ack it
HELD = "held"  # another process claimed this attempt moments ago and may be sending it now


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Claimed for us, but the recipient is on the suppression list: skip it, no provider call."""

    reason: str  # hard_bounce, spam_report, ...


def claim_attempts(conn: psycopg.Connection, owner: str, claims: Sequence[Claim],
                   lease_seconds: float) -> dict[Claim, str | Suppressed]:
    """Claim attempts before calling the provider, in one statement: SEND, DONE, HELD or
    Suppressed (claimed, but the recipient is on the suppression list) each.

    An attempt is claimed once. A second copy of the message (the outbox published it twice; a
    redelivery after the broker lost our connection) finds it claimed and is not sent again:
    DONE once its outcome is recorded, HELD while the claim is fresh. A claim older than
    `lease_seconds` with no outcome belongs to a process that died mid-call: the attempt is
    claimed again and sent again (the one duplicate physics allows, README "Delivery
    guarantees"). `owner` may re-claim its own claims.
    """
    if not claims:
        return {}
    rows = conn.execute(
        "WITH wanted AS ("
        "  SELECT * FROM jsonb_to_recordset(%(claims)s::jsonb)"
        "  AS w(notification_id uuid, channel text, attempt int)),"
        " claimed AS ("
        "  UPDATE deliveries AS d SET claimed_attempt = w.attempt, claimed_by = %(owner)s,"
        "         claimed_at = now()"
        "    FROM wanted AS w"
        "   WHERE d.notification_id = w.notification_id AND d.channel = w.channel"
        "     AND d.status IN ('queued', 'retrying', 'scheduled') AND d.attempts < w.attempt"
        "     AND (d.claimed_attempt < w.attempt OR d.claimed_by = %(owner)s"
        "          OR d.claimed_at < now() - make_interval(secs => %(lease)s))"
        "  RETURNING d.notification_id, d.channel, w.attempt)"
        " SELECT w.notification_id::text, w.channel, w.attempt,"
        "        c.notification_id IS NOT NULL AS mine,"
        "        d.status IN ('queued', 'retrying', 'scheduled') AND d.attempts < w.attempt"
        "          AND d.claimed_attempt <= w.attempt AS open,"
        "        s.reason AS suppressed"
        "   FROM wanted AS w"
        "   LEFT JOIN claimed AS c ON (c.notification_id, c.channel, c.attempt)"
        "                           = (w.notification_id, w.channel, w.attempt)"
        "   LEFT JOIN deliveries AS d ON (d.notification_id, d.channel)"
        "                              = (w.notification_id, w.channel)"
        # The suppression list, read in the same statement: a suppressed address is claimed
        # and then skipped, never sent (README "Suppression list").
        "   LEFT JOIN suppressions AS s ON s.channel = w.channel AND s.address ="
        "        CASE WHEN w.channel = 'email' THEN lower(d.recipient) ELSE d.recipient END",
        # One jsonb document, not three arrays: psycopg escapes array elements one by one in
        # Python (see insert_batch).
        {"claims": json.dumps([{"notification_id": c.notification_id, "channel": c.channel,
                                "attempt": c.attempt} for c in claims]),
         "owner": owner, "lease": lease_seconds},
    ).fetchall()
    # The LEFT JOIN reads the rows as they were before the UPDATE (one snapshot): an attempt
    # still open there and not claimed by us is someone else's fresh claim.
    verdicts: dict[Claim, str | Suppressed] = {}
    for notification_id, channel, attempt, mine, still_open, suppressed in rows:
        claim = Claim(notification_id, channel, attempt)
        if mine and suppressed:
            verdicts[claim] = Suppressed(str(suppressed))
        else:
            verdicts[claim] = SEND if mine else (HELD if still_open else DONE)
    return verdicts


def release_due(conn: psycopg.Connection, limit: int = 500) -> list[int]:
    """Queue the scheduled deliveries whose time has come: in one transaction, mark them queued
    and put their stored messages in the outbox. Returns the outbox ids to relay."""
    with conn.transaction(), conn.cursor() as cur:
        rows = cur.execute(
            "SELECT notification_id::text, channel, pending_message FROM deliveries"
            " WHERE status = 'scheduled' AND next_attempt_at <= now()"
            " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        if not rows:
            return []
        cur.execute(
            "UPDATE deliveries SET status = 'queued', next_attempt_at = NULL,"
            " pending_message = NULL"
            " WHERE (notification_id, channel) IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))",
            ([r[0] for r in rows], [r[1] for r in rows]),
        )
        derive_status(cur, sorted({r[0] for r in rows}))
        return broker_outbox.add(cur, [
            DeliveryMessage.from_body(m["body"]).to_amqp() for _, _, m in rows])


# What, happening to an email or SMS, sends the notification's fallback on its way.
FALLBACK_AFTER = ("bounced", "undelivered")


def release_fallbacks(cur: psycopg.Cursor[Any] | psycopg.Connection[Any],
                      notification_ids: Sequence[str]) -> list[int]:
    """Queue these notifications' fallback deliveries still on standby (in the caller's
    transaction): mark them queued and put their kept messages in the outbox. Returns the
    outbox ids to relay. A fallback goes once: a second call finds nothing on standby."""
    if not notification_ids:
        return []
    rows = cur.execute(
        "WITH kept AS (SELECT notification_id, channel, pending_message FROM deliveries"
        "              WHERE notification_id = ANY(%s::uuid[]) AND status = 'standby'"
        "              FOR UPDATE)"
        " UPDATE deliveries AS d SET status = 'queued', pending_message = NULL FROM kept"
        " WHERE (d.notification_id, d.channel) = (kept.notification_id, kept.channel)"
        " RETURNING kept.pending_message",
        (list(notification_ids),)).fetchall()
    return broker_outbox.add(cur, [DeliveryMessage.from_body(r[0]["body"]).to_amqp()
                                   for r in rows if r[0]]) if rows else []


def next_due(conn: psycopg.Connection) -> datetime | None:
    """When the first scheduled delivery falls due (the partial index answers it)."""
    row = conn.execute("SELECT min(next_attempt_at) FROM deliveries"
                       " WHERE status = 'scheduled'").fetchone()
    return row[0] if row else None


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What `DELETE /v1/notifications/{id}` found: the notification's status after it, and the
    channels it cancelled (none: nothing was still scheduled)."""

    notification_id: str
    status: str
    cancelled: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"notification_id": self.notification_id, "status": self.status,
                "cancelled_channels": list(self.cancelled)}


def cancel_scheduled(conn: psycopg.Connection, notification_id: str,
                     created_by: str | None = None) -> Cancellation | None:
    """Cancel the deliveries of a notification still scheduled; None if there is no such
    notification (or, with `created_by`, none of that principal's).

    The rows are locked as `release_due` locks them: whichever comes first wins a delivery,
    so a delivery is either released (and sent) or cancelled, never both."""
    with conn.transaction(), conn.cursor() as cur:
        found = cur.execute(
            "SELECT status FROM notifications WHERE notification_id = %s::uuid"
            " AND (%s::text IS NULL OR created_by = %s::text)",
            (notification_id, created_by, created_by)).fetchone()
        if found is None:
            return None
        rows = cur.execute(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL,"
            " pending_message = NULL, finished_at = now(), error_code = 'cancelled',"
            " error = 'cancelled before it was due'"
            " WHERE notification_id = %s::uuid AND status = 'scheduled'"
            " RETURNING channel", (notification_id,)).fetchall()
        if not rows:
            return Cancellation(notification_id, str(found[0]), ())
        derive_status(cur, [notification_id])
        status = cur.execute("SELECT status FROM notifications WHERE notification_id = %s::uuid",
                             (notification_id,)).fetchone()
        assert status is not None
        return Cancellation(notification_id, str(status[0]), tuple(sorted(r[0] for r in rows)))


def reset_for_replay(conn: psycopg.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """Put failed deliveries back to `queued` with no attempts spent and no claim (their log
    stays), for a replayed dead letter to start again at attempt 1."""
    if not pairs:
        return
    conn.execute(
        "UPDATE deliveries SET status = 'queued', attempts = 0, error_code = NULL, error = NULL,"
        " finished_at = NULL, next_attempt_at = NULL, claimed_attempt = 0, claimed_by = NULL,"
        " claimed_at = NULL"
        " WHERE (notification_id, channel) IN (SELECT * FROM unnest(%s::uuid[], %s::text[]))",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    derive_status(conn, sorted({p[0] for p in pairs}))


def record_outcomes(conn: psycopg.Connection, outcomes: Sequence[Outcome]) -> list[int]:
    """Record a run of attempts in one transaction: each attempt's log row, its delivery's new
    state, its dead letter, its broker message (the retry, or the DLQ copy) in the outbox, and
    the notifications' derived status. Returns the outbox ids to relay.

    Idempotent per attempt: an attempt already recorded (its delivery is past it) is skipped
    whole, so recording a run again writes nothing twice and queues no second retry.
    """
    if not outcomes:
        return []
    outcomes = list({(o.notification_id, o.channel, o.attempt): o for o in outcomes}.values())
    with conn.transaction(), conn.cursor() as cur:
        applied = cur.execute(
            # attempts = the attempt's number: the delivery is past this attempt from now on.
            "UPDATE deliveries AS d SET status = o.status, attempts = o.attempt,"
            " provider = o.provider, provider_message_id = o.message_id,"
            " error_code = o.error_code, error = o.error,"
            " next_attempt_at = now() + make_interval(secs => o.retry_in),"
            " finished_at = CASE WHEN o.status = 'retrying' THEN NULL ELSE now() END"
            " FROM jsonb_to_recordset(%s::jsonb) AS o(notification_id uuid, channel text,"
            " attempt int, status text, provider text, message_id text, error_code text,"
            " error text, retry_in float8)"
            " WHERE d.notification_id = o.notification_id AND d.channel = o.channel"
            " AND d.attempts < o.attempt"
            " RETURNING d.notification_id::text, d.channel, o.attempt",
            # One jsonb document, not nine arrays (see insert_batch).
            (json.dumps([{"notification_id": o.notification_id, "channel": o.channel,
                          "attempt": o.attempt, "status": o.delivery_status,
                          "provider": o.provider, "message_id": o.provider_message_id,
                          "error_code": o.error_code, "error": o.error,
                          "retry_in": o.retry_in} for o in outcomes]),),
        ).fetchall()
        done = {(r[0], r[1], r[2]) for r in applied}
        outcomes = [o for o in outcomes if (o.notification_id, o.channel, o.attempt) in done]
        if not outcomes:
            return []
        cur.execute(
            "INSERT INTO delivery_attempts (notification_id, channel, attempt, outcome, provider,"
            " provider_message_id, error_code, error, started_at)"
            " SELECT a.notification_id, a.channel, a.attempt, a.outcome, a.provider,"
            " a.message_id, a.error_code, a.error, to_timestamp(a.started_at)"
            " FROM jsonb_to_recordset(%s::jsonb) AS a(notification_id uuid, channel text,"
            " attempt int, outcome text, provider text, message_id text, error_code text,"
            " error text, started_at float8)",
            (json.dumps([{"notification_id": o.notification_id, "channel": o.channel,
                          "attempt": o.attempt,
                          "outcome": o.delivery_status if o.skipped or o.ok else "failed",
                          "provider": o.provider, "message_id": o.provider_message_id,
                          "error_code": o.error_code, "error": o.error,
                          "started_at": o.started_at} for o in outcomes]),),
        )
        dead = [o for o in outcomes if o.dead_message is not None]
        if dead:
            cur.executemany(
                "INSERT INTO dead_letters (notification_id, channel, message, attempts,"
                " error_code, error) VALUES (%s, %s, %s, %s, %s, %s)",
                [(o.notification_id, o.channel, Jsonb(o.dead_message), o.attempt, o.error_code,
                  o.error) for o in dead],
            )
        suppressions.add(cur, [
            Suppression(o.channel, o.suppress[0], o.suppress[1], f"{o.provider}:{o.error_code}",
                        f"provider:{o.provider}", o.notification_id)
            for o in outcomes if o.suppress])
        outbox_ids = broker_outbox.add(cur, [m for o in outcomes for m in o.messages])
        # A suppressed recipient, or one the provider refused for good: the notification's
        # fallback (if it has one) goes instead.
        outbox_ids += release_fallbacks(cur, sorted({
            o.notification_id for o in outcomes
            if o.skipped or o.suppress or (o.permanent and o.retry_in is None)}))
        # Events the provider sent before this commit (a fast webhook) move them now.
        from clarion.persistence import provider_events  # (it imports this module)
        outbox_ids += provider_events.apply_stored(
            cur, [(o.notification_id, o.channel) for o in outcomes if o.ok])
        ids = sorted({o.notification_id for o in outcomes})
        # Each channel is recorded by its own actor. Without this lock two channels finishing
        # at once would each derive the status before seeing the other's commit, and leave it
        # "queued" for ever: the second waits here until the first has committed, and its
        # UPDATE below then reads the first one's deliveries. Taken only now, so that the
        # writes above never wait for the other channel; in id order, so no deadlock.
        cur.execute(
            "SELECT 1 FROM notifications WHERE notification_id = ANY(%s)"
            " ORDER BY notification_id FOR NO KEY UPDATE",
            (ids,),
        )
        derive_status(cur, ids)
    return outbox_ids
