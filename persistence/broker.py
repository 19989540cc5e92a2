"""RabbitMQ: the whole topology in one place, and the publish/consume helpers (pika).

    exchange `notifications` (direct, durable)
      ├─ routing key "email" → email.queue ─┐ dead-letters (rejected, not requeued)
      ├─ routing key "push"  → push.queue  ─┼→ failed.queue  (the DLQ: 24 h TTL, 10,000 max)
      └─ routing key "sms"   → sms.queue   ─┘

    email.retry.1s, email.retry.5s, ... sms.retry.600s   (the delay ladder, one per channel)

    Bulk lane: routing key "email.bulk" → email.bulk.queue, with its own ladder
    (email.bulk.retry.1s ...): bulk traffic (the batch endpoint's default, `priority: bulk`)
    waits in queues of its own, so a backlog of it never sits in front of a transactional
    message; delivery actors serve the transactional queue first (README "Lanes").
      a delivery that failed for a passing reason is published to the shortest delay queue
      that waits long enough; when its TTL expires it dead-letters back to the exchange with
      its channel's routing key, into the work queue again, with its attempt count in a header.
"""

from __future__ import annotations

import json
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

EXCHANGE = "notifications"
WORK_QUEUES = {"email": "email.queue", "push": "push.queue", "sms": "sms.queue"}
FAILED_QUEUE = "failed.queue"
CHANNELS = tuple(WORK_QUEUES)
BULK = "bulk"  # the bulk lane; None (or "") is the transactional one
BULK_QUEUES = {channel: f"{channel}.bulk.queue" for channel in CHANNELS}

DLQ_TTL_MS = 24 * 3600 * 1000
DLQ_MAX_LENGTH = 10_000

# One queue per delay: RabbitMQ expires messages only at the head of a queue, so a queue must
# hold one TTL (a 1 s message behind a 600 s one would wait 600 s).
RETRY_DELAYS = (1, 5, 30, 120, 600)


def routing_key(channel: str, lane: str | None = None) -> str:
    """The key a channel's messages of a lane are published with."""
    return f"{channel}.{BULK}" if lane == BULK else channel


def work_queue(channel: str, lane: str | None = None) -> str:
    return BULK_QUEUES[channel] if lane == BULK else WORK_QUEUES[channel]


def retry_queue(channel: str, delay: int, lane: str | None = None) -> str:
    return f"{routing_key(channel, lane)}.retry.{delay}s"


def all_queues() -> list[str]:
    """Every queue of the topology: the work queues of both lanes, their ladders, the DLQ."""
    return [*WORK_QUEUES.values(), *BULK_QUEUES.values(), FAILED_QUEUE,
            *(retry_queue(c, d, lane) for c in CHANNELS for lane in (None, BULK)
              for d in RETRY_DELAYS)]


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


def _queue_arguments(queue_type: str, **arguments: Any) -> dict[str, Any]:
    # A classic queue is declared without `x-queue-type`, as it always was: queues declared by
    # earlier versions stay equivalent and keep their messages.
    return {**arguments, "x-queue-type": "quorum"} if queue_type == "quorum" else arguments


def declare_topology(channel: BlockingChannel, queue_type: str = "classic") -> None:
    """Declare every exchange and queue; safe to call again (declarations are idempotent).

    `queue_type` "quorum" makes every queue a replicated quorum queue (a RabbitMQ cluster);
    dead-lettering, per-queue TTLs, the length limit and drop-head all work the same on both.
    """
    channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)
    channel.queue_declare(
        FAILED_QUEUE,
        durable=True,
        arguments=_queue_arguments(
            queue_type,
            **{
                "x-message-ttl": DLQ_TTL_MS,
                "x-max-length": DLQ_MAX_LENGTH,
                # When full, the oldest dead letter goes: the newest failures are the ones an
                # operator is most likely still able to act on; every dead letter is also kept
                # in PostgreSQL (dead_letters), which is what the API replays from. README
                # "Operating".
                "x-overflow": "drop-head",
            },
        ),
    )
    for key, queue in [(routing_key(c, lane), work_queue(c, lane))
                       for c in CHANNELS for lane in (None, BULK)]:
        channel.queue_declare(
            queue,
            durable=True,
            arguments=_queue_arguments(
                queue_type,
                **{
                    # A message a delivery actor rejects (requeue=False) lands in the DLQ.
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": FAILED_QUEUE,
                },
            ),
        )
        channel.queue_bind(queue, EXCHANGE, routing_key=key)
        for delay in RETRY_DELAYS:
            channel.queue_declare(
                f"{key}.retry.{delay}s",  # retry_queue(channel, delay, lane)
                durable=True,
                arguments=_queue_arguments(
                    queue_type,
                    **{
                        # This HAS to be one value per queue: messages expire in order.
                        "x-message-ttl": delay * 1000,
                        "x-dead-letter-exchange": EXCHANGE,
                        "x-dead-letter-routing-key": key,
                    },
                ),
            )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message exactly as it goes on the wire: where to, its headers and its JSON bytes.

    What the transactional outbox stores (`broker_outbox`) and the relay publishes."""

    exchange: str  # "" is the default exchange: straight to the queue named by routing_key
    routing_key: str
    headers: dict[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for a channel's work queue."""

    channel: str
    body: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)

    def envelope(self) -> Envelope:
        return Envelope(EXCHANGE, self.channel, self.headers,
                        json.dumps(self.body, separators=(",", ":")).encode("utf-8"))


def to_queue(queue: str, body: dict[str, Any], headers: dict[str, Any]) -> Envelope:
    """A message straight to `queue` (a delay queue of the retry ladder, or the DLQ)."""
    return Envelope("", queue, headers, json.dumps(body, separators=(",", ":")).encode("utf-8"))


class PublishError(Exception):
    """The broker did not confirm every message of a batch (some may have got through)."""


class UnroutableError(PublishError):
    """The broker confirmed the batch, but some messages matched no queue (the topology is
    wrong, or was deleted under us). The others are safely queued."""

    def __init__(self, message: str, outbox_ids: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.outbox_ids = outbox_ids  # the `x-outbox-id` of each message that came back


class BatchPublisher:
    """Publishes batches with publisher confirms: one broker round trip per batch.

    Every message of a batch is written at once, then the broker's acks are awaited together
    (RabbitMQ acks a run of messages with one `multiple` frame). An ack is the broker's word that
    the message is routed to its durable queues, which is what the outbox relay needs before it
    deletes a row (notes/rabbitmq.md: one confirm wait per message would cap us near 950 msg/s).

    pika's BlockingChannel only knows one wait per message, so confirms are switched on on the
    underlying channel (`_impl`, a private pika 1.x name, checked at connect) with our own
    callbacks, and the socket is served until every delivery tag is settled.
    """

    def __init__(self, url: str, name: str = "clarion-publisher", queue_type: str = "classic",
                 confirm_timeout: float = 10.0) -> None:
        self._url = url
        self._name = name
        self._queue_type = queue_type
        self._confirm_timeout = confirm_timeout
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._impl: Any = None
        self._next_tag = 1  # the delivery tag the broker gives our next publish
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        self._returned: list[tuple[str, Any]] = []  # (routing key, x-outbox-id)

    def _open(self) -> Any:
        if self._channel is None or not self._channel.is_open or self._conn is None \
                or not self._conn.is_open:
            self.close()
            self._conn = connect(self._url, self._name)
            channel = self._conn.channel()
            declare_topology(channel, self._queue_type)
            impl = getattr(channel, "_impl", None)
            if impl is None or not hasattr(impl, "confirm_delivery"):
                raise RuntimeError("pika changed: BlockingChannel._impl is gone (need pika 1.x)")
            selected: list[bool] = []
            impl.confirm_delivery(self._on_confirm, callback=lambda _frame: selected.append(True))
            # Called from pika's I/O loop as the frame arrives: a basic.return always comes
            # before the ack of the same message, so it is counted by the time we see the ack.
            impl.add_on_return_callback(self._on_return)
            self._channel, self._impl = channel, impl
            self._next_tag = 1
            self._unconfirmed.clear()
            self._serve_until(lambda: bool(selected), self._confirm_timeout)
            if not selected:
                raise PublishError("the broker did not switch on publisher confirms")
        return self._impl

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            settled = {t for t in self._unconfirmed if t <= tag}
        else:
            settled = {tag} & self._unconfirmed
        self._unconfirmed -= settled
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked += len(settled)

    def _on_return(self, _channel: Any, method: Any, props: Any, _body: bytes) -> None:
        self._returned.append((method.routing_key, (props.headers or {}).get("x-outbox-id")))

    def _serve_until(self, done: Any, timeout: float) -> None:
        """Serve the connection's I/O until `done()` or the timeout."""
        assert self._conn is not None
        deadline = time.monotonic() + timeout
        while True:
            self._conn.process_data_events(time_limit=0)
            if done() or self._channel is None or not self._channel.is_open:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # process_data_events(time_limit=x) waits out x even when a frame arrived: wait on
            # the socket instead, and serve it the moment something is there.
            try:
                sock = self._conn._impl._transport._sock  # a private pika 1.x name
            except AttributeError:
                time.sleep(min(left, 0.001))
                continue
            select.select([sock], [], [], min(left, 0.5))

    def publish(self, messages: Sequence[Outgoing | Envelope]) -> None:
        """Publish and wait for the broker's confirms; raise PublishError unless the broker
        confirmed every message (UnroutableError if it confirmed them but some matched no
        queue)."""
        if not messages:
            return
        try:
            impl = self._open()
            self._returned.clear()
            self._nacked = 0
            first = self._next_tag
            for message in messages:
                envelope = message.envelope() if isinstance(message, Outgoing) else message
                impl.basic_publish(
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                    body=envelope.body,
                    properties=pika.BasicProperties(
                        delivery_mode=pika.DeliveryMode.Persistent,
                        content_type="application/json",
                        headers=envelope.headers,
                    ),
                    # mandatory: an unroutable message comes back instead of vanishing.
                    mandatory=True,
                )
            self._next_tag = first + len(messages)
            self._unconfirmed.update(range(first, self._next_tag))
            self._serve_until(lambda: not self._unconfirmed, self._confirm_timeout)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise PublishError(f"broker error: {exc.__class__.__name__}") from exc
        if self._unconfirmed:
            self.close()  # late confirms would be counted against the next batch
            raise PublishError(f"{len(self._unconfirmed)} message(s) not confirmed within"
                               f" {self._confirm_timeout:.0f} s")
        if self._nacked:
            raise PublishError(f"the broker refused {self._nacked} message(s) (nack)")
        if self._returned:
            returned, self._returned = self._returned, []
            # Declared again on the next connection, in case the queues were deleted under us.
            self.close()
            raise UnroutableError(f"unroutable: {sorted({key for key, _ in returned})}",
                                  frozenset(int(i) for _, i in returned if i is not None))

    def keep_alive(self) -> None:
        """Serve heartbeats while idle (BlockingConnection only does it inside calls)."""
        if self._conn is not None and self._conn.is_open:
            try:
                self._conn.process_data_events(time_limit=0)
            except pika.exceptions.AMQPError:
                self.close()

    def close(self) -> None:
        conn, self._conn, self._channel, self._impl = self._conn, None, None, None
        self._unconfirmed.clear()
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError:
                pass
