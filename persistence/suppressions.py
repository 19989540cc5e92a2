"""The suppression list: addresses Clarion no longer sends to (README "Suppression list").

Who writes it:
  - provider events, in the transaction that records them (`provider_events.record`): a hard
    bounce, a drop for an invalid or known-bad address, a spam report;
  - a delivery's outcome, in the transaction that records it (`notifications.record_outcomes`):
    Twilio's 21610, the number replied STOP;
  - operators, through `POST` and `DELETE /v1/suppressions` (the ProviderEvents actor).
Who reads it: delivery actors, when they claim an attempt (`notifications.claim_attempts`): a
suppressed address is skipped before any provider call. Removals are kept for good (who, when,
why).

An address is one row per channel: emails lower-cased, numbers as E.164.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

REASONS = ("hard_bounce", "invalid_address", "spam_report", "unsubscribed", "manual")
CHANNELS = ("email", "sms")


def channel_of(address: str) -> str:
    """Which channel an address belongs to: a number is `+` and digits, anything else email."""
    return "sms" if address.startswith("+") else "email"


def normalized(channel: str, address: str) -> str:
    return address.strip().lower() if channel == "email" else address.strip()


@dataclass(frozen=True, slots=True)
class Suppression:
    channel: str
    address: str
    reason: str
    source: str  # "sendgrid:<event id>", "twilio:21610", "api"
    created_by: str  # "provider:sendgrid", "key:<name>", "console:<subject>"
    notification_id: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "address": normalized(self.channel, self.address),
                "reason": self.reason, "source": self.source, "created_by": self.created_by,
                "notification_id": self.notification_id, "note": self.note}


def add(cur: psycopg.Cursor[Any] | psycopg.Connection[Any],
        entries: Sequence[Suppression]) -> list[tuple[str, str]]:
    """Put addresses on the list (in the caller's transaction); one already there keeps its first
    reason. Returns the (channel, address) pairs that are new."""
    if not entries:
        return []
    rows = cur.execute(
        "INSERT INTO suppressions (channel, address, reason, source, created_by,"
        " notification_id, note)"
        " SELECT s.channel, s.address, s.reason, s.source, s.created_by, s.notification_id,"
        "        s.note"
        " FROM jsonb_to_recordset(%s::jsonb) AS s(channel text, address text, reason text,"
        "      source text, created_by text, notification_id uuid, note text)"
        " ON CONFLICT (channel, address) DO NOTHING RETURNING channel, address",
        (json.dumps([e.to_json() for e in entries]),)).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def remove(conn: psycopg.Connection, channel: str, address: str, removed_by: str,
           why: str) -> dict[str, Any] | None:
    """Take an address off the list and keep the removal; None if it was not on it."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "WITH gone AS (DELETE FROM suppressions WHERE channel = %(channel)s"
            "              AND address = %(address)s RETURNING *)"
            " INSERT INTO suppression_removals (channel, address, reason, source, suppressed_at,"
            "        suppressed_by, removed_by, why)"
            " SELECT channel, address, reason, source, created_at, created_by, %(by)s, %(why)s"
            "   FROM gone"
            " RETURNING removal_id, channel, address, reason, source, suppressed_at,"
            "           suppressed_by, removed_by, why, removed_at",
            {"channel": channel, "address": normalized(channel, address), "by": removed_by,
             "why": why}).fetchone()


def entry(conn: psycopg.Connection, channel: str, address: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM suppressions"
                           " WHERE channel = %s AND address = %s",
                           (channel, normalized(channel, address))).fetchone()


_COLUMNS = ("channel, address, reason, source, notification_id::text, note, created_by,"
            " created_at")
_REMOVAL_COLUMNS = ("removal_id, channel, address, reason, source, suppressed_at, suppressed_by,"
                    " removed_by, why, removed_at")


async def list_entries(conn: AsyncConnection, channel: str | None, reason: str | None,
                       address: str | None, limit: int, offset: int,
                       ) -> tuple[list[dict[str, Any]], int]:
    """The list, newest first, and how many entries match."""
    cur = conn.cursor(row_factory=dict_row)
    where = ("(%(channel)s::text IS NULL OR channel = %(channel)s::text)"
             " AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)"
             " AND (%(address)s::text IS NULL OR address = %(address)s::text)")
    params = {"channel": channel, "reason": reason, "limit": limit, "offset": offset,
              "address": None if address is None
              else normalized(channel or channel_of(address), address)}
    await cur.execute(f"SELECT count(*) AS n FROM suppressions WHERE {where}", params)
    total = (await cur.fetchone() or {"n": 0})["n"]
    await cur.execute(f"SELECT {_COLUMNS} FROM suppressions WHERE {where}"
                      " ORDER BY created_at DESC, address LIMIT %(limit)s OFFSET %(offset)s",
                      params)
    return await cur.fetchall(), int(total)


async def list_removals(conn: AsyncConnection, address: str | None, limit: int, offset: int,
                        ) -> tuple[list[dict[str, Any]], int]:
    """The removals (the audit), newest first: all, or one address's."""
    cur = conn.cursor(row_factory=dict_row)
    where = "(%(address)s::text IS NULL OR address = %(address)s::text)"
    params = {"limit": limit, "offset": offset,
              "address": None if address is None
              else normalized(channel_of(address), address)}
    await cur.execute(f"SELECT count(*) AS n FROM suppression_removals WHERE {where}", params)
    total = (await cur.fetchone() or {"n": 0})["n"]
    await cur.execute(f"SELECT {_REMOVAL_COLUMNS} FROM suppression_removals WHERE {where}"
                      " ORDER BY removal_id DESC LIMIT %(limit)s OFFSET %(offset)s", params)
    return await cur.fetchall(), int(total)
