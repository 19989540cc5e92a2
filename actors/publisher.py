"""Publisher actor: the relay of the transactional outbox, on one long-lived RabbitMQ connection.

Takes:   RelayOutbox (from the Gateway, right after it committed a batch) → publishes those rows
         with publisher confirms and deletes them; answers nothing.
         Its tick: sweeps every row still waiting (left by a restart, a broker outage, a lost
         RelayOutbox, a delivery actor that died before relaying its retries), in chunks, and
         queues the deliveries held for quiet hours whose time has come.
         SendBatch of ReplayDeadLetters / DiscardDeadLetter (operators, via the Gateway) and
         CancelNotification (`DELETE /v1/notifications/{id}`) → answers Replies to the batch's
         `reply_to`.

Scheduled deliveries (`send_at`, quiet hours) are released when due: a wake-up is set for the
first one due before the next tick (learnt from the tick's look at the table, or from the
Gateway's RelayOutbox when it commits one), so a delivery leaves within milliseconds of its time.

While RabbitMQ is down nothing here is in a hurry: the rows wait in PostgreSQL (Clarion keeps
accepting), the breaker keeps us from hammering the broker, and the sweep drains the backlog
within about a second of the broker's return (the infrastructure breaker's short reset).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.messages import (
    CancelNotification,
    DiscardDeadLetter,
    RelayBulk,
    RelayOutbox,
    Replies,
    ReplayDeadLetters,
    Reply,
    SendBatch,
    SweepOutbox,
)
from clarion.persistence import broker_outbox, dead_letters
from clarion.persistence import notifications as notification_repo
from clarion.persistence.broker import BatchPublisher, PublishError, UnroutableError
from clarion.supervision import metrics


_RELEASE = "release-due"  # the wake-up that releases scheduled deliveries on time
# Bulk rows per relay: small enough that a transactional batch waits ~0.1 s behind a chunk.
BULK_RELAY_CHUNK = 200


class Publisher(ClarionActor):
    def setup(self) -> None:
        self._publisher = BatchPublisher(self.settings.amqp_url, "clarion-publisher",
                                         self.settings.queue_type)
        self._breaker = self.deps.breaker("rabbitmq")
        self._sweeping = False  # a SweepOutbox to ourselves is on its way
        # Bulk rows to relay, a chunk per RelayBulk to ourselves: a transactional RelayOutbox
        # arriving meanwhile waits for one chunk at most. (Lost in a restart, the sweep finds
        # the rows.)
        self._bulk: deque[int] = deque()
        self._bulk_relaying = False

    def teardown(self) -> None:
        if hasattr(self, "_publisher"):
            self._publisher.close()

    def on_tick(self) -> None:
        self._publisher.keep_alive()
        self._release_due()
        if not self._bulk:
            # (While bulk rows are relayed chunk by chunk, the sweep, which takes the oldest
            # rows a thousand at a time, would take them in one go.)
            self._sweep()
        try:
            due = self.deps.stored(notification_repo.next_due)
        except psycopg.Error:
            due = None  # the next tick looks again
        if due is not None:
            self._release_at(due.timestamp())

    def _release_at(self, due_at: float) -> None:
        """Release at `due_at` if that comes before the next tick (which would do it late)."""
        delay = due_at - time.time()
        if delay < self.TICK_SECONDS:
            self.wakeupAfter(max(0.0, delay), payload=_RELEASE)

    def on_wakeup(self, payload: Any) -> None:
        if payload == _RELEASE:
            self._release_due()

    # -- relaying -----------------------------------------------------------------------------

    def receiveMsg_RelayOutbox(self, message: RelayOutbox, sender: Any) -> None:
        if message.message_ids and message.bulk:
            self._bulk.extend(message.message_ids)
            self._relay_bulk_soon()
        elif message.message_ids:
            self._relay(message.message_ids)
        if message.due_at is not None:
            self._release_at(message.due_at)

    def receiveMsg_RelayBulk(self, message: RelayBulk, sender: Any) -> None:
        self._bulk_relaying = False
        chunk = [self._bulk.popleft() for _ in range(min(BULK_RELAY_CHUNK, len(self._bulk)))]
        if chunk and self._relay(chunk) == 0:
            # Nothing went out (the broker is away, or these rows were relayed already): what
            # is left is the sweep's, which finds whatever is still in the outbox.
            self._bulk.clear()
        self._relay_bulk_soon()

    def _relay_bulk_soon(self) -> None:
        if self._bulk and not self._bulk_relaying:
            self._bulk_relaying = True
            self.send(self.myAddress, RelayBulk())

    def receiveMsg_SweepOutbox(self, message: SweepOutbox, sender: Any) -> None:
        self._sweeping = False
        self._sweep()

    def _sweep(self) -> None:
        """Relay the oldest waiting rows; while a whole chunk went out, go on in a message to
        ourselves, so that other messages are served between chunks of a long backlog."""
        if self._sweeping:
            return
        if self._relay(None) >= broker_outbox.RELAY_CHUNK:
            self._sweeping = True
            self.send(self.myAddress, SweepOutbox())

    def _relay(self, message_ids: tuple[int, ...] | list[int] | None) -> int:
        """Publish outbox rows (these, or the oldest chunk); how many went out."""
        if not self._breaker.allow():
            return 0  # the broker has been failing: the rows wait, the sweep tries again
        try:
            sent = self.deps.stored(lambda conn: broker_outbox.relay(conn, self._publisher,
                                                                message_ids))
        except UnroutableError as exc:
            # The topology is wrong or was deleted: those rows stay (the backlog shows them),
            # the others are published. Not the broker being away: the breaker stays closed.
            self.log.error("unroutable outbox messages kept", extra={"error": str(exc)})
            self._breaker.success()
            return 0
        except PublishError as exc:
            self._breaker.failure()
            self.log.warning("outbox relay failed; rows kept", extra={"error": str(exc)})
            return 0
        except psycopg.Error as exc:
            self.log.warning("outbox relay could not read the outbox",
                             extra={"error": str(exc)})
            return 0
        self._breaker.success()
        if sent:
            metrics.OUTBOX_RELAYED.inc(sent)
        return sent

    def _release_due(self) -> None:
        """Queue the deliveries held for quiet hours whose time has come: they move to the
        outbox in one transaction (SKIP LOCKED: several hosts' Publishers share the work)."""
        try:
            released = self.deps.stored(notification_repo.release_due)
        except psycopg.Error as exc:
            self.log.warning("releasing scheduled deliveries failed", extra={"error": str(exc)})
            return
        if released:
            self.log.info("scheduled deliveries released", extra={"count": len(released)})
            self._relay(released)

    # -- dead letters -------------------------------------------------------------------------

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies = []
        for item in message.items:
            if isinstance(item, ReplayDeadLetters):
                replies.append(self._replay(item))
            elif isinstance(item, DiscardDeadLetter):
                replies.append(self._discard(item))
            elif isinstance(item, CancelNotification):
                replies.append(self._cancel(item))
        self.send(message.reply_to, Replies(message.batch_id, tuple(replies)))

    def _replay(self, command: ReplayDeadLetters) -> Reply:
        # One transaction resets the deliveries and puts the messages in the outbox: from its
        # commit on, the replay happens, whatever the broker is doing right now.
        try:
            ids, outbox_ids = self.deps.stored(lambda conn: dead_letters.replay(
                conn, list(command.ids) if command.ids is not None else None,
                command.channel, command.error_code, command.limit))
        except psycopg.Error as exc:
            self.log.error("replay failed", extra={"error": str(exc)})
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="storage is unavailable; nothing was replayed")
        if command.ids is not None and len(command.ids) == 1 and not ids:
            return Reply(command.correlation_id, 404, error_code="dead_letter_not_found",
                         message=f"no dead letter {command.ids[0]} waiting for replay")
        self._relay(outbox_ids)
        self.log.info("dead letters replayed", extra={"count": len(ids)})
        return Reply(command.correlation_id, 200, data={"replayed": ids, "count": len(ids)},
                     message=f"{len(ids)} dead letter(s) replayed")

    def _cancel(self, command: CancelNotification) -> Reply:
        try:
            found = self.deps.stored(lambda conn: notification_repo.cancel_scheduled(
                conn, command.notification_id, command.created_by))
        except psycopg.Error as exc:
            self.log.error("cancel failed", extra={"error": str(exc)})
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="storage is unavailable; nothing was cancelled")
        if found is None:
            return Reply(command.correlation_id, 404, error_code="notification_not_found",
                         message=f"no notification '{command.notification_id}'")
        if not found.cancelled:
            return Reply(command.correlation_id, 409, error_code="not_cancellable",
                         message=f"the notification is {found.status}: only what is still"
                                 " scheduled can be cancelled", data=found.to_json())
        self.log.info("notification cancelled", extra={
            "notification_id": command.notification_id, "channels": list(found.cancelled)})
        return Reply(command.correlation_id, 200, data=found.to_json(),
                     message="scheduled delivery cancelled")

    def _discard(self, command: DiscardDeadLetter) -> Reply:
        try:
            found = self.deps.stored(lambda conn: dead_letters.discard(conn, command.dead_letter_id))
        except psycopg.Error as exc:
            self.log.error("discard failed", extra={"error": str(exc)})
            return Reply(command.correlation_id, 503, error_code="storage_unavailable",
                         message="storage is unavailable, retry")
        if not found:
            return Reply(command.correlation_id, 404, error_code="dead_letter_not_found",
                         message=f"no dead letter {command.dead_letter_id} waiting")
        return Reply(command.correlation_id, 200, data={"discarded": command.dead_letter_id},
                     message="dead letter discarded")
