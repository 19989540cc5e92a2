"""The RabbitMQ topology and the batch publisher, against the real broker.

Topology checks run on a throwaway vhost; publishing runs on the test vhost, whose work queues and
DLQ the `amqp` fixture empties before and after each test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from clarion.persistence import broker
from clarion.persistence.broker import Outgoing

pytestmark = pytest.mark.integration

# The documented topology (persistence/broker.py, ARCHITECTURE.md), spelled out rather than taken
# from the module, so that a change to it shows up here.
FAILED_QUEUE_ARGUMENTS = {
    "x-message-ttl": 24 * 3600 * 1000,
    "x-max-length": 10_000,
    "x-overflow": "drop-head",
}
WORK_QUEUE_ARGUMENTS = {
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": "failed.queue",
}
WORK_QUEUES = ("email.queue", "push.queue")

DEADLINE = 5.0  # seconds to wait for a message the broker is moving


def _channel(conn: pika.BlockingConnection) -> BlockingChannel:
    return conn.channel()


def _refused(conn: pika.BlockingConnection, declare: Any) -> int:
    """Run `declare(channel)` on a channel of its own; the broker's reply code (0 if accepted)."""
    channel = conn.channel()
    try:
        declare(channel)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return int(exc.reply_code)
    channel.close()
    return 0


def _get(channel: BlockingChannel, queue: str, deadline: float = DEADLINE) -> tuple[Any, ...]:
    """The next message of `queue` (method, properties, body), waiting up to `deadline`."""
    end = time.monotonic() + deadline
    while True:
        method, properties, body = channel.basic_get(queue)
        if method is not None:
            return method, properties, body
        if time.monotonic() > end:
            pytest.fail(f"no message in {queue} within {deadline} s")
        time.sleep(0.01)


def _depth(channel: BlockingChannel, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def _message(channel: str = "email", **body: Any) -> Outgoing:
    nid = str(uuid.uuid4())
    content = {"notification_id": nid, "channel": channel, **body}
    return Outgoing(channel, content, {"request_id": f"req-{nid}", "attempt": 1})


@pytest.fixture
def fresh_amqp(fresh_vhost_url: str) -> Iterator[pika.BlockingConnection]:
    conn = broker.connect(fresh_vhost_url, "clarion-tests-topology")
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


# Topology


def test_declare_topology_creates_the_exchange_and_every_queue(
    fresh_amqp: pika.BlockingConnection,
) -> None:
    assert _refused(fresh_amqp, lambda ch: ch.exchange_declare("notifications", passive=True)) \
        == 404

    broker.declare_topology(_channel(fresh_amqp))

    channel = _channel(fresh_amqp)
    channel.exchange_declare("notifications", passive=True)
    for queue in (*WORK_QUEUES, "failed.queue"):
        assert _depth(channel, queue) == 0


def test_declare_topology_is_idempotent_and_keeps_queued_messages(
    fresh_amqp: pika.BlockingConnection,
) -> None:
    channel = _channel(fresh_amqp)
    broker.declare_topology(channel)
    channel.basic_publish("notifications", "email", b"{}")
    channel.basic_publish("notifications", "push", b"{}")

    broker.declare_topology(channel)
    broker.declare_topology(_channel(fresh_amqp))

    end = time.monotonic() + DEADLINE
    while (_depth(channel, "email.queue"), _depth(channel, "push.queue")) != (1, 1):
        assert time.monotonic() < end, "the messages did not survive a second declaration"
        time.sleep(0.01)


def test_the_exchange_is_durable_and_direct(fresh_amqp: pika.BlockingConnection) -> None:
    broker.declare_topology(_channel(fresh_amqp))

    assert _refused(fresh_amqp, lambda ch: ch.exchange_declare(
        "notifications", exchange_type="direct", durable=True)) == 0
    assert _refused(fresh_amqp, lambda ch: ch.exchange_declare(
        "notifications", exchange_type="fanout", durable=True)) == 406
    assert _refused(fresh_amqp, lambda ch: ch.exchange_declare(
        "notifications", exchange_type="direct", durable=False)) == 406


def test_the_dead_letter_queue_has_the_documented_ttl_length_and_overflow(
    fresh_amqp: pika.BlockingConnection,
) -> None:
    broker.declare_topology(_channel(fresh_amqp))

    def declare(arguments: dict[str, Any], durable: bool = True) -> int:
        return _refused(fresh_amqp, lambda ch: ch.queue_declare(
            "failed.queue", durable=durable, arguments=arguments))

    assert declare(FAILED_QUEUE_ARGUMENTS) == 0
    assert declare({**FAILED_QUEUE_ARGUMENTS, "x-message-ttl": 3600 * 1000}) == 406
    assert declare({**FAILED_QUEUE_ARGUMENTS, "x-max-length": 100}) == 406
    assert declare({**FAILED_QUEUE_ARGUMENTS, "x-overflow": "reject-publish"}) == 406
    assert declare({}) == 406
    assert declare(FAILED_QUEUE_ARGUMENTS, durable=False) == 406


@pytest.mark.parametrize("queue", WORK_QUEUES)
def test_work_queues_dead_letter_into_the_failed_queue(
    fresh_amqp: pika.BlockingConnection, queue: str
) -> None:
    broker.declare_topology(_channel(fresh_amqp))

    def declare(arguments: dict[str, Any], durable: bool = True) -> int:
        return _refused(fresh_amqp, lambda ch: ch.queue_declare(
            queue, durable=durable, arguments=arguments))

    assert declare(WORK_QUEUE_ARGUMENTS) == 0
    assert declare({**WORK_QUEUE_ARGUMENTS, "x-dead-letter-routing-key": queue}) == 406
    assert declare({**WORK_QUEUE_ARGUMENTS, "x-dead-letter-exchange": "notifications"}) == 406
    assert declare({}) == 406
    assert declare(WORK_QUEUE_ARGUMENTS, durable=False) == 406


# Publishing


def test_a_published_batch_lands_in_each_channels_queue_as_persistent_json(
    publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    emails = [_message("email", to=f"user{n}@example.test", n=n) for n in range(50)]
    pushes = [_message("push", tokens=[f"token-{n}"], n=n) for n in range(50)]
    interleaved = [m for pair in zip(emails, pushes) for m in pair]

    publisher.publish(interleaved)

    channel = _channel(amqp)
    for queue, sent in (("email.queue", emails), ("push.queue", pushes)):
        for expected in sent:
            method, properties, body = _get(channel, queue)
            assert method.exchange == "notifications"
            assert method.routing_key == expected.channel
            assert properties.delivery_mode == 2
            assert properties.content_type == "application/json"
            assert properties.headers == expected.headers
            assert json.loads(body) == expected.body
            channel.basic_ack(method.delivery_tag)
        assert _depth(channel, queue) == 0
    assert _depth(channel, "failed.queue") == 0


def test_an_empty_batch_publishes_nothing(
    publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    publisher.publish([])

    channel = _channel(amqp)
    assert [_depth(channel, q) for q in (*WORK_QUEUES, "failed.queue")] == [0, 0, 0]


def test_a_message_for_an_unknown_channel_is_unroutable(
    publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    with pytest.raises(broker.UnroutableError, match="fax"):
        publisher.publish([_message("fax", to="+15550100")])

    channel = _channel(amqp)
    assert [_depth(channel, q) for q in (*WORK_QUEUES, "failed.queue")] == [0, 0, 0]


def test_an_unroutable_message_does_not_break_the_publisher(
    publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    email = _message("email", to="ada@example.test")
    with pytest.raises(broker.UnroutableError):
        publisher.publish([email, _message("fax", to="+15550100")])

    later = _message("push", tokens=["t"])
    publisher.publish([later])  # no stale return from the previous batch is reported

    channel = _channel(amqp)
    # The documented contract: the batch was committed, only the unroutable message is lost.
    method, _, body = _get(channel, "email.queue")
    assert json.loads(body) == email.body
    channel.basic_ack(method.delivery_tag)
    method, _, body = _get(channel, "push.queue")
    assert json.loads(body) == later.body
    channel.basic_ack(method.delivery_tag)


def test_a_rejected_message_ends_up_in_the_failed_queue(
    publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    message = _message("email", to="ada@example.test")
    publisher.publish([message])
    channel = _channel(amqp)
    method, _, _ = _get(channel, "email.queue")

    channel.basic_reject(method.delivery_tag, requeue=False)

    method, properties, body = _get(channel, "failed.queue")
    assert json.loads(body) == message.body
    assert properties.headers["request_id"] == message.headers["request_id"]
    death = properties.headers["x-death"][0]
    assert (death["queue"], death["reason"]) == ("email.queue", "rejected")
    channel.basic_ack(method.delivery_tag)
    assert _depth(channel, "email.queue") == 0


def test_the_publisher_reconnects_after_its_connection_is_closed_under_it(
    publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    first, second = _message("email", n=1), _message("email", n=2)
    publisher.publish([first])
    assert publisher._conn is not None

    publisher._conn.close()
    publisher.publish([second])

    channel = _channel(amqp)
    for expected in (first, second):
        method, _, body = _get(channel, "email.queue")
        assert json.loads(body) == expected.body
        channel.basic_ack(method.delivery_tag)


def test_the_publisher_reopens_a_channel_closed_under_it(
    publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    publisher.publish([_message("push", n=1)])
    assert publisher._channel is not None

    publisher._channel.close()
    message = _message("push", n=2)
    publisher.publish([message])

    channel = _channel(amqp)
    _get(channel, "push.queue")
    method, _, body = _get(channel, "push.queue")
    assert json.loads(body) == message.body
    channel.basic_ack(method.delivery_tag, multiple=True)


# Quorum queues (CLARION_QUEUE_TYPE=quorum): the same topology, replicated


def test_with_quorum_queues_the_ladder_and_the_dead_letter_queue_work_the_same(
    test_settings: Any,
) -> None:
    from tests.stack import rabbitmqctl

    vhost = f"clarion_quorum_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = test_settings.amqp_url.rpartition("/")[0] + "/" + vhost
        conn = broker.connect(url, "clarion-tests-quorum")
        try:
            broker.declare_topology(conn.channel(), "quorum")
            broker.declare_topology(conn.channel(), "quorum")  # idempotent
            # Every queue is a quorum queue: redeclaring one as classic is refused.
            for queue in (*WORK_QUEUES, "failed.queue", "email.retry.1s"):
                assert _refused(conn, lambda ch, q=queue: ch.queue_declare(
                    q, durable=True)) == 406
            channel = conn.channel()
            publisher = broker.BatchPublisher(url, "clarion-tests-quorum-pub", "quorum")
            try:
                # A retry waits its delay, then dead-letters back into the work queue...
                publisher.publish([broker.to_queue("email.retry.1s", {"n": 1}, {"x-attempt": 2})])
                started = time.monotonic()
                method, properties, body = _get(channel, "email.queue", deadline=10)
                assert time.monotonic() - started >= 0.5
                assert json.loads(body) == {"n": 1} and properties.headers["x-attempt"] == 2
                # ...and a rejected message lands in the DLQ.
                channel.basic_reject(method.delivery_tag, requeue=False)
                method, _, body = _get(channel, "failed.queue", deadline=10)
                assert json.loads(body) == {"n": 1}
                channel.basic_ack(method.delivery_tag)
            finally:
                publisher.close()
        finally:
            conn.close()
    finally:
        rabbitmqctl("delete_vhost", vhost)
