"""ProviderEvents actor: the only writer of what providers say happened after they accepted a
message (SendGrid's signed Event Webhook, Twilio's status callbacks) and of the suppression list
those events feed (operators' additions and removals come here too).

Takes:   SendBatch of RecordProviderEvents (from the webhook routes, via the Gateway), and of
         AddSuppression / RemoveSuppression (`/v1/suppressions`).
Answers: Replies to the batch's `reply_to`: for events, how many were new, how many deliveries
         moved, how many were about nothing Clarion sent, how many addresses were suppressed.
         Idempotent: a provider's retry of a request changes nothing
         (`persistence/provider_events.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.messages import (AddSuppression, RecordProviderEvents, RemoveSuppression,
                                     Replies, Reply, SendBatch)
from clarion.persistence import provider_events, suppressions


class ProviderEvents(ClarionActor):
    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        handlers: dict[type, Callable[[Any], Reply]] = {
            RecordProviderEvents: self._record, AddSuppression: self._suppress,
            RemoveSuppression: self._unsuppress}
        replies = [self._stored(item, handlers[type(item)]) for item in message.items
                   if type(item) in handlers]
        self.send(message.reply_to, Replies(message.batch_id, tuple(replies)))

    def _stored(self, command: Any, handler: Callable[[Any], Reply]) -> Reply:
        try:
            return handler(command)
        except psycopg.Error as exc:
            self.log.error("storing failed", extra={"command": type(command).__name__,
                                                    "error": str(exc)})
            # A provider retries a request that did not get a 2xx: nothing is lost.
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="storage is unavailable; try again", retry_after=5)

    def _record(self, command: RecordProviderEvents) -> Reply:
        applied = self.deps.stored(lambda conn: provider_events.record(
            conn, list(command.events)))
        counts = {"recorded": applied.recorded, "moved": applied.moved,
                  "unknown": applied.unknown, "suppressed": applied.suppressed}
        self.log.info("provider events recorded", extra=counts)
        return Reply(command.correlation_id, 200, message="events recorded", data=counts)

    def _suppress(self, command: AddSuppression) -> Reply:
        entry: suppressions.Suppression = command.entry

        def add(conn: psycopg.Connection) -> tuple[bool, dict[str, Any] | None]:
            with conn.transaction():
                added = bool(suppressions.add(conn, [entry]))
            return added, suppressions.entry(conn, entry.channel, entry.address)

        added, row = self.deps.stored(add)
        self.log.info("address suppressed" if added else "address already suppressed",
                      extra={"channel": entry.channel, "reason": entry.reason,
                             "by": entry.created_by})
        return Reply(command.correlation_id, 201 if added else 200, data=row,
                     message="suppressed" if added else "already suppressed; kept as it was")

    def _unsuppress(self, command: RemoveSuppression) -> Reply:
        removal = self.deps.stored(lambda conn: suppressions.remove(
            conn, command.channel, command.address, command.removed_by, command.why))
        if removal is None:
            return Reply(command.correlation_id, 404, error_code="suppression_not_found",
                         message="that address is not on the suppression list")
        self.log.info("suppression removed", extra={"channel": command.channel,
                                                    "by": command.removed_by})
        return Reply(command.correlation_id, 200, data=removal, message="removed")
