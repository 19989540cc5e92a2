"""The local outbox provider: "delivers" by storing the message in PostgreSQL.

The embedded default when no SendGrid or Firebase credentials are configured, so a fresh
`make run` delivers something that can be read back (`GET /v1/outbox`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from clarion.actors.providers.base import DeliveryResult
from clarion.persistence import outbox


class OutboxProvider:
    name = "outbox"

    def __init__(self, channel: str, database_url: str, pool_size: int = 4) -> None:
        self.channel = channel
        # Worker threads call send() concurrently; each takes a pooled connection.
        self._pool = ConnectionPool(database_url, min_size=1, max_size=pool_size,
                                    kwargs={"autocommit": True}, open=True, timeout=5)

    def send(self, message: dict[str, Any]) -> DeliveryResult:
        try:
            with self._pool.connection() as conn:
                ids = outbox.insert_messages(conn, [message])
        except (psycopg.Error, OSError) as exc:
            return DeliveryResult(False, error_code="outbox_unavailable",
                                  error=type(exc).__name__)
        return DeliveryResult(True, provider_message_id=f"outbox-{ids[0]}")

    def close(self) -> None:
        self._pool.close()
