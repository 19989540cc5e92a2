"""ChannelDelivery: the common body of the EmailDelivery and PushDelivery actors.

Each delivery actor consumes its own queue straight from RabbitMQ, inside the actor world:

    RabbitMQ ──(pika socket, watched)──▶ actor ──submit──▶ worker threads ──▶ provider
                                          ▲                     │
                                          └──(socketpair, watched)── completions

* The actor returns `ThespianWatch([amqp_fd, wake_fd])` after every message, so it is woken when
  the broker sends something and when a provider call finishes, and never blocks its mailbox.
* Provider calls have real latency, so up to `delivery_concurrency` run at once on a thread pool.
* Only the actor's own thread touches pika (its connections are not thread-safe): it acks after
  the outcome is committed to PostgreSQL, so a crash in between redelivers the message, and the
  `still_queued` check keeps a redelivered message from reaching the provider twice.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pika
import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.providers.base import DeliveryResult, Provider
from clarion.persistence import broker, database
from clarion.persistence import notifications as notification_repo
from clarion.persistence.notifications import Outcome


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
        self._pool = ThreadPoolExecutor(self.settings.delivery_concurrency,
                                        thread_name_prefix=f"{self.CHANNEL}-send")
        # Worker threads report completions here and write a byte to wake the actor.
        self._finished: deque[Finished] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_lock = threading.Lock()
        self._arrived: list[tuple[int, bytes]] = []
        self._in_flight = 0
        self._unrecorded: list[Finished] = []  # outcomes not yet committed (database down)
        self._db: psycopg.Connection | None = None
        self._amqp: pika.BlockingConnection | None = None
        self._channel: Any = None
        # Delivery tags restart at 1 on every connection: never ack an old tag on a new one.
        self._generation = 0
        self._connect_broker()

    def teardown(self) -> None:
        if not hasattr(self, "_pool"):
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._close_broker()  # unacked messages go back to the queue for the next consumer
        self._provider.close()
        if self._db is not None:
            self._db.close()

    def _connect_broker(self) -> None:
        assert self.settings is not None
        try:
            self._amqp = broker.connect(self.settings.amqp_url, f"clarion-{self.CHANNEL}-delivery")
            channel = self._amqp.channel()
            broker.declare_topology(channel)
            channel.basic_qos(prefetch_count=self.settings.delivery_prefetch)
            channel.basic_consume(broker.WORK_QUEUES[self.CHANNEL], self._on_delivery)
            self._channel = channel
            self._generation += 1
            self.log.info("consuming", extra={"actor": self.name,
                                              "queue": broker.WORK_QUEUES[self.CHANNEL]})
        except pika.exceptions.AMQPError as exc:
            self.log.error("broker connection failed", extra={"actor": self.name,
                                                              "error": repr(exc)})
            self._close_broker()

    def _close_broker(self) -> None:
        conn, self._amqp, self._channel = self._amqp, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError:
                pass

    def _conn(self) -> psycopg.Connection:
        assert self.settings is not None
        if self._db is None or self._db.closed or self._db.broken:
            self._db = database.connect(self.settings.database_url, autocommit=True)
        return self._db

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
        self._pump()  # also serves AMQP heartbeats while idle

    def _pump(self) -> None:
        """Read what the broker sent, start deliveries, finish completed ones."""
        if self._amqp is not None:
            try:
                self._amqp.process_data_events(time_limit=0)
            except pika.exceptions.AMQPError as exc:
                self.log.error("broker connection lost", extra={"actor": self.name,
                                                                "error": repr(exc)})
                # Whatever was in flight will be redelivered to a consumer; drop our tags.
                self._close_broker()
                self._arrived.clear()
        self._start_arrived()
        self._drain_wakeups()
        self._complete()

    def _on_delivery(self, _channel: Any, method: Any, _props: Any, body: bytes) -> None:
        # pika calls this inside process_data_events, on the actor's thread: just collect.
        self._arrived.append((method.delivery_tag, body))

    def _start_arrived(self) -> None:
        arrived, self._arrived = self._arrived, []
        if not arrived:
            return
        parsed: list[tuple[int, dict[str, Any]]] = []
        for tag, body in arrived:
            try:
                message = json.loads(body)
                message["notification_id"], message["channel"]  # noqa: B018 - must exist
            except (ValueError, KeyError, TypeError):
                self.log.error("malformed message sent to the DLQ", extra={"actor": self.name})
                self._channel.basic_reject(tag, requeue=False)
                continue
            parsed.append((tag, message))
        try:
            waiting = notification_repo.still_queued(
                self._conn(), [(m["notification_id"], self.CHANNEL) for _, m in parsed])
        except psycopg.Error as exc:
            # Cannot tell what was delivered already: hand the messages back and try later.
            self.log.error("delivery check failed", extra={"actor": self.name, "error": str(exc)})
            for tag, _ in parsed:
                self._channel.basic_reject(tag, requeue=True)
            return
        for tag, message in parsed:
            if (message["notification_id"], self.CHANNEL) not in waiting:
                # Already recorded (a redelivery after a crash before the ack), or withdrawn.
                self.log.info("not queued any more; acked without sending", extra={
                    "actor": self.name, "notification_id": message["notification_id"]})
                self._channel.basic_ack(tag)
                continue
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
        with self._wake_lock:
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

    def _complete(self) -> None:
        while self._finished:
            self._unrecorded.append(self._finished.popleft())
        if not self._unrecorded:
            return
        finished = self._unrecorded
        outcomes = [
            Outcome(
                f.message["notification_id"], self.CHANNEL, int(f.message.get("attempt", 1)),
                f.result.ok, self.provider_name, f.started_at, f.result.provider_message_id,
                f.result.error_code, f.result.error,
            )
            for f in finished
        ]
        try:
            notification_repo.record_outcomes(self._conn(), outcomes)
        except psycopg.Error as exc:
            # Keep them (and their unacked messages) until the database is back.
            self.log.error("recording outcomes failed", extra={"actor": self.name,
                                                               "error": str(exc)})
            return
        self._unrecorded = []
        self._in_flight -= len(finished)
        for f in finished:
            self._log_outcome(f)
            if self._channel is None or f.generation != self._generation:
                continue  # its connection went: the message comes back, and the check acks it
            try:
                if f.result.ok:
                    self._channel.basic_ack(f.tag)
                else:
                    # Retries with backoff come with the resilience work; for now a failed
                    # delivery goes to the dead-letter queue with its reason in the database.
                    self._channel.basic_reject(f.tag, requeue=False)
            except pika.exceptions.AMQPError:
                self._close_broker()

    def _log_outcome(self, f: Finished) -> None:
        fields = {"actor": self.name, "channel": self.CHANNEL,
                  "notification_id": f.message["notification_id"],
                  "request_id": f.message.get("request_id"),
                  "provider": self.provider_name,
                  "latency_ms": round((time.time() - f.started_at) * 1000, 1)}
        if f.result.ok:
            self.log.info("delivered", extra=fields)
        else:
            self.log.warning("delivery failed", extra={**fields, "error_code": f.result.error_code,
                                                       "error": f.result.error})

    @property
    def provider_name(self) -> str:
        return self._provider.name

    def status(self) -> dict[str, Any]:
        return {"in_flight": self._in_flight, "consuming": self._amqp is not None,
                "pid": os.getpid(), "provider": self.provider_name}
