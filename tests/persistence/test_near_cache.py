"""NearCache against the real Redis: kept while subscribed, evicted by the owner's writes."""

from __future__ import annotations

import select
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from clarion.config.settings import Settings
from clarion.persistence import cache
from clarion.persistence.near_cache import NearCache, publish_invalidations

pytestmark = pytest.mark.integration


@pytest.fixture
def client(test_settings: Settings) -> Iterator[redis.Redis]:
    connection = cache.connect(test_settings.redis_url)
    yield connection
    connection.close()


@pytest.fixture
def kind() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"  # a channel of its own: test runs never meet


def _wait_for_message(near: NearCache, timeout: float = 2.0) -> None:
    fileno = near.fileno()
    assert fileno is not None
    select.select([fileno], [], [], timeout)
    near.drain()


def test_a_record_is_kept_until_its_owner_invalidates_it(client: redis.Redis, kind: str) -> None:
    near: NearCache[str] = NearCache(client, kind)
    assert near.connect()
    near.put_many({"ada": "v1", "bob": "v1"}, near.now())
    assert near.get_many(["ada", "bob", "eve"]) == {"ada": "v1", "bob": "v1"}

    publish_invalidations(client, kind, ["ada"])
    _wait_for_message(near)

    assert near.get_many(["ada", "bob"]) == {"bob": "v1"}
    near.close()


def test_an_answer_read_before_an_invalidation_that_overtook_it_is_not_kept(
        client: redis.Redis, kind: str) -> None:
    near: NearCache[str] = NearCache(client, kind)
    assert near.connect()
    asked_at = near.now()  # the Gateway asks Users...
    publish_invalidations(client, kind, ["ada"])  # ...Users writes meanwhile...
    _wait_for_message(near)

    near.put_many({"ada": "old"}, asked_at)  # ...and the answer (read before the write) arrives

    assert near.get_many(["ada"]) == {}
    near.put_many({"ada": "new"}, near.now())
    assert near.get_many(["ada"]) == {"ada": "new"}
    near.close()


def test_nothing_is_kept_while_unsubscribed_and_a_dropped_link_forgets_everything(
        client: redis.Redis, kind: str) -> None:
    near: NearCache[str] = NearCache(client, kind)
    near.put_many({"ada": "v1"}, near.now())
    assert near.get_many(["ada"]) == {}  # never subscribed: an eviction could be missed

    assert near.connect()
    near.put_many({"ada": "v1"}, near.now())
    client.client_kill_filter(_type="pubsub")  # Redis drops the subscription
    deadline = time.monotonic() + 2
    while near.subscribed and time.monotonic() < deadline:
        _wait_for_message(near, 0.2)

    assert not near.subscribed
    assert near.get_many(["ada"]) == {}
    near.close()


def test_entries_expire_after_their_time_to_live(client: redis.Redis, kind: str) -> None:
    now = [100.0]
    near: NearCache[str] = NearCache(client, kind, ttl=5, clock=lambda: now[0])
    assert near.connect()
    near.put_many({"ada": "v1"}, now[0])

    now[0] += 6

    assert near.get_many(["ada"]) == {}
    near.close()
