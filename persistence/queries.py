"""Read-only queries the HTTP layer runs itself, where a read needs no actor (async psycopg)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from clarion.persistence import templates as template_repo
from clarion.persistence import users as user_repo
from clarion.persistence.records import Template, User


async def api_key(conn: AsyncConnection, key_digest: str) -> tuple[int, str, str] | None:
    """(key_id, name, scope) of the live API key whose SHA-256 digest is `key_digest`, or
    None. (The HTTP layer hashes once and remembers answers by digest: persistence/api_keys.py.)"""
    cur = await conn.execute(
        "SELECT key_id, name, scope FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
        (key_digest,),
    )
    row = await cur.fetchone()
    return (int(row[0]), str(row[1]), str(row[2])) if row else None


async def notification(conn: AsyncConnection, notification_id: str,
                       created_by: str | None = None) -> dict[str, Any] | None:
    """A notification with its per-channel deliveries and their attempts; with `created_by`,
    only if that principal created it."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT notification_id::text, user_id, template_key, template_version, language, status,"
        " priority, request_id, created_at, updated_at, hops FROM notifications"
        " WHERE notification_id = %s"
        " AND (%s::text IS NULL OR created_by = %s::text)",
        (notification_id, created_by, created_by),
    )
    found = await cur.fetchone()
    if found is None:
        return None
    await cur.execute(
        "SELECT channel, status, recipient, attempts, provider, provider_message_id, error_code,"
        " error, queued_at, finished_at,"
        " CASE WHEN status = 'scheduled' THEN next_attempt_at END AS scheduled_for"
        " FROM deliveries WHERE notification_id = %s ORDER BY channel",
        (notification_id,),
    )
    deliveries = {row.pop("channel"): {**row, "attempt_log": []} for row in await cur.fetchall()}
    await cur.execute(
        "SELECT channel, attempt, outcome, provider, provider_message_id, error_code, error,"
        " started_at, finished_at FROM delivery_attempts WHERE notification_id = %s"
        " ORDER BY attempt_id",
        (notification_id,),
    )
    for attempt in await cur.fetchall():
        deliveries[attempt.pop("channel")]["attempt_log"].append(attempt)
    # What the provider said happened after it accepted the message (its signed webhook).
    await cur.execute(
        "SELECT channel, provider, event, status, occurred_at, received_at, detail"
        " FROM provider_events WHERE notification_id = %s ORDER BY received_at, event_id",
        (notification_id,),
    )
    for event in await cur.fetchall():
        delivery = deliveries.get(event.pop("channel"))
        if delivery is not None:
            delivery.setdefault("events", []).append(event)
    for delivery in deliveries.values():
        delivery.setdefault("events", [])
    found["channels"] = deliveries
    held = [d["scheduled_for"] for d in deliveries.values() if d["scheduled_for"] is not None]
    found["scheduled_for"] = min(held) if held else None  # send_at or quiet hours
    found["hops"] = _hops(found.pop("hops") or {}, deliveries)
    return found


def _hops(stored: dict[str, float], deliveries: dict[str, Any]) -> list[dict[str, Any]]:
    """The notification's way, hop by hop, each with its time since it was received."""
    events: list[tuple[float, str, str | None]] = [
        (float(at), hop, None) for hop, at in stored.items()]
    for channel, delivery in deliveries.items():
        log = delivery["attempt_log"]
        if log:
            events.append((log[0]["started_at"].timestamp(), "consumed", channel))
        sent = [a for a in log if a["outcome"] == "sent"]
        if sent:
            events.append((sent[-1]["finished_at"].timestamp(), "provider_accepted", channel))
    events.sort()
    start = float(stored.get("received", events[0][0] if events else 0.0))
    return [
        {"hop": hop, "channel": channel,
         "at": datetime.fromtimestamp(at, tz=timezone.utc).isoformat(),
         "ms_since_received": round((at - start) * 1000, 1)}
        for at, hop, channel in events
    ]


async def notifications(conn: AsyncConnection, user_id: str | None, status: str | None,
                        limit: int, offset: int, created_by: str | None = None,
                        ) -> tuple[list[dict[str, Any]], int]:
    """Notifications, newest first, optionally of one user, in one status or created by one
    principal (index notifications_created_by); and the total."""
    cur = conn.cursor(row_factory=dict_row)
    where = ("(%(user)s::text IS NULL OR user_id = %(user)s::text)"
             " AND (%(status)s::text IS NULL OR status = %(status)s::text)"
             " AND (%(by)s::text IS NULL OR created_by = %(by)s::text)")
    params = {"user": user_id, "status": status, "by": created_by, "limit": limit,
              "offset": offset}
    await cur.execute(f"SELECT count(*) AS n FROM notifications WHERE {where}", params)
    total = (await cur.fetchone() or {"n": 0})["n"]
    await cur.execute(
        "SELECT notification_id::text, user_id, template_key, template_version, language,"
        f" status, priority, request_id, created_at, updated_at FROM notifications WHERE {where}"
        " ORDER BY created_at DESC LIMIT %(limit)s OFFSET %(offset)s", params)
    return await cur.fetchall(), int(total)


async def outbox(
    conn: AsyncConnection, notification_id: str | None, channel: str | None, limit: int
) -> list[dict[str, Any]]:
    """Messages the local outbox received, newest first."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT outbox_id, notification_id::text, channel, recipient, subject, body, html_body,"
        " data, created_at FROM outbox"
        " WHERE (%(nid)s::uuid IS NULL OR notification_id = %(nid)s::uuid)"
        " AND (%(channel)s::text IS NULL OR channel = %(channel)s::text)"
        " ORDER BY outbox_id DESC LIMIT %(limit)s",
        {"nid": notification_id, "channel": channel, "limit": limit},
    )
    return await cur.fetchall()


async def user(conn: AsyncConnection, user_id: str) -> User | None:
    cur = await conn.execute(
        f"SELECT {user_repo.COLUMNS} FROM users WHERE user_id = %s", (user_id,)
    )
    row = await cur.fetchone()
    return user_repo.row_to_user(row) if row else None


async def users_page(
    conn: AsyncConnection, email: str | None, limit: int, offset: int
) -> tuple[int, list[User]]:
    """(how many users match, one page of them in creation order), optionally by email address."""
    where = "WHERE (%(email)s::text IS NULL OR email_address = %(email)s::text)"
    cur = await conn.execute(f"SELECT count(*) FROM users {where}", {"email": email})
    row = await cur.fetchone()
    total = int(row[0]) if row else 0
    cur = await conn.execute(
        f"SELECT {user_repo.COLUMNS} FROM users {where}"
        " ORDER BY created_at, user_id LIMIT %(limit)s OFFSET %(offset)s",
        {"email": email, "limit": limit, "offset": offset},
    )
    return total, [user_repo.row_to_user(r) for r in await cur.fetchall()]


async def template_versions(
    conn: AsyncConnection, key: str, language: str | None = None, version: int | None = None
) -> list[dict[str, Any]]:
    """A live key's templates with their declared variables, newest version first, optionally
    only one language or version. Empty for an unknown or retired key."""
    cur = await conn.execute(
        f"SELECT {template_repo.COLUMNS}, variables, created_at FROM templates"
        " WHERE template_key = %s AND retired_at IS NULL"
        " AND (%s::text IS NULL OR language = %s::text)"
        " AND (%s::int IS NULL OR version = %s::int) ORDER BY version DESC, language",
        (key, language, language, version, version),
    )
    return [
        {**Template(*row[:-2]).to_json(), "variables": row[-2], "created_at": row[-1]}
        for row in await cur.fetchall()
    ]


async def template_keys_page(
    conn: AsyncConnection, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many live keys there are, one page of them by key): each key's languages with the
    latest version of each, and when its newest version was created."""
    cur = await conn.execute(
        "SELECT count(DISTINCT template_key) FROM templates WHERE retired_at IS NULL"
    )
    row = await cur.fetchone()
    total = int(row[0]) if row else 0
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT template_key, jsonb_object_agg(language, version) AS versions,"
        " max(version) AS latest_version, max(created_at) AS updated_at"
        " FROM (SELECT DISTINCT ON (template_key, language) template_key, language, version,"
        "        created_at FROM templates WHERE retired_at IS NULL"
        "        ORDER BY template_key, language, version DESC) AS latest"
        " GROUP BY template_key ORDER BY template_key LIMIT %s OFFSET %s",
        (limit, offset),
    )
    keys = []
    for found in await cur.fetchall():
        versions = dict(sorted(found.pop("versions").items()))
        keys.append({"template_key": found["template_key"], "languages": list(versions),
                     "latest_version": found["latest_version"], "versions": versions,
                     "updated_at": found["updated_at"]})
    return total, keys


async def provider_attempts(conn: AsyncConnection, seconds: int
                            ) -> dict[tuple[str, str], tuple[int, int]]:
    """Attempts per (channel, provider) in the last `seconds`: (all, sent). A recipient skipped
    because it is suppressed reached no provider: not counted."""
    cur = await conn.execute(
        "SELECT channel, provider, count(*), count(*) FILTER (WHERE outcome = 'sent')"
        " FROM delivery_attempts WHERE finished_at > now() - make_interval(secs => %s)"
        " AND outcome <> 'skipped' GROUP BY channel, provider", (seconds,))
    return {(str(r[0]), str(r[1] or "")): (int(r[2]), int(r[3])) for r in await cur.fetchall()}
