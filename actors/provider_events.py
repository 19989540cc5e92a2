"""ProviderEvents actor: the only writer of what providers say happened after they accepted a
message (SendGrid's signed Event Webhook: delivered, bounced, dropped, spam reports).

Takes:   SendBatch of RecordProviderEvents (from the webhook route, via the Gateway).
Answers: Replies to the batch's `reply_to`: how many events were new, how many deliveries moved,
         how many were about nothing Clarion sent. Idempotent: a provider's retry of a request
         changes nothing (`persistence/provider_events.py`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.messages import RecordProviderEvents, Replies, Reply, SendBatch
from clarion.persistence import provider_events


class ProviderEvents(ClarionActor):
    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies = [self._record(item) for item in message.items
                   if isinstance(item, RecordProviderEvents)]
        self.send(message.reply_to, Replies(message.batch_id, tuple(replies)))

    def _record(self, command: RecordProviderEvents) -> Reply:
        try:
            applied = self.deps.stored(lambda conn: provider_events.record(
                conn, list(command.events)))
        except psycopg.Error as exc:
            self.log.error("recording provider events failed", extra={"error": str(exc)})
            # The provider retries a request that did not get a 2xx: nothing is lost.
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="storage is unavailable; send the events again", retry_after=5)
        self.log.info("provider events recorded", extra={
            "recorded": applied.recorded, "moved": applied.moved, "unknown": applied.unknown})
        return Reply(command.correlation_id, 200, message="events recorded", data={
            "recorded": applied.recorded, "moved": applied.moved, "unknown": applied.unknown})
