"""ChannelDelivery: the common body of the EmailDelivery and PushDelivery actors.

Each delivery actor consumes its own queue straight from RabbitMQ, inside the actor world:

    RabbitMQ ──(pika socket, watched)──▶ actor ──submit──▶ worker threads ──▶ provider
                                          ▲                     │
                                          └──(socketpair, watched)── completions

* The actor returns `ThespianWatch([amqp_fd, wake_fd])` after every message, so it is woken when
  the broker sends something and when a provider call finishes, and never blocks its mailbox.
* Provider calls have real latency, so up to `delivery_concurrency` run at once on a thread pool.
* Only the actor's own thread touches pika (its connections are not thread-safe).
* After an attempt: a passing failure is republished to a delay queue (attempt + 1), a final one
  to failed.queue and the dead letters; the outcome is committed to PostgreSQL; then the message
  is acked. A crash anywhere in between redelivers it, and the `pending_attempts` check keeps an
  attempt already recorded from reaching the provider twice. Nothing is lost; in the narrow window
  between a republish and its record an attempt can repeat. The acks of a batch go out as one
  frame (`multiple=True`) up to the oldest message still unsettled.
* A circuit breaker per provider: after repeated passing failures the actor stops consuming (the
  messages wait in the queue, their attempts unspent) and tries one message after the timeout.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pika
import psycopg
import redis

from clarion.actors.base import ClarionActor
from clarion.actors.providers.base import DeliveryResult, Provider
from clarion.persistence import broker, cache
from clarion.persistence import users as user_repo
from clarion.persistence import notifications as notification_repo
from clarion.persistence.notifications import Outcome
from clarion.supervision import metrics
from clarion.supervision.breaker import CLOSED, OPEN


@dataclass(frozen=True, slots=True)
class InFlight:
    tag: int
    generation: int  # which broker connection the tag belongs to
    message: dict[str, Any]
    started_at: float


@dataclass(frozen=True, slots=True)
class Finished:
    tag: int
    generation: int
    message: dict[str, Any]
    started_at: float
    result: DeliveryResult


class ChannelDelivery(ClarionActor):
    CHANNEL = ""  # "email" or "push": set by each subclass

    def make_provider(self) -> Provider:
        raise NotImplementedError

    # -- set-up and tear-down -----------------------------------------------------------------

    def setup(self) -> None:
        assert self.settings is not None
        self._provider = self.make_provider()
        self._redis = cache.connect(self.settings.redis_url)
        self._pool = ThreadPoolExecutor(self.settings.delivery_concurrency,
                                        thread_name_prefix=f"{self.CHANNEL}-send")
        self._breaker = self.breaker(self._provider.name)
        # Worker threads report completions here and write a byte to wake the actor, only the
        # first since its last wake-up (`_wake_pending`): at 1,000 completions/s a byte each, and
        # a lock around the write, cost a syscall and a GIL hand-over per delivery, and threads
        # queued on the lock.
        self._finished: deque[Finished] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._arrived: list[tuple[int, bytes]] = []
        # Tags handed to us on this connection and not yet acked, nacked or rejected: an ack
        # with multiple=True may cover every tag below the lowest of them.
        self._unsettled_tags: set[int] = set()
        self._in_flight = 0
        self._unsettled: list[Finished] = []  # outcomes not yet committed (broker/db down)
        self._amqp: pika.BlockingConnection | None = None
        self._channel: Any = None  # consumes and acks
        self._republish: Any = None  # confirm mode: retries and dead letters
        self._consumer_tag: str | None = None
        # Delivery tags restart at 1 on every connection: never ack an old tag on a new one.
        self._generation = 0
        self._connect_broker()

    def teardown(self) -> None:
        if not hasattr(self, "_pool"):
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._close_broker()  # unacked messages go back to the queue for the next consumer
        self._provider.close()

    def _connect_broker(self) -> None:
        assert self.settings is not None
        try:
            self._amqp = broker.connect(self.settings.amqp_url, f"clarion-{self.CHANNEL}-delivery")
            channel = self._amqp.channel()
            broker.declare_topology(channel)
            republish = self._amqp.channel()
            republish.confirm_delivery()
            self._channel, self._republish = channel, republish
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
        conn, self._amqp, self._channel, self._republish = self._amqp, None, None, None
        self._consumer_tag = None
        self._arrived.clear()  # unacked: the broker gives them to a consumer again
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
        self._pump()  # also serves AMQP heartbeats while idle

    def _pump(self) -> None:
        try:
            self._pump_once()
        except Exception:  # noqa: BLE001 - a bug must not wedge the consumer; say so and recover
            # Dropping the connection hands every unacked message back to the broker, so
            # nothing is lost; the tick reconnects.
            self.log.exception("delivery loop failed; reconnecting", extra={"actor": self.name})
            self._close_broker()

    def _pump_once(self) -> None:
        """Read what the broker sent, start deliveries, finish completed ones."""
        if self._amqp is not None:
            try:
                self._amqp.process_data_events(time_limit=0)
            except pika.exceptions.AMQPError as exc:
                self.log.error("broker connection lost", extra={"actor": self.name,
                                                                "error": repr(exc)})
                self._close_broker()
        self._start_arrived()
        # Cleared before the completions are taken: a worker finishing after this line wakes
        # the actor again, one finishing before it is in `_finished` already.
        self._wake_pending = False
        self._drain_wakeups()
        self._complete()

    def _on_delivery(self, _channel: Any, method: Any, _props: Any, body: bytes) -> None:
        # pika calls this inside process_data_events, on the actor's thread: just collect.
        self._arrived.append((method.delivery_tag, body))
        self._unsettled_tags.add(method.delivery_tag)

    def _start_arrived(self) -> None:
        arrived, self._arrived = self._arrived, []
        if not arrived or self._channel is None:
            return
        parsed: list[tuple[int, dict[str, Any]]] = []
        for tag, body in arrived:
            try:
                message = json.loads(body)
                message["notification_id"], message["channel"]  # noqa: B018 - must exist
            except (ValueError, KeyError, TypeError):
                self.log.error("malformed message sent to the DLQ", extra={"actor": self.name})
                self._settle(tag)
                self._channel.basic_reject(tag, requeue=False)
                continue
            parsed.append((tag, message))
        try:
            pending = notification_repo.pending_attempts(
                self._conn(), [(m["notification_id"], self.CHANNEL) for _, m in parsed])
        except psycopg.Error as exc:
            # Cannot tell what was delivered already: hand the messages back and try later.
            self.log.error("delivery check failed", extra={"actor": self.name, "error": str(exc)})
            for tag, _ in parsed:
                self._settle(tag)
                self._channel.basic_nack(tag, requeue=True)
            return
        for i, (tag, message) in enumerate(parsed):
            done = pending.get((message["notification_id"], self.CHANNEL))
            if done is None or int(message.get("attempt", 1)) <= done:
                # Recorded already (a redelivery after a crash before the ack), or withdrawn.
                self.log.info("not pending any more; acked without sending", extra={
                    "actor": self.name, "notification_id": message["notification_id"]})
                self._settle(tag)
                self._channel.basic_ack(tag)
                continue
            if not self._breaker.allow():
                for later_tag, _ in parsed[i:]:
                    self._settle(later_tag)
                    self._channel.basic_nack(later_tag, requeue=True)
                self._pause()
                return
            self._in_flight += 1
            work = InFlight(tag, self._generation, message, time.time())
            self._pool.submit(self._send, work)

    def _send(self, work: InFlight) -> None:
        """Runs on a worker thread: the provider call, then a wake-up for the actor."""
        try:
            result = self._provider.send(work.message)
        except Exception as exc:  # noqa: BLE001 - providers must not raise; if one does, record it
            result = DeliveryResult(False, error_code="provider_exception",
                                    error=f"{type(exc).__name__}: {exc}")
        self._finished.append(
            Finished(work.tag, work.generation, work.message, work.started_at, result))
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

    def _outcome(self, f: Finished) -> Outcome:
        """What to record for a finished attempt, and whether it is retried."""
        assert self.settings is not None
        attempt = int(f.message.get("attempt", 1))
        result = f.result
        retry_in = None
        dead = None
        if not result.ok:
            if not result.permanent and attempt < self.settings.delivery_max_attempts:
                wanted = max(broker.RETRY_DELAYS[min(attempt, len(broker.RETRY_DELAYS)) - 1],
                             result.retry_after or 0)
                retry_in = float(broker.ladder_delay(wanted))
            else:
                dead = f.message
        return Outcome(
            f.message["notification_id"], self.CHANNEL, attempt, result.ok,
            self._provider.name, f.started_at, result.provider_message_id, result.error_code,
            result.error, retry_in, dead,
        )

    def _complete(self) -> None:
        while self._finished:
            f = self._finished.popleft()
            self._in_flight -= 1
            self._judge(f.result)
            self._unsettled.append(f)
        if not self._unsettled:
            return
        finished, self._unsettled = self._unsettled, []
        outcomes = [self._outcome(f) for f in finished]
        try:
            # 1. The retry copies and dead letters, confirmed by the broker first: if we crash
            #    after this, the original is redelivered (a repeat, never a loss).
            for f, o in zip(finished, outcomes):
                if not o.ok:
                    self._republish_copy(f, o)
            # 2. The outcomes, in one transaction.
            notification_repo.record_outcomes(self._conn(), outcomes)
        except (pika.exceptions.AMQPError, psycopg.Error) as exc:
            self.log.error("settling outcomes failed; will retry", extra={
                "actor": self.name, "error": repr(exc)})
            if isinstance(exc, pika.exceptions.AMQPError):
                self._close_broker()
            self._unsettled = finished + self._unsettled
            return
        self._forget_unregistered_tokens(finished)
        for f, o in zip(finished, outcomes):
            self._log_outcome(f, o)
            self._count(f, o)
        # 3. The acks. A message whose connection went comes back, and the check acks it.
        if self._channel is not None:
            try:
                self._ack([f.tag for f in finished if f.generation == self._generation])
            except pika.exceptions.AMQPError:
                self._close_broker()

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

    def _forget_unregistered_tokens(self, finished: list[Finished]) -> None:
        """FCM said UNREGISTERED: that device is gone for good; take its token off the user
        (and out of the user cache) so no later notification tries it again."""
        for f in finished:
            tokens = [d["full_token"] for d in f.result.details
                      if isinstance(d, dict) and d.get("unregistered") and d.get("full_token")]
            user_id = f.message.get("user_id")
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

    def _republish_copy(self, f: Finished, o: Outcome) -> None:
        if self._republish is None:
            raise pika.exceptions.AMQPConnectionError("no broker connection")
        if o.retry_in is not None:
            queue = broker.retry_queue(self.CHANNEL, int(o.retry_in))
            body = {**f.message, "attempt": o.attempt + 1}
            headers = {"x-attempt": o.attempt + 1, "x-last-error": o.error_code or ""}
        else:
            queue = broker.FAILED_QUEUE
            body = f.message
            headers = {"x-attempts": o.attempt, "x-error-code": o.error_code or "",
                       "x-error": (o.error or "")[:500], "x-channel": self.CHANNEL}
        headers["x-notification-id"] = f.message["notification_id"]
        headers["x-request-id"] = f.message.get("request_id") or ""
        self._republish.basic_publish(
            "", queue, json.dumps(body).encode(),
            pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent,
                                 content_type="application/json", headers=headers),
            mandatory=True,
        )

    def _count(self, f: Finished, o: Outcome) -> None:
        outcome = "sent" if o.ok else ("retried" if o.retry_in is not None else "dead_lettered")
        metrics.DELIVERIES.labels(self.CHANNEL, o.provider, outcome).inc()
        accepted_at = f.message.get("accepted_at")
        if o.ok and isinstance(accepted_at, (int, float)):
            metrics.DELIVERY_LATENCY.labels(self.CHANNEL).observe(max(0.0, time.time()
                                                                       - accepted_at))

    def _log_outcome(self, f: Finished, o: Outcome) -> None:
        fields = {"actor": self.name, "channel": self.CHANNEL,
                  "notification_id": o.notification_id, "request_id": f.message.get("request_id"),
                  "provider": o.provider, "attempt": o.attempt,
                  "latency_ms": round((time.time() - f.started_at) * 1000, 1)}
        if o.ok:
            self.log.info("delivered", extra=fields)
        elif o.retry_in is not None:
            self.log.warning("delivery failed; will retry", extra={
                **fields, "error_code": o.error_code, "retry_in": o.retry_in})
        else:
            self.log.error("delivery failed for good; dead-lettered", extra={
                **fields, "error_code": o.error_code, "error": o.error})

    def status(self) -> dict[str, Any]:
        return {"in_flight": self._in_flight, "consuming": self._consumer_tag is not None,
                "pid": os.getpid(), "provider": self._provider.name,
                "breaker": self._breaker.snapshot()}
