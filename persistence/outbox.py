"""The local outbox: where email, push and SMS go when no provider is configured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def insert_messages(conn: psycopg.Connection, messages: Sequence[dict[str, Any]]) -> list[int]:
    """Store delivered messages (the queue's message format); return their outbox ids."""
    ids = []
    with conn.transaction(), conn.cursor() as cur:
        for m in messages:
            # Email and SMS have one recipient ("to": an address, a phone number), push its tokens.
            recipients = ([m["to"]] if m["channel"] in ("email", "sms")
                          else list(m.get("tokens") or ()))
            for recipient in recipients:
                cur.execute(
                    "INSERT INTO outbox (notification_id, channel, recipient, subject, body,"
                    " html_body, data) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING outbox_id",
                    (
                        m["notification_id"], m["channel"], recipient,
                        m.get("subject") if m["channel"] == "email" else m.get("title"),
                        m.get("body"), m.get("html_body"), Jsonb(m.get("data") or {}),
                    ),
                )
                row = cur.fetchone()
                assert row is not None
                ids.append(int(row[0]))
    return ids
