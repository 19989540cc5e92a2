"""QueueConsumer: a channel's work queues consumed on a pika BlockingConnection, from one thread.

The AMQP mechanics of a delivery actor, and nothing else: connecting (and declaring the
topology), consuming with a prefetch, pausing, collecting what arrived, acking.

* pika connections are not thread-safe: every method runs on the owner's thread. The owner
  watches `fileno()` and calls `pump()` when it is readable, and on a timer (heartbeats).
* Deliveries are only collected while pika runs its callback; the owner takes them with
  `take_arrivals()`.
* Delivery tags restart at 1 on every connection, so each connection has a `generation`, and an
  ack names the generation its tags belong to: a tag from a lost connection is never acked on a
  new one (the broker redelivers those messages).
* Acks of a run of tags go out as one frame (`multiple=True`) up to the oldest tag still
  unsettled, and one by one above it: calls finish out of order.
* A second queue (the channel's bulk lane) is consumed on the same AMQP channel, each queue with
  its own prefetch (RabbitMQ applies `basic.qos` per consumer, to consumers created after it:
  changing the prefetch means consuming again). Tags are per channel, so acks need no lane.

Every method that talks to the broker raises pika's AMQPError after closing the connection; the
owner logs it and connects again later.
"""

from __future__ import annotations

from typing import Any

import pika

from clarion.persistence import broker


class QueueConsumer:
    """One small method per AMQP operation (connect, consume, pause, pump, ack, nack, reject),
    each closing the connection when the broker fails it."""

    def __init__(self, url: str, queue: str, name: str, queue_type: str = "classic",
                 bulk_queue: str | None = None) -> None:
        self._url = url
        self._queue = queue
        self._bulk_queue = bulk_queue
        self._name = name
        self._queue_type = queue_type
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._consumer_tags: list[str] = []
        self._arrived: list[tuple[int, bytes]] = []
        # Tags handed to us on this connection and not yet acked, nacked or rejected: an ack
        # with multiple=True may cover every tag below the lowest of them.
        self._unsettled: set[int] = set()
        self.generation = 0

    # -- state --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open and self._channel is not None

    @property
    def consuming(self) -> bool:
        return bool(self._consumer_tags)

    def fileno(self) -> int | None:
        """The connection's socket, to watch for readability (None while disconnected)."""
        if self._conn is None or not self._conn.is_open:
            return None
        try:
            return int(self._conn._impl._transport._sock.fileno())  # a private pika 1.x name
        except AttributeError:
            return None  # the owner's timer still pumps

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Open a connection and channel, declaring the topology; a new generation of tags."""
        self.close()
        try:
            self._conn = broker.connect(self._url, self._name)
            self._channel = self._conn.channel()
            broker.declare_topology(self._channel, self._queue_type)
        except pika.exceptions.AMQPError:
            self.close()
            raise
        self.generation += 1

    def close(self) -> None:
        """Drop the connection: every unacked message goes back to the queue."""
        conn, self._conn, self._channel = self._conn, None, None
        self._consumer_tags = []
        self._arrived.clear()
        self._unsettled.clear()
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError:
                pass

    def _guard(self, action: Any) -> Any:
        try:
            return action()
        except pika.exceptions.AMQPError:
            self.close()
            raise

    # -- consuming ----------------------------------------------------------------------------

    def consume(self, prefetch: int) -> None:
        """Consume the queue (and the bulk queue), each with this prefetch."""
        def start() -> None:
            for queue in (self._queue, self._bulk_queue):
                if queue is not None:
                    # Per consumer: it applies to the consumer created next.
                    self._channel.basic_qos(prefetch_count=prefetch)
                    self._consumer_tags.append(
                        self._channel.basic_consume(queue, self._on_delivery))

        self._guard(start)

    def set_prefetch(self, prefetch: int) -> None:
        """Consume again with another prefetch (a `basic.qos` alone would not change the running
        consumers'). What was delivered already stays ours, unacked, to settle as usual;
        what pika holds undispatched goes back to the queue."""
        if not (self.connected and self.consuming):
            return

        def again() -> None:
            for tag in self._consumer_tags:
                self._channel.basic_cancel(tag)
            self._consumer_tags = []

        self._guard(again)
        self.consume(prefetch)

    def pause(self) -> None:
        """Stop taking messages; those collected and not taken yet go back to the queue."""
        if not self.connected or not self._consumer_tags:
            return

        def stop() -> None:
            # pika nacks (requeues) whatever it had not handed to our callback yet.
            for tag in self._consumer_tags:
                self._channel.basic_cancel(tag)
            for tag, _ in self._arrived:
                self._unsettled.discard(tag)
                self._channel.basic_nack(tag, requeue=True)

        try:
            self._guard(stop)
        finally:
            self._arrived.clear()
            self._consumer_tags = []

    def pump(self) -> None:
        """Serve the connection: read what the broker sent, answer heartbeats."""
        if self._conn is not None and self._conn.is_open:
            self._guard(lambda: self._conn.process_data_events(time_limit=0))

    def _on_delivery(self, _channel: Any, method: Any, _props: Any, body: bytes) -> None:
        # pika calls this inside process_data_events, on the owner's thread: just collect.
        self._arrived.append((method.delivery_tag, body))
        self._unsettled.add(method.delivery_tag)

    def take_arrivals(self) -> list[tuple[int, bytes]]:
        arrived, self._arrived = self._arrived, []
        return arrived

    # -- settling -----------------------------------------------------------------------------

    def ack(self, tags: list[int], generation: int) -> None:
        """Ack these tags of `generation` (nothing if that connection is gone)."""
        if generation != self.generation or not self.connected:
            return
        tags = [t for t in tags if t in self._unsettled]
        if not tags:
            return
        self._unsettled.difference_update(tags)
        lowest_open = min(self._unsettled, default=None)
        grouped = [t for t in tags if lowest_open is None or t < lowest_open]

        def send() -> None:
            if grouped:
                self._channel.basic_ack(max(grouped), multiple=True)
            for tag in tags:
                if lowest_open is not None and tag > lowest_open:
                    self._channel.basic_ack(tag)

        self._guard(send)

    def nack(self, tag: int, generation: int) -> None:
        """Hand a message back to the queue for any consumer."""
        self._settle(tag, generation, lambda: self._channel.basic_nack(tag, requeue=True))

    def reject(self, tag: int, generation: int) -> None:
        """Refuse a message for good: the queue dead-letters it (failed.queue)."""
        self._settle(tag, generation, lambda: self._channel.basic_reject(tag, requeue=False))

    def _settle(self, tag: int, generation: int, action: Any) -> None:
        if generation != self.generation or not self.connected or tag not in self._unsettled:
            return
        self._unsettled.discard(tag)
        self._guard(action)
