"""The delivery message and its AMQP framing (persistence/delivery_message.py)."""

from __future__ import annotations

import json

import pytest

from clarion.persistence import broker
from clarion.persistence.delivery_message import DeliveryMessage, MalformedMessage

EMAIL = DeliveryMessage("n-1", "email", "user-1", "req-1", 1, 1700000000.5,
                        {"to": "ada@example.test", "subject": "Hi", "body": "Hello",
                         "html_body": None})


def test_a_message_goes_to_its_channel_through_the_exchange_with_its_tracing_headers() -> None:
    envelope = EMAIL.to_amqp()

    assert (envelope.exchange, envelope.routing_key) == ("notifications", "email")
    assert envelope.headers == {"x-request-id": "req-1", "x-notification-id": "n-1",
                                "x-attempt": 1}
    assert json.loads(envelope.body) == EMAIL.body


def test_the_wire_body_is_flat_as_the_provider_clients_read_it() -> None:
    assert EMAIL.body == {"notification_id": "n-1", "user_id": "user-1", "request_id": "req-1",
                          "attempt": 1, "accepted_at": 1700000000.5, "channel": "email",
                          "to": "ada@example.test", "subject": "Hi", "body": "Hello",
                          "html_body": None}


def test_a_message_survives_the_round_trip_through_the_broker() -> None:
    assert DeliveryMessage.from_amqp(EMAIL.to_amqp().body) == EMAIL


def test_a_message_straight_to_a_queue_carries_extra_headers() -> None:
    envelope = EMAIL.next_attempt().to_amqp("email.retry.5s", **{"x-last-error": "timeout"})

    assert (envelope.exchange, envelope.routing_key) == ("", "email.retry.5s")
    assert envelope.headers["x-attempt"] == 2 and envelope.headers["x-last-error"] == "timeout"


def test_the_next_attempt_may_change_the_content_and_a_replay_starts_over() -> None:
    push = DeliveryMessage("n-2", "push", content={"tokens": ["a", "b"], "title": "Hi"})

    again = push.next_attempt(tokens=["b"])

    assert (again.attempt, again.content) == (2, {"tokens": ["b"], "title": "Hi"})
    assert again.next_attempt().first_attempt().attempt == 1
    assert push.content["tokens"] == ["a", "b"]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"channel": "email"}',
                                  b'{"notification_id": "n", "channel": "email", "attempt": "x"}'])
def test_anything_else_is_a_malformed_message(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        DeliveryMessage.from_amqp(body)


def test_a_message_from_before_the_attempt_field_is_its_first_attempt() -> None:
    old = DeliveryMessage.from_body({"notification_id": "n-3", "channel": "push",
                                     "tokens": ["t"]})

    assert (old.attempt, old.accepted_at, old.content) == (1, None, {"tokens": ["t"]})


def test_a_bulk_message_keeps_its_lane_through_the_broker_retries_and_replays() -> None:
    bulk = DeliveryMessage("n-1", "email", "u-1", "r-1", content={"to": "a@example.com"},
                           lane="bulk")
    envelope = bulk.to_amqp()
    assert (envelope.exchange, envelope.routing_key) == (broker.EXCHANGE, "email.bulk")
    assert DeliveryMessage.from_amqp(envelope.body) == bulk
    assert bulk.next_attempt().lane == "bulk" and bulk.first_attempt().lane == "bulk"
    assert broker.retry_queue("email", 5, bulk.lane) == "email.bulk.retry.5s"
    assert "lane" not in DeliveryMessage("n-1", "email").body  # transactional: as before
