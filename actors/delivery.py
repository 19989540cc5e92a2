"""ChannelDelivery: the common body of the EmailDelivery and PushDelivery actors.

Each delivery actor consumes its own queue straight from RabbitMQ, inside the actor world:

    RabbitMQ ──(QueueConsumer socket, watched)──▶ actor ──claim──▶ SendPool ──▶ provider
                                                   ▲                  │
                                                   └──(socket, watched)── completions

The actor is glue between plain parts, each tested on its own: `QueueConsumer` (AMQP),
`SendPool` (worker threads), `StoragePool` (outcomes committed and their retries relayed on a
thread of their own), `AttemptBook` (the attempts in hand), `outcome_of` and the retry policy
(what a finished attempt leads to). It returns `ThespianWatch([amqp_fd, pool_fd, storage_fd])`
after every message, so it is woken when the broker sends something, when a call finishes and
when a commit does, and never blocks its mailbox. Several actors of one channel
(`CLARION_DELIVERY_ACTORS`) are competing consumers of its queue.

Once, not twice. Before a message reaches the provider its attempt is *claimed*:
  - in memory (`AttemptBook`): a copy arriving while this actor runs the attempt or has finished
    it (a redelivery after a broker reconnect, a second outbox publish) is not sent again;
  - in PostgreSQL (`claim_attempts`, one statement per arrival batch): across actors and hosts,
    an attempt claimed by someone else is not sent; one whose outcome is recorded is acked.
After an attempt, its outcome, its delivery's new state and its next message (the retry on the
delay ladder, or the DLQ copy) are committed in one transaction (the transactional outbox); then
the message is acked and the new rows are relayed to the broker. A crash anywhere redelivers the
message, and its claim or its recorded outcome stops a second send. While PostgreSQL is away the
outcomes wait in memory and nothing is published, so an outage never multiplies retries. The one
window left is a provider call in flight when the process is killed: its claim outlives it, and
after `lease` seconds another actor claims and sends it again (README "Delivery guarantees").

Providers in order, a circuit breaker each (`ProviderChain`): an attempt goes to the first
healthy one, and after a passing failure the next attempt prefers another (failover). When every
provider's breaker is open the actor stops consuming (the messages wait in the queue, their
attempts unspent) and tries one message after the timeout.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pika
import psycopg

from clarion.actors.attempts import ADOPTED, ADOPTED_SETTLED, Attempt, AttemptBook, Waiting
from clarion.actors.base import ClarionActor
from clarion.actors.outcomes import (SUPPRESSION_LIST, delivery_policy, outcome_of,
                                     skipped_outcome)
from clarion.actors.provider_chain import FAILED_PROVIDER, ProviderChain
from clarion.actors.providers.base import DeliveryResult, Provider
from clarion.actors.send_pool import SendPool
from clarion.actors.storage_pool import StoragePool
from clarion.persistence import broker, broker_outbox
from clarion.persistence import notifications as notification_repo
from clarion.persistence import users as user_repo
from clarion.persistence.broker import BatchPublisher, PublishError
from clarion.persistence.consumer import QueueConsumer
from clarion.persistence.delivery_message import DeliveryMessage, MalformedMessage
from clarion.persistence.notifications import DONE, HELD, Claim, Outcome, Suppressed
from clarion.supervision import metrics
from clarion.supervision.breaker import CLOSED


class ChannelDelivery(ClarionActor):
    """Glue: one method per event (broker traffic, completions, the tick) and per step of an
    attempt (claim, start, finish, relay, judge); the mechanics are QueueConsumer, SendPool,
    AttemptBook and outcome_of."""

    CHANNEL = ""  # "email", "push" or "sms": set by each subclass

    def make_providers(self) -> list[Provider]:
        """The channel's providers, in the order attempts try them."""
        raise NotImplementedError

    # -- set-up and tear-down -----------------------------------------------------------------

    def setup(self) -> None:
        settings = self.settings
        self._chain = ProviderChain(self.make_providers(), self.deps.breaker)
        self._pool = SendPool(None, settings.delivery_concurrency, f"{self.CHANNEL}-send")
        self._policy = delivery_policy(settings.delivery_max_attempts)
        self._owner = f"{settings.node_name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A claim whose holder records nothing within this long died with its process.
        self._lease = 2 * settings.provider_timeout + 5
        self._attempts = AttemptBook()
        # Outcomes are committed (and their retries relayed) on this thread, one run at a time.
        self._storage = StoragePool(settings.database_url, 1, f"{self.CHANNEL}-record")
        self._recording: list[Attempt] = []  # the run being committed
        self._waiting: list[Waiting] = []
        # Both lanes, whatever `lanes` says: bulk messages already queued are never stranded.
        self._consumer = QueueConsumer(settings.amqp_url, broker.WORK_QUEUES[self.CHANNEL],
                                       f"clarion-{self.CHANNEL}-delivery", settings.queue_type,
                                       bulk_queue=broker.BULK_QUEUES[self.CHANNEL])
        # Our retries and dead letters, relayed from the outbox right after their commit (on the
        # storage thread only: a pika connection belongs to one thread).
        self._relay = BatchPublisher(settings.amqp_url, f"clarion-{self.CHANNEL}-relay",
                                     settings.queue_type)
        self._connect_broker()

    def teardown(self) -> None:
        if not hasattr(self, "_pool"):
            return
        self._pool.close()
        self._consumer.close()  # unacked messages go back to the queue for the next consumer
        self._storage.close()
        self._relay.close()
        self._chain.close()

    def watched_filenos(self) -> list[int]:
        if not hasattr(self, "_pool"):
            return []
        amqp = self._consumer.fileno()
        return [self._pool.fileno(), self._storage.fileno()] + ([amqp] if amqp is not None else [])

    # -- the broker ---------------------------------------------------------------------------

    def _connect_broker(self) -> None:
        try:
            self._consumer.connect()
            if not self._chain.all_open():
                self._consume()
        except pika.exceptions.AMQPError as exc:
            self.log.error("broker connection failed", extra={"actor": self.name,
                                                              "error": repr(exc)})
        self._waiting.clear()  # their tags died with the old connection

    def _consume(self) -> None:
        # While no provider is healthy (half-open), one message at a time: that one is the trial.
        prefetch = self.settings.delivery_prefetch if self._chain.any_closed() else 1
        self._consumer.consume(prefetch)
        self.log.info("consuming", extra={"actor": self.name, "prefetch": prefetch,
                                          "queue": broker.WORK_QUEUES[self.CHANNEL]})

    def _pause(self) -> None:
        """Stop taking messages (every provider's breaker opened): they wait in the queue, their
        attempts unspent."""
        try:
            self._consumer.pause()
        except pika.exceptions.AMQPError:
            pass  # the connection is gone: the messages went back to the queue with it
        self.log.warning("paused: every provider's breaker is open", extra={
            "actor": self.name, "providers": list(self._chain.names)})

    # -- events -------------------------------------------------------------------------------

    def receiveMsg_WatchMessage(self, message: Any, sender: Any) -> None:
        self._pump()

    def on_tick(self) -> None:
        if not self._consumer.connected:
            self._connect_broker()
        elif not self._consumer.consuming and not self._chain.all_open():
            try:
                self._consume()  # a breaker's timeout passed: take one message as the trial
            except pika.exceptions.AMQPError:
                pass  # reconnected on the next tick
        self._pump(retry_waiting=True)  # also serves AMQP heartbeats while idle

    def _pump(self, retry_waiting: bool = False) -> None:
        try:
            try:
                self._consumer.pump()
            except pika.exceptions.AMQPError as exc:
                self.log.error("broker connection lost", extra={"actor": self.name,
                                                                "error": repr(exc)})
            self._start_arrived(retry_waiting)
            for _key, result, error in self._storage.completions():
                self._recorded(result, error)
            self._finish(self._pool.completions())
        except pika.exceptions.AMQPError as exc:
            self.log.error("broker connection lost", extra={"actor": self.name,
                                                            "error": repr(exc)})
        except Exception:  # noqa: BLE001 - a bug must not wedge the consumer; say so and recover
            # Dropping the connection hands every unacked message back to the broker, so
            # nothing is lost; the tick reconnects.
            self.log.exception("delivery loop failed; reconnecting", extra={"actor": self.name})
            self._consumer.close()

    # -- starting attempts --------------------------------------------------------------------

    def _start_arrived(self, retry_waiting: bool) -> None:
        candidates: list[Waiting] = []
        if retry_waiting:
            candidates, self._waiting = self._waiting, []
        generation = self._consumer.generation
        for tag, body in self._consumer.take_arrivals():
            try:
                message = DeliveryMessage.from_amqp(body)
            except MalformedMessage:
                self.log.error("malformed message sent to the DLQ", extra={"actor": self.name})
                self._consumer.reject(tag, generation)
                continue
            candidates.append(Waiting(tag, generation, message))
        fresh: dict[tuple[str, int], Waiting] = {}
        for w in candidates:
            if w.generation != self._consumer.generation:
                continue  # its connection is gone: the broker hands the message out again
            verdict = self._attempts.copy_arrived(w)
            if verdict is None and w.message.key not in fresh:
                fresh[w.message.key] = w
                continue
            # A second copy of an attempt in hand (or of one just above in this batch).
            metrics.DELIVERY_DUPLICATES_AVOIDED.labels(self.CHANNEL, "in_memory").inc()
            if verdict == ADOPTED_SETTLED:
                adopted = self._attempts.get(w.message.key)
                self._attempts.forget([adopted] if adopted else [])
            if verdict != ADOPTED:  # an adopted copy is acked when its attempt is settled
                self._consumer.ack([w.tag], w.generation)
        if fresh:
            self._claim_and_start(fresh)

    def _claim_and_start(self, fresh: dict[tuple[str, int], Waiting]) -> None:
        # Transactional first: they take the free provider slots before bulk (README "Lanes").
        ordered = sorted(fresh.values(), key=lambda w: w.message.bulk)
        claims = {Claim(w.message.notification_id, self.CHANNEL, w.message.attempt): w
                  for w in ordered}
        try:
            verdicts = self.deps.stored(lambda conn: notification_repo.claim_attempts(
                conn, self._owner, list(claims), self._lease))
        except psycopg.Error as exc:
            # Cannot tell what was delivered already: keep them (unacked) and ask again on
            # the next tick, rather than bounce them through the broker in a tight loop.
            self.log.warning("delivery claim failed; will retry", extra={
                "actor": self.name, "error": str(exc)})
            self._waiting.extend(claims.values())
            return
        for i, (claim, w) in enumerate(claims.items()):
            verdict = verdicts.get(claim, DONE)
            if verdict == DONE:
                # Recorded already (a redelivery after a crash before the ack), or the
                # delivery is over (sent, dead-lettered, replayed meanwhile).
                self.log.info("not pending any more; acked without sending", extra={
                    "actor": self.name, "notification_id": claim.notification_id,
                    "attempt": claim.attempt})
                metrics.DELIVERY_DUPLICATES_AVOIDED.labels(self.CHANNEL, "claimed").inc()
                self._consumer.ack([w.tag], w.generation)
            elif verdict == HELD:
                self._waiting.append(w)  # someone else is on it: look again next tick
            elif isinstance(verdict, Suppressed):
                self._skip_suppressed(w, verdict.reason)
            elif (provider := self._chain.pick(
                    avoid=w.message.content.get(FAILED_PROVIDER))) is None:
                # Handed back; their claims are ours, so when they come back to us we claim
                # them again at once (another actor waits for the lease).
                for rest in list(claims.values())[i:]:
                    self._consumer.nack(rest.tag, rest.generation)
                self._pause()
                return
            else:
                attempt = self._attempts.start(w)
                attempt.provider = provider.name
                self._pool.submit(attempt.key, w.message.body, provider,
                                  urgent=not w.message.bulk)

    def _skip_suppressed(self, w: Waiting, reason: str) -> None:
        """The recipient is on the suppression list: no provider call; the attempt is recorded
        as skipped like any finished one (then acked)."""
        attempt = self._attempts.start(w)
        attempt.provider = SUPPRESSION_LIST
        attempt.result = DeliveryResult(ok=False, error_code="suppressed",
                                        error=f"suppressed: {reason}", permanent=True)
        attempt.outcome = skipped_outcome(attempt, reason)
        self.log.info("recipient suppressed; skipped", extra={
            "actor": self.name, "notification_id": w.message.notification_id,
            "reason": reason})
        self._record()

    # -- finishing attempts -------------------------------------------------------------------

    def _finish(self, completions: list[tuple[Any, DeliveryResult]]) -> None:
        for key, result in completions:
            attempt = self._attempts.finish(key, result)
            if attempt is None:
                continue
            self._judge(result, attempt.provider)
            attempt.outcome = outcome_of(attempt, self._policy, attempt.provider)
        self._record()

    def _record(self) -> None:
        """Commit the finished outcomes, on the storage thread, one run at a time: the
        outcomes, the deliveries' new state, dead letters and the next messages (retries, DLQ
        copies) in one transaction (nothing is published before it commits), then the relay of
        those messages. Meanwhile this thread goes on consuming and starting calls."""
        if self._recording:
            return
        pending = self._attempts.unrecorded()
        if not pending or not self.deps.breaker("postgresql").allow():
            return  # (breaker open: tried again on the next pump or tick)
        outcomes = [a.outcome for a in pending if a.outcome is not None]
        relay = self._relay

        def record(conn: psycopg.Connection) -> tuple[list[int], Exception | None]:
            outbox_ids = notification_repo.record_outcomes(conn, outcomes)
            try:
                broker_outbox.relay(conn, relay, outbox_ids)
            except (PublishError, psycopg.Error) as exc:
                return outbox_ids, exc  # the rows wait in the outbox for the sweep
            return outbox_ids, None

        self._recording = pending
        self._storage.submit("record", record)

    def _recorded(self, result: Any, error: BaseException | None) -> None:
        pending, self._recording = self._recording, []
        breaker = self.deps.breaker("postgresql")
        if error is not None:
            if isinstance(error, psycopg.OperationalError):
                breaker.failure()
            else:
                breaker.success()
            self.log.error("recording outcomes failed; will retry", extra={
                "actor": self.name, "error": repr(error)})
            return  # still unrecorded: the next pump or tick tries again
        breaker.success()
        outbox_ids, relay_error = result
        for a in pending:
            a.recorded = True
            assert a.outcome is not None
            self._log_outcome(a, a.outcome)
            self._count(a, a.outcome)
        self._forget_unregistered_tokens(pending)
        # Acked on their own connection; an attempt whose tag died with an old connection is
        # forgotten too: its redelivered copy finds the outcome recorded (claim: done).
        by_generation: dict[int, list[int]] = {}
        for a in pending:
            by_generation.setdefault(a.generation, []).append(a.tag)
        self._attempts.forget(pending)
        for generation, tags in by_generation.items():
            self._consumer.ack(tags, generation)
        if relay_error is not None:
            self.log.warning("relaying retries failed; left to the sweep", extra={
                "actor": self.name, "error": str(relay_error)})
        elif outbox_ids:
            metrics.OUTBOX_RELAYED.inc(len(outbox_ids))
        self._record()  # what finished while this run was committing

    def _forget_unregistered_tokens(self, finished: list[Attempt]) -> None:
        """FCM said UNREGISTERED: that device is gone for good. The Users actor is the only
        writer of users: the tokens are handed to it (`push_token_removals`, applied on its
        tick, `users.apply_token_removals`), so no later notification tries them."""
        removals: list[tuple[str, str]] = []
        for a in finished:
            details = a.result.details if a.result is not None else ()
            user_id = a.message.user_id
            removals.extend((user_id, d["full_token"]) for d in details
                            if isinstance(d, dict) and d.get("unregistered")
                            and d.get("full_token") and user_id)
        if not removals:
            return
        try:
            self.deps.stored(lambda conn: user_repo.queue_token_removals(conn, removals))
        except psycopg.Error as exc:
            self.log.warning("could not hand over unregistered push tokens", extra={
                "actor": self.name, "error": str(exc), "count": len(removals)})

    def _judge(self, result: DeliveryResult, provider: str) -> None:
        """Feed that provider's breaker: only passing failures say a provider is unwell."""
        breaker = self._chain.breaker(provider)
        if result.ok or result.permanent:
            was = breaker.state
            breaker.success()
            if was != CLOSED:
                try:
                    self._consumer.set_prefetch(self.settings.delivery_prefetch)
                except pika.exceptions.AMQPError:
                    pass  # reconnected on the next tick
            return
        breaker.failure()
        if self._chain.all_open():
            self._pause()

    def _count(self, a: Attempt, o: Outcome) -> None:
        outcome = "skipped" if o.skipped else "sent" if o.ok else (
            "retried" if o.retry_in is not None else "dead_lettered")
        metrics.DELIVERIES.labels(self.CHANNEL, o.provider, outcome).inc()
        accepted_at = a.message.accepted_at
        if o.ok and accepted_at is not None:
            metrics.DELIVERY_LATENCY.labels(self.CHANNEL).observe(max(0.0, time.time()
                                                                       - accepted_at))

    def _log_outcome(self, a: Attempt, o: Outcome) -> None:
        fields = {"actor": self.name, "channel": self.CHANNEL,
                  "notification_id": o.notification_id, "request_id": a.message.request_id,
                  "provider": o.provider, "attempt": o.attempt,
                  "latency_ms": round((time.time() - a.started_at) * 1000, 1)}
        if o.skipped:
            self.log.info("skipped", extra={**fields, "error": o.error})
        elif o.ok:
            self.log.info("delivered", extra=fields)
        elif o.retry_in is not None:
            self.log.warning("delivery failed; will retry", extra={
                **fields, "error_code": o.error_code, "retry_in": o.retry_in})
        else:
            self.log.error("delivery failed for good; dead-lettered", extra={
                **fields, "error_code": o.error_code, "error": o.error})
