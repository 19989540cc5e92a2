"""Provider events: what happened to a message after the provider accepted it.

A channel's status after `sent` (README "Delivery truth"):

    sent ──▶ delivered ──▶ complained
      │          │
      └──────────┴──▶ bounced | undelivered

`TRANSITIONS` is the whole state machine. Events are applied in any order and any number of
times: an event already recorded changes nothing (its id is the key), and an event whose status
may not follow the delivery's current one is kept in the log but moves nothing (a late
`delivered` never overwrites `bounced`). Only a delivery the provider accepted (`sent` or later)
moves at all. An event that says the address is bad (a hard bounce, a spam report) puts it on
the suppression list in the same transaction (`persistence/suppressions.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from clarion.persistence import suppressions
from clarion.persistence.notifications import FALLBACK_AFTER, derive_status, release_fallbacks
from clarion.persistence.suppressions import Suppression

# status → the statuses an event may move it to
TRANSITIONS: dict[str, frozenset[str]] = {
    "sent": frozenset({"delivered", "bounced", "undelivered", "complained"}),
    "delivered": frozenset({"complained", "bounced"}),  # a spam report, an asynchronous bounce
    "bounced": frozenset(),
    "undelivered": frozenset(),
    "complained": frozenset(),
}


def allowed(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    event_id: str  # unique per provider: "sendgrid:<sg_event_id>"
    provider: str
    notification_id: str
    channel: str
    event: str
    status: str | None  # the delivery status it implies; None: logged only (deferred)
    occurred_at: float  # epoch seconds
    detail: dict[str, Any] = field(default_factory=dict)
    # The suppression it calls for (README "Suppression list"): hard_bounce, invalid_address,
    # spam_report, unsubscribed; None: none. `address`: the one it is about (None: the
    # delivery's recipient).
    suppress: str | None = None
    address: str | None = None
    # The provider's id of the message it is about (Twilio's MessageSid): an event about
    # another attempt's message (one that timed out, then went again) moves nothing.
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    recorded: int  # new events (the others were seen before)
    moved: int  # deliveries whose status changed
    unknown: int  # events about no delivery Clarion made
    suppressed: int = 0  # addresses newly put on the suppression list


def record(conn: psycopg.Connection, events: Sequence[ProviderEvent]) -> Applied:
    """Keep the new events and move each delivery as far as they allow, in one transaction."""
    if not events:
        return Applied(0, 0, 0)
    with conn.transaction(), conn.cursor() as cur:
        # Locked: events about one delivery recorded at once on two hosts (each runs an events
        # actor) must move it one after the other, each from the status the other left.
        rows = cur.execute(
            "SELECT notification_id::text, channel, status, recipient, provider_message_id"
            " FROM deliveries"
            " WHERE notification_id = ANY(%s::uuid[]) ORDER BY notification_id, channel"
            " FOR UPDATE",
            (sorted({e.notification_id for e in events}),)).fetchall()
        status_of = {(str(r[0]), str(r[1])): str(r[2]) for r in rows}
        recipient_of = {(str(r[0]), str(r[1])): r[3] for r in rows}
        message_of = {(str(r[0]), str(r[1])): r[4] for r in rows}
        ours = [e for e in events if (e.notification_id, e.channel) in status_of]
        new_ids = {str(r[0]) for r in cur.execute(
            "INSERT INTO provider_events (event_id, provider, notification_id, channel, event,"
            " status, occurred_at, detail)"
            " SELECT e.id, e.provider, e.notification_id, e.channel, e.event, e.status,"
            "        to_timestamp(e.at), e.detail"
            " FROM jsonb_to_recordset(%s::jsonb) AS e(id text, provider text, notification_id uuid,"
            "      channel text, event text, status text, at float8, detail jsonb)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            (json.dumps([{"id": e.event_id, "provider": e.provider,
                          "notification_id": e.notification_id, "channel": e.channel,
                          "event": e.event, "status": e.status, "at": e.occurred_at,
                          "detail": e.detail} for e in ours]),)).fetchall()}
        moved: dict[tuple[str, str], str] = {}
        # Oldest first, so that a run of events in one request ends where the provider did.
        for e in sorted(ours, key=lambda e: e.occurred_at):
            key = (e.notification_id, e.channel)
            current = moved.get(key, status_of[key])
            if e.message_id and message_of[key] and e.message_id != message_of[key]:
                continue  # about another attempt's message: kept, moves nothing
            if e.event_id in new_ids and e.status and allowed(current, e.status):
                moved[key] = e.status
        # A fallback released here waits in the outbox for the Publisher's sweep (a second).
        _move(cur, moved)
        if moved:
            derive_status(cur, sorted({n for n, _ in moved}))
        added = suppressions.add(cur, [
            Suppression(e.channel, address, e.suppress, e.event_id, f"provider:{e.provider}",
                        e.notification_id)
            for e in ours if e.event_id in new_ids and e.suppress
            and (address := e.address or recipient_of[(e.notification_id, e.channel)])])
    return Applied(len(new_ids), len(moved), len(events) - len(ours), len(added))


def apply_stored(cur: psycopg.Cursor[Any], sent: Sequence[tuple[str, str]]) -> list[int]:
    """Apply the events that arrived before these deliveries were recorded as `sent` (in the
    caller's transaction, the one that records them). A provider can report a delivery, or a
    bounce, before the delivery actor has committed the provider's acceptance; such an event
    is kept but moves nothing when it arrives, and moves the delivery now. Returns the outbox
    ids of fallbacks this released."""
    if not sent:
        return []
    rows = cur.execute(
        "SELECT e.notification_id::text, e.channel, e.status FROM provider_events AS e"
        " JOIN unnest(%s::uuid[], %s::text[]) AS s(notification_id, channel)"
        "   ON (e.notification_id, e.channel) = (s.notification_id, s.channel)"
        " JOIN deliveries AS d"
        "   ON (d.notification_id, d.channel) = (e.notification_id, e.channel)"
        " WHERE e.status IS NOT NULL"
        # not about another attempt's message (Twilio names it)
        "   AND (e.detail->>'MessageSid' IS NULL OR d.provider_message_id IS NULL"
        "        OR e.detail->>'MessageSid' = d.provider_message_id)"
        " ORDER BY e.occurred_at, e.received_at",
        ([n for n, _ in sent], [c for _, c in sent])).fetchall()
    moved: dict[tuple[str, str], str] = {}
    for notification_id, channel, status in rows:
        key = (str(notification_id), str(channel))
        if allowed(moved.get(key, "sent"), str(status)):
            moved[key] = str(status)
    return _move(cur, moved)


def _move(cur: psycopg.Cursor[Any], moved: dict[tuple[str, str], str]) -> list[int]:
    """Set these deliveries' statuses (one statement), and release the fallback of each
    notification whose email or SMS bounced or was not delivered. Returns the outbox ids."""
    if not moved:
        return []
    cur.execute(
        "UPDATE deliveries AS d SET status = m.status"
        " FROM jsonb_to_recordset(%s::jsonb) AS m(notification_id uuid, channel text,"
        "      status text)"
        " WHERE (d.notification_id, d.channel) = (m.notification_id, m.channel)",
        (json.dumps([{"notification_id": n, "channel": c, "status": status}
                     for (n, c), status in moved.items()]),))
    return release_fallbacks(cur, sorted({n for (n, _), status in moved.items()
                                          if status in FALLBACK_AFTER}))
