"""ChannelDelivery: the common body of the EmailDelivery and PushDelivery actors.

Each delivery actor consumes its own queue straight from RabbitMQ, inside the actor world:

    RabbitMQ ──(pika socket, watched)──▶ actor ──claim──▶ worker threads ──▶ provider
                                          ▲                     │
                                          └──(socketpair, watched)── completions

* The actor returns `ThespianWatch([amqp_fd, wake_fd])` after every message, so it is woken when
  the broker sends something and when a provider call finishes, and never blocks its mailbox.
* Provider calls have real latency, so up to `delivery_concurrency` run at once on a thread pool.
* Only the actor's own thread touches pika (its connections are not thread-safe).

Once, not twice. Before a message reaches the provider its attempt is *claimed*:
  - in memory, by (notification, attempt): a copy arriving while this actor runs the attempt or
    has finished it (a redelivery after a broker reconnect, a second outbox publish) is not sent
    again; a redelivered copy takes over the dead connection's delivery tag, so it is acked;
  - in PostgreSQL (`claim_attempts`, one statement per arrival batch): across actors and hosts,
    an attempt claimed by someone else is not sent; one whose outcome is recorded is acked.
After an attempt, its outcome, its delivery's new state and its next message (the retry on the
delay ladder, or the DLQ copy) are committed in one transaction (the transactional outbox); then
the message is acked and the new rows are relayed to the broker. A crash anywhere redelivers the
message, and its claim or its recorded outcome stops a second send. While PostgreSQL is away the
outcomes wait in memory and nothing is published, so an outage never multiplies retries. The one
window left is a provider call in flight when the process is killed: its claim outlives it, and
after `lease` seconds another actor claims and sends it again (README "Delivery guarantees").
* A circuit breaker per provider: after repeated passing failures the actor stops consuming (the
  messages wait in the queue, their attempts unspent) and tries one message after the timeout.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pika
import psycopg
import redis

from clarion.actors.base import ClarionActor
from clarion.actors.providers.base import DeliveryResult, Provider
from clarion.persistence import broker, broker_outbox, cache
from clarion.persistence import notifications as notification_repo
from clarion.persistence import users as user_repo
from clarion.persistence.broker import BatchPublisher, Envelope, PublishError
from clarion.persistence.notifications import DONE, HELD, Claim, Outcome
from clarion.supervision import metrics
from clarion.supervision.breaker import CLOSED, OPEN


@dataclass
class Attempt:
    """One attempt this actor claimed: from the claim until its message is acked."""

    message: dict[str, Any]
    tag: int
    generation: int  # which broker connection the tag belongs to
    started_at: float = field(default_factory=time.time)
    result: DeliveryResult | None = None
    outcome: Outcome | None = None  # computed, not yet committed
    recorded: bool = False  # its outcome is committed: only the ack is left

    @property
    def key(self) -> tuple[str, int]:
        return self.message["notification_id"], int(self.message.get("attempt", 1))


@dataclass(frozen=True, slots=True)
class Waiting:
    """A message not started yet: someone else holds its attempt, or storage was away."""

    tag: int
    generation: int
    message: dict[str, Any]


class ChannelDelivery(ClarionActor):
    CHANNEL = ""  # "email" or "push": set by each subclass

    def make_provider(self) -> Provider:
        raise NotImplementedError

    # -- set-up and tear-down -----------------------------------------------------------------

    def setup(self) -> None:
        settings = self.settings
        assert settings is not None
        self._provider = self.make_provider()
        self._redis = cache.connect(settings.redis_url)
        self._pool = ThreadPoolExecutor(settings.delivery_concurrency,
                                        thread_name_prefix=f"{self.CHANNEL}-send")
        self._breaker = self.breaker(self._provider.name)
        self._owner = f"{settings.node_name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A claim whose holder records nothing within this long died with its process.
        self._lease = 2 * settings.provider_timeout + 5
        # Worker threads report completions here and write a byte to wake the actor, only the
        # first since its last wake-up (`_wake_pending`): at 1,000 completions/s a byte each, and
        # a lock around the write, cost a syscall and a GIL hand-over per delivery, and threads
        # queued on the lock.
        self._finished: deque[tuple[tuple[str, int], DeliveryResult]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._arrived: list[tuple[int, bytes]] = []
        self._attempts: dict[tuple[str, int], Attempt] = {}
        self._waiting: list[Waiting] = []
        # Tags handed to us on this connection and not yet acked, nacked or rejected: an ack
        # with multiple=True may cover every tag below the lowest of them.
        self._unsettled_tags: set[int] = set()
        self._in_flight = 0
        self._amqp: pika.BlockingConnection | None = None
        self._channel: Any = None  # consumes and acks
        self._consumer_tag: str | None = None
        # Our retries and dead letters, relayed from the outbox right after their commit.
        self._relay = BatchPublisher(settings.amqp_url, f"clarion-{self.CHANNEL}-relay",
                                     settings.queue_type)
        # Delivery tags restart at 1 on every connection: never ack an old tag on a new one.
        self._generation = 0
        self._connect_broker()

    def teardown(self) -> None:
        if not hasattr(self, "_pool"):
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._close_broker()  # unacked messages go back to the queue for the next consumer
        self._relay.close()
        self._provider.close()

    def _connect_broker(self) -> None:
        assert self.settings is not None
        try:
            self._amqp = broker.connect(self.settings.amqp_url, f"clarion-{self.CHANNEL}-delivery")
            channel = self._amqp.channel()
            broker.declare_topology(channel, self.settings.queue_type)
            self._channel = channel
            self._generation += 1
            if self._breaker.state != OPEN:
                self._consume()
        except pika.exceptions.AMQPError as exc:
            self.log.error("broker connection failed", extra={"actor": self.name,
                                                              "error": repr(exc)})
            self._close_broker()

    def _consume(self) -> None:
        assert self.settings is not None
        # While the breaker is half-open, one message at a time: that one is the trial.
        prefetch = 1 if self._breaker.state != CLOSED else self.settings.delivery_prefetch
        self._channel.basic_qos(prefetch_count=prefetch)
        self._consumer_tag = self._channel.basic_consume(broker.WORK_QUEUES[self.CHANNEL],
                                                         self._on_delivery)
        self.log.info("consuming", extra={"actor": self.name, "prefetch": prefetch,
                                          "queue": broker.WORK_QUEUES[self.CHANNEL]})

    def _pause(self) -> None:
        """Stop taking messages (the breaker opened): they wait in the queue, attempts unspent."""
        if self._channel is None or self._consumer_tag is None:
            return
        try:
            # pika nacks (requeues) whatever it had not handed to our callback yet.
            self._channel.basic_cancel(self._consumer_tag)
            for tag, _ in self._arrived:
                self._settle(tag)
                self._channel.basic_nack(tag, requeue=True)
        except pika.exceptions.AMQPError:
            self._close_broker()
        self._arrived.clear()
        self._consumer_tag = None
        self.log.warning("paused: provider breaker open", extra={
            "actor": self.name, "retry_after": round(self._breaker.retry_after(), 1)})

    def _close_broker(self) -> None:
        conn, self._amqp, self._channel = self._amqp, None, None
        self._consumer_tag = None
        self._arrived.clear()  # unacked: the broker gives them to a consumer again
        self._waiting.clear()  # likewise: their tags die with the connection
        self._unsettled_tags.clear()  # tags are per connection
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError:
                pass

    def watched_filenos(self) -> list[int]:
        filenos = [self._wake_r.fileno()] if hasattr(self, "_wake_r") else []
        if self._amqp is not None and self._amqp.is_open:
            try:
                # A private pika name (1.x); without it we could only poll on the tick.
                filenos.append(self._amqp._impl._transport._sock.fileno())
            except AttributeError:
                pass
        return filenos

    # -- events -------------------------------------------------------------------------------

    def receiveMsg_WatchMessage(self, message: Any, sender: Any) -> None:
        self._pump()

    def on_tick(self) -> None:
        if self._amqp is None:
            self._connect_broker()
        elif self._consumer_tag is None and self._breaker.retry_after() == 0:
            try:
                self._consume()  # the breaker's timeout passed: take one message as the trial
            except pika.exceptions.AMQPError:
                self._close_broker()
        self._relay.keep_alive()
        self._pump(retry_waiting=True)  # also serves AMQP heartbeats while idle

    def _pump(self, retry_waiting: bool = False) -> None:
        try:
            self._pump_once(retry_waiting)
        except Exception:  # noqa: BLE001 - a bug must not wedge the consumer; say so and recover
            # Dropping the connection hands every unacked message back to the broker, so
            # nothing is lost; the tick reconnects.
            self.log.exception("delivery loop failed; reconnecting", extra={"actor": self.name})
            self._close_broker()

    def _pump_once(self, retry_waiting: bool) -> None:
        """Read what the broker sent, start deliveries, finish completed ones."""
        if self._amqp is not None:
            try:
                self._amqp.process_data_events(time_limit=0)
            except pika.exceptions.AMQPError as exc:
                self.log.error("broker connection lost", extra={"actor": self.name,
                                                                "error": repr(exc)})
                self._close_broker()
        self._start_arrived(retry_waiting)
        # Cleared before the completions are taken: a worker finishing after this line wakes
        # the actor again, one finishing before it is in `_finished` already.
        self._wake_pending = False
        self._drain_wakeups()
        self._complete()

    def _on_delivery(self, _channel: Any, method: Any, _props: Any, body: bytes) -> None:
        # pika calls this inside process_data_events, on the actor's thread: just collect.
        self._arrived.append((method.delivery_tag, body))
        self._unsettled_tags.add(method.delivery_tag)

    # -- starting attempts --------------------------------------------------------------------

    def _start_arrived(self, retry_waiting: bool) -> None:
        arrived, self._arrived = self._arrived, []
        candidates: list[Waiting] = []
        if retry_waiting:
            candidates, self._waiting = self._waiting, []
        if self._channel is None:
            return
        for tag, body in arrived:
            try:
                message = json.loads(body)
                message["notification_id"], message["channel"]  # noqa: B018 - must exist
            except (ValueError, KeyError, TypeError):
                self.log.error("malformed message sent to the DLQ", extra={"actor": self.name})
                self._settle(tag)
                self._channel.basic_reject(tag, requeue=False)
                continue
            candidates.append(Waiting(tag, self._generation, message))
        fresh: dict[tuple[str, int], Waiting] = {}
        for w in candidates:
            key = (w.message["notification_id"], int(w.message.get("attempt", 1)))
            if not self._known_copy(key, w) and key not in fresh:
                fresh[key] = w
            elif key in fresh:
                self._drop_copy(w.tag, "in_memory")
        if fresh:
            self._claim_and_start(fresh)

    def _known_copy(self, key: tuple[str, int], copy: Waiting) -> bool:
        """A copy of an attempt this actor is running, or has finished and not yet acked."""
        attempt = self._attempts.get(key)
        if attempt is None:
            return False
        if attempt.generation != self._generation:
            # Redelivered after our connection was lost: the old tag is dead, so this one is
            # acked in its place when the attempt is settled.
            attempt.tag, attempt.generation = copy.tag, copy.generation
            metrics.DELIVERY_DUPLICATES_AVOIDED.labels(self.CHANNEL, "in_memory").inc()
            if attempt.recorded:
                self._ack_settled([attempt])
        else:
            self._drop_copy(copy.tag, "in_memory")  # the original's own tag will be acked
        return True

    def _drop_copy(self, tag: int, how: str) -> None:
        metrics.DELIVERY_DUPLICATES_AVOIDED.labels(self.CHANNEL, how).inc()
        self._settle(tag)
        self._channel.basic_ack(tag)

    def _claim_and_start(self, fresh: dict[tuple[str, int], Waiting]) -> None:
        claims = {Claim(nid, self.CHANNEL, attempt): w for (nid, attempt), w in fresh.items()}
        try:
            verdicts = self.stored(lambda conn: notification_repo.claim_attempts(
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
                self._drop_copy(w.tag, "claimed")
            elif verdict == HELD:
                self._waiting.append(w)  # someone else is on it: look again next tick
            elif not self._breaker.allow():
                self._hand_back(list(claims.values())[i:])
                self._pause()
                return
            else:
                self._start(w)

    def _hand_back(self, rest: list[Waiting]) -> None:
        """The breaker opened while starting: hand back what was not started. Their claims are
        ours, so when they come back to us we claim them again at once (another actor waits
        for the lease)."""
        for w in rest:
            self._settle(w.tag)
            self._channel.basic_nack(w.tag, requeue=True)

    def _start(self, w: Waiting) -> None:
        attempt = Attempt(w.message, w.tag, w.generation)
        self._attempts[attempt.key] = attempt
        self._in_flight += 1
        self._pool.submit(self._send, attempt.key, w.message)

    def _send(self, key: tuple[str, int], message: dict[str, Any]) -> None:
        """Runs on a worker thread: the provider call, then a wake-up for the actor."""
        try:
            result = self._provider.send(message)
        except Exception as exc:  # noqa: BLE001 - providers must not raise; if one does, record it
            result = DeliveryResult(False, error_code="provider_exception",
                                    error=f"{type(exc).__name__}: {exc}")
        self._finished.append((key, result))
        if self._wake_pending:
            return  # the actor has a wake-up coming and will find this one with it
        self._wake_pending = True
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # the socket buffer is full of wake-ups already: the actor will wake

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- finishing attempts -------------------------------------------------------------------

    def _outcome(self, attempt: Attempt) -> Outcome:
        """What to record for a finished attempt, and what to publish next."""
        assert self.settings is not None and attempt.result is not None
        message, result = attempt.message, attempt.result
        number = int(message.get("attempt", 1))
        retry_in = None
        dead = None
        follow_up: tuple[Envelope, ...] = ()
        headers = {"x-notification-id": message["notification_id"],
                   "x-request-id": message.get("request_id") or ""}
        if not result.ok:
            if not result.permanent and number < self.settings.delivery_max_attempts:
                wanted = max(broker.RETRY_DELAYS[min(number, len(broker.RETRY_DELAYS)) - 1],
                             result.retry_after or 0)
                retry_in = float(broker.ladder_delay(wanted))
                follow_up = (broker.to_queue(
                    broker.retry_queue(self.CHANNEL, int(retry_in)), self._retry_body(attempt),
                    {**headers, "x-attempt": number + 1, "x-last-error": result.error_code or ""},
                ),)
            else:
                dead = message
                follow_up = (broker.to_queue(broker.FAILED_QUEUE, message, {
                    **headers, "x-attempts": number, "x-error-code": result.error_code or "",
                    "x-error": (result.error or "")[:500], "x-channel": self.CHANNEL}),)
        return Outcome(
            message["notification_id"], self.CHANNEL, number, result.ok, self._provider.name,
            attempt.started_at, result.provider_message_id, result.error_code, result.error,
            retry_in, dead, follow_up,
        )

    @staticmethod
    def _retry_body(attempt: Attempt) -> dict[str, Any]:
        """The next attempt's message. A push goes again only to the devices that failed in a
        passing way: those that got it, or were refused for good, are left out."""
        body = {**attempt.message, "attempt": int(attempt.message.get("attempt", 1)) + 1}
        details = attempt.result.details if attempt.result is not None else ()
        if "tokens" in body and details:
            again = [d["full_token"] for d in details
                     if isinstance(d, dict) and not d.get("ok") and not d.get("permanent")
                     and d.get("full_token")]
            if again:
                body["tokens"] = again
        return body

    def _complete(self) -> None:
        while self._finished:
            key, result = self._finished.popleft()
            attempt = self._attempts.get(key)
            if attempt is None:
                continue
            self._in_flight -= 1
            self._judge(result)
            attempt.result = result
            attempt.outcome = self._outcome(attempt)
        pending = [a for a in self._attempts.values()
                   if a.outcome is not None and not a.recorded]
        if not pending:
            return
        try:
            # The outcomes, the deliveries' new state, dead letters and the next messages
            # (retries, DLQ copies), in one transaction: all or nothing, and nothing is
            # published before it commits.
            outbox_ids = self.stored(lambda conn: notification_repo.record_outcomes(
                conn, [a.outcome for a in pending if a.outcome is not None]))
        except psycopg.Error as exc:
            self.log.error("recording outcomes failed; will retry", extra={
                "actor": self.name, "error": repr(exc)})
            return
        for a in pending:
            a.recorded = True
        finished = list(pending)
        self._forget_unregistered_tokens(finished)
        for a in finished:
            assert a.outcome is not None
            self._log_outcome(a, a.outcome)
            self._count(a, a.outcome)
        self._ack_settled(finished)
        self._relay_own(outbox_ids)

    def _ack_settled(self, attempts: list[Attempt]) -> None:
        """Ack the recorded attempts whose tag is alive and forget them. An attempt whose tag
        died with an old connection is forgotten too: its redelivered copy finds the outcome
        recorded (claim says done) and is acked then."""
        for a in attempts:
            self._attempts.pop(a.key, None)
        if self._channel is not None:
            try:
                self._ack([a.tag for a in attempts if a.generation == self._generation])
            except pika.exceptions.AMQPError:
                self._close_broker()

    def _relay_own(self, outbox_ids: list[int]) -> None:
        """Publish the retries and dead letters just committed; if the broker is away, they
        wait in the outbox for the Publisher's sweep."""
        if not outbox_ids:
            return
        try:
            broker_outbox.relay(self._conn(), self._relay, outbox_ids)
        except (PublishError, psycopg.Error) as exc:
            self.log.warning("relaying retries failed; left to the sweep", extra={
                "actor": self.name, "error": str(exc)})
        else:
            metrics.OUTBOX_RELAYED.inc(len(outbox_ids))

    def _settle(self, tag: int) -> None:
        self._unsettled_tags.discard(tag)

    def _ack(self, tags: list[int]) -> None:
        """Acks `tags`: those below every tag still unsettled in one frame (multiple=True), the
        others one by one. Calls finish out of order, so a tag may wait on a slower one."""
        if not tags:
            return
        self._unsettled_tags.difference_update(tags)
        lowest_open = min(self._unsettled_tags, default=None)
        grouped = [t for t in tags if lowest_open is None or t < lowest_open]
        if grouped:
            self._channel.basic_ack(max(grouped), multiple=True)
        for tag in tags:
            if lowest_open is not None and tag > lowest_open:
                self._channel.basic_ack(tag)

    def _forget_unregistered_tokens(self, finished: list[Attempt]) -> None:
        """FCM said UNREGISTERED: that device is gone for good; take its token off the user
        (and out of the user cache) so no later notification tries it again."""
        for a in finished:
            details = a.result.details if a.result is not None else ()
            tokens = [d["full_token"] for d in details
                      if isinstance(d, dict) and d.get("unregistered") and d.get("full_token")]
            user_id = a.message.get("user_id")
            if not tokens or not user_id:
                continue
            try:
                for token in tokens:
                    user_repo.remove_push_token(self._conn(), user_id, token)
                self._redis.delete(f"{cache.USER_PREFIX}:{user_id}")
            except (psycopg.Error, redis.RedisError) as exc:
                self.log.warning("could not remove unregistered push tokens", extra={
                    "actor": self.name, "user_id": user_id, "error": str(exc)})
                continue
            self.log.info("unregistered push tokens removed", extra={
                "actor": self.name, "user_id": user_id, "count": len(tokens)})

    def _judge(self, result: DeliveryResult) -> None:
        """Feed the breaker: only passing failures say the provider is unwell."""
        if result.ok or result.permanent:
            was = self._breaker.state
            self._breaker.success()
            if was != CLOSED and self._channel is not None and self._consumer_tag is not None:
                assert self.settings is not None
                self._channel.basic_qos(prefetch_count=self.settings.delivery_prefetch)
            return
        self._breaker.failure()
        if self._breaker.state == OPEN:
            self._pause()

    def _count(self, a: Attempt, o: Outcome) -> None:
        outcome = "sent" if o.ok else ("retried" if o.retry_in is not None else "dead_lettered")
        metrics.DELIVERIES.labels(self.CHANNEL, o.provider, outcome).inc()
        accepted_at = a.message.get("accepted_at")
        if o.ok and isinstance(accepted_at, (int, float)):
            metrics.DELIVERY_LATENCY.labels(self.CHANNEL).observe(max(0.0, time.time()
                                                                       - accepted_at))

    def _log_outcome(self, a: Attempt, o: Outcome) -> None:
        fields = {"actor": self.name, "channel": self.CHANNEL,
                  "notification_id": o.notification_id, "request_id": a.message.get("request_id"),
                  "provider": o.provider, "attempt": o.attempt,
                  "latency_ms": round((time.time() - a.started_at) * 1000, 1)}
        if o.ok:
            self.log.info("delivered", extra=fields)
        elif o.retry_in is not None:
            self.log.warning("delivery failed; will retry", extra={
                **fields, "error_code": o.error_code, "retry_in": o.retry_in})
        else:
            self.log.error("delivery failed for good; dead-lettered", extra={
                **fields, "error_code": o.error_code, "error": o.error})
