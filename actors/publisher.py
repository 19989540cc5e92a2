"""Publisher actor: one long-lived RabbitMQ connection, one committed transaction per batch.

Takes:   PublishBatch → answers Published (the sender: the Gateway) once the broker committed
         the whole batch, or refused it.
"""

from __future__ import annotations

from typing import Any

from clarion.actors.base import ClarionActor
from clarion.actors.messages import PublishBatch, Published
from clarion.persistence.broker import BatchPublisher, PublishError, UnroutableError


class Publisher(ClarionActor):
    def setup(self) -> None:
        assert self.settings is not None
        self._publisher = BatchPublisher(self.settings.amqp_url, "clarion-publisher")

    def teardown(self) -> None:
        if hasattr(self, "_publisher"):
            self._publisher.close()

    def on_tick(self) -> None:
        self._publisher.keep_alive()

    def receiveMsg_PublishBatch(self, message: PublishBatch, sender: Any) -> None:
        # One retry on a fresh connection: the usual failure is a connection the broker closed
        # while we were idle, which a reconnect cures at once.
        for attempt in (1, 2):
            try:
                self._publisher.publish(message.messages)
            except PublishError as exc:
                self.log.warning("publish failed", extra={"attempt": attempt, "error": str(exc)})
                error = str(exc)
                if isinstance(exc, UnroutableError):
                    break  # committed already: publishing again would duplicate the rest
                continue
            self.send(sender, Published(message.batch_id, True))
            return
        self.send(sender, Published(message.batch_id, False, error=error))
