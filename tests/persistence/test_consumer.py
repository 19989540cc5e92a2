"""QueueConsumer against the real RabbitMQ: consuming, grouped acks, generations, pausing.

Runs on the test vhost's email.queue, which the `amqp` fixture empties before and after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pika
import pytest

from clarion.config.settings import Settings
from clarion.persistence import broker
from clarion.persistence.consumer import QueueConsumer

pytestmark = pytest.mark.integration


@pytest.fixture
def consumer(test_settings: Settings, amqp: pika.BlockingConnection) -> Iterator[QueueConsumer]:
    consuming = QueueConsumer(test_settings.amqp_url, "email.queue", "clarion-tests-consumer")
    consuming.connect()
    yield consuming
    consuming.close()


def _publish(test_settings: Settings, n: int) -> None:
    publisher = broker.BatchPublisher(test_settings.amqp_url, "clarion-tests-feed")
    try:
        publisher.publish([broker.Outgoing("email", {"n": i}) for i in range(n)])
    finally:
        publisher.close()


def _collect(consumer: QueueConsumer, n: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        consumer.pump()
        got += consumer.take_arrivals()
        time.sleep(0.01)
    return got


def _ready(amqp: pika.BlockingConnection) -> int:
    """Messages waiting in email.queue (not handed to a consumer)."""
    return int(amqp.channel().queue_declare("email.queue", passive=True).method.message_count)


def test_acks_out_of_order_settle_every_message_exactly_once(
    test_settings: Settings, consumer: QueueConsumer, amqp: pika.BlockingConnection
) -> None:
    _publish(test_settings, 6)
    consumer.consume(prefetch=10)
    tags = [tag for tag, _ in _collect(consumer, 6)]
    assert len(tags) == 6

    consumer.ack([tags[3], tags[1]], consumer.generation)  # above the oldest open: one by one
    consumer.ack([tags[0], tags[2]], consumer.generation)  # grouped up to the oldest open
    consumer.ack([tags[0]], consumer.generation)  # acked twice: ignored, not a channel error
    consumer.ack(tags[4:], consumer.generation)
    consumer.pump()

    assert consumer.connected
    consumer.close()  # nothing unacked goes back: all six were settled
    assert _ready(amqp) == 0


def test_a_tag_of_a_lost_connection_is_never_acked_on_the_new_one(
    test_settings: Settings, consumer: QueueConsumer, amqp: pika.BlockingConnection
) -> None:
    _publish(test_settings, 2)
    consumer.consume(prefetch=10)
    old = _collect(consumer, 2)
    old_generation = consumer.generation

    consumer.connect()  # the broker connection was lost: a new generation
    consumer.consume(prefetch=10)
    again = _collect(consumer, 2)
    consumer.ack([tag for tag, _ in old], old_generation)  # ignored: another connection's tags

    assert consumer.generation == old_generation + 1
    assert sorted(body for _, body in again) == sorted(body for _, body in old)
    consumer.ack([tag for tag, _ in again], consumer.generation)
    consumer.pump()
    consumer.close()
    assert _ready(amqp) == 0


def test_pausing_hands_back_what_was_not_taken_and_stops_consuming(
    test_settings: Settings, consumer: QueueConsumer, amqp: pika.BlockingConnection
) -> None:
    _publish(test_settings, 3)
    consumer.consume(prefetch=10)
    deadline = time.monotonic() + 5
    while len(consumer._arrived) < 3 and time.monotonic() < deadline:  # delivered, not taken
        consumer.pump()
        time.sleep(0.01)

    consumer.pause()

    assert not consumer.consuming and consumer.take_arrivals() == []
    deadline = time.monotonic() + 5
    while _ready(amqp) != 3:
        assert time.monotonic() < deadline, "the messages did not go back to the queue"
        time.sleep(0.05)


def test_a_rejected_message_is_dead_lettered_and_a_nacked_one_comes_back(
    test_settings: Settings, consumer: QueueConsumer, amqp: pika.BlockingConnection
) -> None:
    _publish(test_settings, 2)
    consumer.consume(prefetch=10)
    (first, _), (second, _) = _collect(consumer, 2)

    consumer.reject(first, consumer.generation)
    consumer.nack(second, consumer.generation)

    again = _collect(consumer, 1)
    assert len(again) == 1
    consumer.ack([again[0][0]], consumer.generation)
    consumer.pump()
    channel = amqp.channel()
    deadline = time.monotonic() + 5
    while channel.queue_declare("failed.queue", passive=True).method.message_count != 1:
        assert time.monotonic() < deadline, "the rejected message is not in the DLQ"
        time.sleep(0.05)


def test_a_new_prefetch_applies_to_the_running_consumer(
    test_settings: Settings, consumer: QueueConsumer, amqp: pika.BlockingConnection
) -> None:
    """RabbitMQ applies `basic.qos` to consumers created after it: after a breaker's half-open
    trial (prefetch 1) the consumer must really take the full prefetch again."""
    _publish(test_settings, 8)
    consumer.consume(prefetch=1)
    first = _collect(consumer, 1)
    time.sleep(0.2)
    consumer.pump()
    assert len(first) + len(consumer.take_arrivals()) == 1  # one at a time, unacked

    consumer.set_prefetch(5)
    more = _collect(consumer, 5)
    time.sleep(0.2)
    consumer.pump()
    more += consumer.take_arrivals()
    # Five to the new consumer (its limit counts its own deliveries); the first is still ours.
    assert len(more) == 5
    consumer.ack([tag for tag, _ in first + more], consumer.generation)
    assert len(_collect(consumer, 2)) == 2  # the rest, now that there is room


def test_the_bulk_queue_is_consumed_with_the_work_queue(
    test_settings: Settings, amqp: pika.BlockingConnection
) -> None:
    both = QueueConsumer(test_settings.amqp_url, "email.queue", "clarion-tests-lanes",
                         bulk_queue="email.bulk.queue")
    both.connect()
    try:
        amqp.channel().queue_purge("email.bulk.queue")
        publisher = broker.BatchPublisher(test_settings.amqp_url, "clarion-tests-feed")
        try:
            publisher.publish([broker.Envelope(broker.EXCHANGE, key, {}, b'{"n": 1}')
                               for key in ("email", "email.bulk", "email.bulk")])
        finally:
            publisher.close()
        both.consume(prefetch=10)
        got = _collect(both, 3)
        assert len(got) == 3
        both.ack([tag for tag, _ in got], both.generation)
        assert int(amqp.channel().queue_declare("email.bulk.queue", passive=True)
                   .method.message_count) == 0
    finally:
        both.close()
