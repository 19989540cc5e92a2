"""Monitor actor: looks at the outside every few seconds for the Supervisor's alerts.

Takes:   Configure, its tick. Sends Observations to its parent (the Supervisor): whether
         PostgreSQL, Redis and RabbitMQ answer, each queue's depth, and the last five minutes'
         delivery attempts and failures. Probing from its own process keeps a slow dependency
         from ever stalling the Supervisor, which must stay free to restart children.
"""

from __future__ import annotations

from typing import Any

import pika
import psycopg
import redis

from clarion.actors.base import ClarionActor
from clarion.actors.messages import Observations
from clarion.persistence import broker, cache

PROBE_EVERY = 5  # ticks (seconds)
QUEUES = (*broker.WORK_QUEUES.values(), *broker.BULK_QUEUES.values(), broker.FAILED_QUEUE)


class Monitor(ClarionActor):
    def setup(self) -> None:
        self._ticks = 0
        self._redis = cache.connect(self.settings.redis_url)
        self._amqp: pika.BlockingConnection | None = None

    def teardown(self) -> None:
        amqp = getattr(self, "_amqp", None)
        if amqp is not None and amqp.is_open:
            try:
                amqp.close()
            except pika.exceptions.AMQPError:
                pass  # on the way out anyway

    def on_tick(self) -> None:
        self._ticks += 1
        if self._ticks % PROBE_EVERY == 1:
            self.send(self.parent, self.observe())

    def observe(self) -> Observations:
        dependencies = {"postgresql": False, "redis": False, "rabbitmq": False}
        attempts: tuple[int, int] = (0, 0)
        queues: dict[str, int] = {}
        consumers: dict[str, int] = {}
        try:
            row = self.deps.conn().execute(
                "SELECT count(*), count(*) FILTER (WHERE outcome = 'failed')"
                " FROM delivery_attempts WHERE finished_at > now() - interval '5 minutes'"
                " AND outcome <> 'skipped'"  # suppressed: no provider was asked
            ).fetchone()
            attempts = (int(row[0]), int(row[1])) if row else (0, 0)
            dependencies["postgresql"] = True
        except psycopg.Error:
            pass  # deps.conn() opens a new connection once this one is broken
        try:
            dependencies["redis"] = bool(self._redis.ping())
        except redis.RedisError:
            pass
        try:
            channel = self._broker().channel()
            for queue in QUEUES:
                declared = channel.queue_declare(queue, passive=True).method
                queues[queue] = declared.message_count
                consumers[queue] = declared.consumer_count
            channel.close()
            dependencies["rabbitmq"] = True
        except (pika.exceptions.AMQPError, OSError):
            self._amqp = None
        return Observations(dependencies, queues, attempts, consumers)

    def _broker(self) -> pika.BlockingConnection:
        if self._amqp is None or not self._amqp.is_open:
            self._amqp = broker.connect(self.settings.amqp_url, "clarion-monitor")
        else:
            self._amqp.process_data_events(time_limit=0)  # heartbeats
        return self._amqp

    def status(self) -> dict[str, Any]:
        return {"ticks": self._ticks}
