"""Publisher actor: one long-lived RabbitMQ connection, one committed transaction per batch.

Takes:   PublishBatch → answers Published (the sender: the Gateway) once the broker committed
         the whole batch, or refused it.
         SendBatch of ReplayDeadLetters / DiscardDeadLetter (operators, via the Gateway) →
         answers Replies to the batch's `reply_to`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.messages import (
    DiscardDeadLetter,
    PublishBatch,
    Published,
    Replies,
    ReplayDeadLetters,
    Reply,
    SendBatch,
)
from clarion.persistence import dead_letters
from clarion.persistence import notifications as notification_repo
from clarion.persistence.broker import BatchPublisher, Outgoing, PublishError, UnroutableError
from clarion.supervision.backoff import backoff_delay

MAX_ATTEMPTS = 5  # per batch, then the Gateway answers 503


@dataclass
class _Retry:
    message: PublishBatch
    sender: Any
    attempt: int


class Publisher(ClarionActor):
    def setup(self) -> None:
        assert self.settings is not None
        self._publisher = BatchPublisher(self.settings.amqp_url, "clarion-publisher")
        self._breaker = self.breaker("rabbitmq")
        self._retries: dict[str, _Retry] = {}

    def teardown(self) -> None:
        if hasattr(self, "_publisher"):
            self._publisher.close()

    def on_tick(self) -> None:
        self._publisher.keep_alive()
        self._release_due()

    def _release_due(self) -> None:
        """Publish the deliveries held for quiet hours whose time has come.

        Taken, published and committed in one database transaction: if the broker refuses
        them, they stay scheduled for the next tick. (SKIP LOCKED: several hosts' Publishers
        share the work without taking the same delivery.)
        """
        if self._breaker.retry_after() > 0:
            return  # the broker is failing: leave them scheduled until its breaker lets us try
        due: list = []
        try:
            conn = self._conn()
            with conn.transaction():
                due = notification_repo.take_due(conn)
                if due:
                    error = self._publish([Outgoing(m["channel"], m["body"], m["headers"])
                                           for m in due])
                    if error is not None:
                        raise PublishError(error)
        except PublishError:
            self._breaker.failure()
            return
        except psycopg.Error as exc:
            self.log.error("releasing scheduled deliveries failed", extra={"error": str(exc)})
            return
        if due:
            self._breaker.success()
            self.log.info("scheduled deliveries released", extra={"count": len(due)})

    def receiveMsg_PublishBatch(self, message: PublishBatch, sender: Any) -> None:
        self._attempt(_Retry(message, sender, 1))

    def _attempt(self, work: _Retry) -> None:
        """Publish a batch; on failure retry with backoff on a timer, never blocking."""
        batch_id = work.message.batch_id
        if not self._breaker.allow():
            # Fail fast: the broker has been failing, and the caller should hear it now.
            self._retries.pop(batch_id, None)
            self.send(work.sender, Published(batch_id, False, "broker_unavailable",
                                             retry_after=self._breaker.retry_after()))
            return
        error = self._publish(work.message.messages)
        if error is None:
            self._breaker.success()
            self._retries.pop(batch_id, None)
            self.send(work.sender, Published(batch_id, True))
            return
        self._breaker.failure()
        if work.attempt >= MAX_ATTEMPTS or error.startswith("unroutable"):
            self._retries.pop(batch_id, None)
            self.send(work.sender, Published(batch_id, False, error,
                                             retry_after=self._breaker.retry_after()))
            return
        work.attempt += 1
        self._retries[batch_id] = work
        self.wakeupAfter(backoff_delay(work.attempt - 1), payload=("publish", batch_id))

    def on_wakeup(self, payload: Any) -> None:
        if isinstance(payload, tuple) and payload[0] == "publish":
            work = self._retries.get(payload[1])
            if work is not None:
                self._attempt(work)

    def _publish(self, messages: tuple[Outgoing, ...] | list[Outgoing]) -> str | None:
        """Publish and commit once; the error if the broker did not take them."""
        try:
            self._publisher.publish(messages)
        except UnroutableError as exc:
            # Committed already: publishing again would duplicate the routed ones.
            self.log.error("unroutable messages", extra={"error": str(exc)})
            return f"unroutable: {exc}"
        except PublishError as exc:
            self.log.warning("publish failed", extra={"error": str(exc)})
            return str(exc)
        return None

    # -- dead letters -------------------------------------------------------------------------

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies = []
        for item in message.items:
            if isinstance(item, ReplayDeadLetters):
                replies.append(self._replay(item))
            elif isinstance(item, DiscardDeadLetter):
                replies.append(self._discard(item))
        self.send(message.reply_to, Replies(message.batch_id, tuple(replies)))

    def _replay(self, command: ReplayDeadLetters) -> Reply:
        # The reset is committed before the messages are published: a delivery actor that got a
        # replayed message before the commit would find the attempts of the dead delivery and
        # drop it. If the broker then refuses them, the reset is undone.
        try:
            conn = self._conn()
            with conn.transaction():
                taken = dead_letters.take_for_replay(
                    conn, list(command.ids) if command.ids is not None else None,
                    command.channel, command.error_code, command.limit)
        except psycopg.Error as exc:
            self.log.error("replay failed", extra={"error": str(exc)})
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="storage is unavailable; nothing was replayed")
        if command.ids is not None and len(command.ids) == 1 and not taken:
            return Reply(command.correlation_id, 404, error_code="dead_letter_not_found",
                         message=f"no dead letter {command.ids[0]} waiting for replay")
        messages = [
            Outgoing(body["channel"], {**body, "attempt": 1}, {
                "x-request-id": body.get("request_id") or "",
                "x-notification-id": body["notification_id"], "x-attempt": 1,
                "x-replayed-from": dead_letter_id})
            for dead_letter_id, body in taken
        ]
        ids = [dead_letter_id for dead_letter_id, _ in taken]
        if messages and self._publish(messages) is not None:
            try:
                dead_letters.undo_replay(self._conn(), ids)
            except psycopg.Error as exc:
                self.log.error("undoing a failed replay failed", extra={
                    "error": str(exc), "dead_letter_ids": ids})
            return Reply(command.correlation_id, 503, error_code="broker_unavailable",
                         message="the message broker is unavailable; nothing was replayed")
        self.log.info("dead letters replayed", extra={"count": len(ids)})
        return Reply(command.correlation_id, 200, data={"replayed": ids, "count": len(ids)},
                     message=f"{len(ids)} dead letter(s) replayed")

    def _discard(self, command: DiscardDeadLetter) -> Reply:
        try:
            found = dead_letters.discard(self._conn(), command.dead_letter_id)
        except psycopg.Error as exc:
            self.log.error("discard failed", extra={"error": str(exc)})
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="storage is unavailable, retry")
        if not found:
            return Reply(command.correlation_id, 404, error_code="dead_letter_not_found",
                         message=f"no dead letter {command.dead_letter_id} waiting")
        return Reply(command.correlation_id, 200, data={"discarded": command.dead_letter_id},
                     message="dead letter discarded")
