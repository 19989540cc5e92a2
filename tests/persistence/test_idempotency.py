"""Idempotency keys in the real Redis: reserved once, replayed exactly, never stuck."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from clarion.config.settings import Settings
from clarion.persistence import cache
from clarion.persistence.idempotency import IdempotencyStore

pytestmark = pytest.mark.integration


@pytest.fixture
def client(test_settings: Settings) -> Iterator[redis.Redis]:
    connection = cache.connect(test_settings.redis_url)
    yield connection
    connection.close()


def _key() -> str:
    return f"key:tests|{uuid.uuid4().hex}"


def _store(client: redis.Redis, owner: str, pending_ttl: float = 20) -> IdempotencyStore:
    return IdempotencyStore(client, owner, pending_ttl=pending_ttl)


def test_a_key_is_reserved_once_and_a_repeat_in_the_same_call_is_in_flight(
    client: redis.Redis,
) -> None:
    store = _store(client, "gateway-a")
    store.beat(3)
    key = _key()

    found = store.reserve([(key, "fp"), (key, "fp")])

    assert [r.outcome for r in found] == ["reserved", "in_flight"]
    assert store.reserve([(key, "fp")])[0].outcome == "in_flight"
    assert store.reserve([(key, "other")])[0].outcome == "mismatch"


def test_a_completed_key_replays_exactly_the_first_answer(client: redis.Redis) -> None:
    store = _store(client, "gateway-a")
    key = _key()
    store.reserve([(key, "fp")])
    data = {"notification_id": "n-1", "status": "queued", "channels": {"email": "queued"}}

    store.complete([(key, "fp", 202, data, "notification accepted")])

    again = _store(client, "gateway-b").reserve([(key, "fp")])[0]
    assert (again.outcome, again.status, again.data, again.message) == (
        "replay", 202, data, "notification accepted")
    assert client.ttl(f"clarion:idem:{key}") > 23 * 3600


def test_a_pending_reservation_lives_about_twice_the_request_timeout_not_a_day(
    client: redis.Redis,
) -> None:
    store = _store(client, "gateway-a", pending_ttl=20)
    store.beat(3)
    key = _key()
    store.reserve([(key, "fp")])

    assert 15 <= client.ttl(f"clarion:idem:{key}") <= 20


def test_the_reservation_of_a_gateway_that_stopped_beating_is_taken_over(
    client: redis.Redis,
) -> None:
    dead, alive = _store(client, f"gateway-dead-{uuid.uuid4().hex}"), _store(client, "gateway-b")
    dead.beat(0.2)
    key = _key()
    assert dead.reserve([(key, "fp")])[0].outcome == "reserved"
    assert alive.reserve([(key, "fp")])[0].outcome == "in_flight"  # its owner is still beating

    time.sleep(0.3)  # the owner was kill -9'd: its mark expires

    assert alive.reserve([(key, "fp")])[0].outcome == "reserved"
    # Taken over once: a third try finds the new owner alive... once it beats.
    alive.beat(3)
    assert _store(client, "gateway-c").reserve([(key, "fp")])[0].outcome == "in_flight"


def test_a_released_key_can_be_used_again(client: redis.Redis) -> None:
    store = _store(client, "gateway-a")
    key = _key()
    store.reserve([(key, "fp")])

    store.release([key])

    assert store.reserve([(key, "fp")])[0].outcome == "reserved"
