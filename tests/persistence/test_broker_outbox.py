"""The transactional outbox's relay, against the real PostgreSQL and RabbitMQ.

A row leaves the outbox only in a transaction that commits after RabbitMQ confirmed its message;
relays running at once never publish the same row twice; a broker that refuses leaves the rows.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pika
import psycopg
import pytest

from clarion.config.settings import Settings
from clarion.persistence import broker, broker_outbox, database

pytestmark = pytest.mark.integration


def _envelopes(n: int, channel: str = "email") -> list[broker.Envelope]:
    return [broker.Outgoing(channel, {"notification_id": str(uuid.uuid4()), "n": i},
                            {"x-attempt": 1}).envelope() for i in range(n)]


def _add(db: psycopg.Connection, envelopes: list[broker.Envelope]) -> list[int]:
    with db.transaction(), db.cursor() as cur:
        return broker_outbox.add(cur, envelopes)


def _waiting(db: psycopg.Connection, ids: list[int]) -> int:
    row = db.execute("SELECT count(*) FROM broker_outbox WHERE message_id = ANY(%s)",
                     (ids,)).fetchone()
    assert row is not None
    return int(row[0])


def _drain(amqp: pika.BlockingConnection, queue: str) -> list[tuple[Any, bytes]]:
    """Every message now in `queue` (properties, body), acked; waits briefly for stragglers."""
    channel = amqp.channel()
    found: list[tuple[Any, bytes]] = []
    quiet_until = time.monotonic() + 0.5
    while time.monotonic() < quiet_until:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.02)
            continue
        found.append((properties, body))
        quiet_until = time.monotonic() + 0.5
    return found


def test_relayed_rows_are_published_in_order_and_deleted(
    db: psycopg.Connection, publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    envelopes = _envelopes(5)
    ids = _add(db, envelopes)

    assert broker_outbox.relay(db, publisher, ids) == 5

    assert _waiting(db, ids) == 0
    got = _drain(amqp, "email.queue")
    assert [body for _, body in got] == [e.body for e in envelopes]
    assert [p.headers["x-outbox-id"] for p, _ in got] == ids
    assert all(p.delivery_mode == 2 for p, _ in got)


def test_rows_stay_in_the_outbox_when_the_broker_cannot_be_reached(
    db: psycopg.Connection, test_settings: Settings, amqp: pika.BlockingConnection
) -> None:
    ids = _add(db, _envelopes(3))
    nowhere = broker.BatchPublisher("amqp://guest:guest@127.0.0.1:1/%2F", "clarion-tests-dead")

    with pytest.raises(broker.PublishError):
        broker_outbox.relay(db, nowhere, ids)

    assert _waiting(db, ids) == 3
    publisher = broker.BatchPublisher(test_settings.amqp_url, "clarion-tests-relay")
    try:
        assert broker_outbox.relay(db, publisher, ids) == 3
    finally:
        publisher.close()
    assert _waiting(db, ids) == 0
    assert len(_drain(amqp, "email.queue")) == 3


def test_an_unroutable_row_stays_while_the_rest_of_its_chunk_is_published(
    db: psycopg.Connection, publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    good = _envelopes(2)
    lost = broker.Envelope("notifications", "carrier-pigeon", {}, b"{}")
    ids = _add(db, [good[0], lost, good[1]])

    with pytest.raises(broker.UnroutableError):
        broker_outbox.relay(db, publisher, ids)

    assert _waiting(db, ids) == 1
    assert _waiting(db, [ids[1]]) == 1
    assert [body for _, body in _drain(amqp, "email.queue")] == [good[0].body, good[1].body]
    db.execute("DELETE FROM broker_outbox WHERE message_id = %s", (ids[1],))


def test_relays_running_at_once_publish_every_row_exactly_once(
    test_settings: Settings, db: psycopg.Connection, amqp: pika.BlockingConnection
) -> None:
    envelopes = _envelopes(600, "push")
    ids = _add(db, envelopes)
    published: list[int] = []
    errors: list[BaseException] = []

    def relay() -> None:
        publisher = broker.BatchPublisher(test_settings.amqp_url, "clarion-tests-race")
        try:
            with database.connect(test_settings.database_url, autocommit=True) as conn:
                while True:
                    sent = broker_outbox.relay(conn, publisher, ids, limit=50)
                    if not sent:
                        return
                    published.append(sent)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)
        finally:
            publisher.close()

    threads = [threading.Thread(target=relay) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors
    assert sum(published) == 600
    bodies = [json.loads(body)["n"] for _, body in _drain(amqp, "push.queue")]
    assert sorted(bodies) == list(range(600))
    assert _waiting(db, ids) == 0


def test_the_backlog_counts_waiting_rows_and_the_age_of_the_oldest(
    db: psycopg.Connection, publisher: broker.BatchPublisher, amqp: pika.BlockingConnection
) -> None:
    ids = _add(db, _envelopes(2))
    db.execute("UPDATE broker_outbox SET created_at = now() - interval '30 seconds'"
               " WHERE message_id = %s", (ids[0],))

    count, oldest = broker_outbox.backlog(db)

    assert count >= 2 and oldest >= 29
    broker_outbox.relay(db, publisher, ids)
    _drain(amqp, "email.queue")
