"""RabbitMQ: the whole topology in one place, and the publish/consume helpers (pika).

    exchange `notifications` (direct, durable)
      ├─ routing key "email" → email.queue ─┐ dead-letters (rejected, not requeued)
      └─ routing key "push"  → push.queue  ─┴→ failed.queue  (the DLQ: 24 h TTL, 10,000 max)

    email.retry.1s, email.retry.5s, ... push.retry.600s   (the delay ladder)
      a delivery that failed for a passing reason is published to the shortest delay queue
      that waits long enough; when its TTL expires it dead-letters back to the exchange with
      its channel's routing key, into the work queue again, with its attempt count in a header.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

EXCHANGE = "notifications"
WORK_QUEUES = {"email": "email.queue", "push": "push.queue"}
FAILED_QUEUE = "failed.queue"
CHANNELS = tuple(WORK_QUEUES)

DLQ_TTL_MS = 24 * 3600 * 1000
DLQ_MAX_LENGTH = 10_000

# One queue per delay: RabbitMQ expires messages only at the head of a queue, so a queue must
# hold one TTL (a 1 s message behind a 600 s one would wait 600 s).
RETRY_DELAYS = (1, 5, 30, 120, 600)


def retry_queue(channel: str, delay: int) -> str:
    return f"{channel}.retry.{delay}s"


def ladder_delay(seconds: float) -> int:
    """The shortest delay of the ladder that waits at least `seconds` (the longest if none)."""
    return next((d for d in RETRY_DELAYS if d >= seconds), RETRY_DELAYS[-1])


def connection_parameters(url: str, name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    # A heartbeat well inside the default keeps a dead peer from holding unacked work for minutes;
    # actors serve heartbeats from their periodic tick.
    params.heartbeat = 30
    params.blocked_connection_timeout = 30
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.client_properties = {"connection_name": name}
    return params


def connect(url: str, name: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(url, name))


def declare_topology(channel: BlockingChannel) -> None:
    """Declare every exchange and queue; safe to call again (declarations are idempotent)."""
    channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)
    channel.queue_declare(
        FAILED_QUEUE,
        durable=True,
        arguments={
            "x-message-ttl": DLQ_TTL_MS,
            "x-max-length": DLQ_MAX_LENGTH,
            # When full, the oldest dead letter goes: the newest failures are the ones an operator
            # is most likely still able to act on. Documented in README "Operating".
            "x-overflow": "drop-head",
        },
    )
    for routing_key, queue in WORK_QUEUES.items():
        channel.queue_declare(
            queue,
            durable=True,
            arguments={
                # A message a delivery actor rejects (requeue=False) lands in the DLQ.
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": FAILED_QUEUE,
            },
        )
        channel.queue_bind(queue, EXCHANGE, routing_key=routing_key)
        for delay in RETRY_DELAYS:
            channel.queue_declare(
                retry_queue(routing_key, delay),
                durable=True,
                arguments={
                    # This HAS to be one value per queue: messages expire in order.
                    "x-message-ttl": delay * 1000,
                    "x-dead-letter-exchange": EXCHANGE,
                    "x-dead-letter-routing-key": routing_key,
                },
            )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for a channel's work queue."""

    channel: str
    body: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)


class PublishError(Exception):
    """The broker did not take every message of a batch (nothing was committed)."""


class UnroutableError(PublishError):
    """The batch was committed, but some messages matched no queue (the topology is wrong)."""


class BatchPublisher:
    """Publishes batches in AMQP transactions: one broker round trip per batch.

    A committed transaction is the broker's word that every message is routed to its durable
    queue, which is what a 202 needs (notes/rabbitmq.md: one confirm wait per message would cap
    us near 950 msg/s; a transaction of 100 reaches ~4,400).
    """

    def __init__(self, url: str, name: str = "clarion-publisher") -> None:
        self._url = url
        self._name = name
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._returned: list[str] = []

    def _open(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._conn = connect(self._url, self._name)
            channel = self._conn.channel()
            declare_topology(channel)
            channel.tx_select()
            channel.add_on_return_callback(self._on_return)
            self._channel = channel
        return self._channel

    def _on_return(self, _channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        self._returned.append(method.routing_key)

    def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish and commit; raise PublishError if any message was not routed or committed."""
        if not messages:
            return
        try:
            channel = self._open()
            self._returned.clear()
            # BlockingChannel.basic_publish writes each message to the socket before returning
            # (one send per message: half the Publisher's CPU under load, py-spy). Inside a
            # transaction nothing counts before the commit, so the messages are queued on the
            # underlying channel and `tx_commit` sends them and the commit in one go.
            publish = getattr(channel, "_impl", channel).basic_publish
            for message in messages:
                publish(
                    exchange=EXCHANGE,
                    routing_key=message.channel,
                    body=json.dumps(message.body).encode("utf-8"),
                    properties=pika.BasicProperties(
                        delivery_mode=pika.DeliveryMode.Persistent,
                        content_type="application/json",
                        headers=message.headers,
                    ),
                    # mandatory: an unroutable message comes back instead of vanishing.
                    mandatory=True,
                )
            channel.tx_commit()
            # basic.return frames arrive before commit-ok, but BlockingConnection only hands them
            # to our callback while it processes events.
            assert self._conn is not None
            self._conn.process_data_events(time_limit=0)
        except pika.exceptions.AMQPError as exc:
            self.close()
            raise PublishError(f"broker error: {exc.__class__.__name__}") from exc
        if self._returned:
            raise UnroutableError(f"unroutable: {sorted(set(self._returned))}")

    def keep_alive(self) -> None:
        """Serve heartbeats while idle (BlockingConnection only does it inside calls)."""
        if self._conn is not None and self._conn.is_open:
            try:
                self._conn.process_data_events(time_limit=0)
            except pika.exceptions.AMQPError:
                self.close()

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError:
                pass
