"""The record cache's hit/miss counters and deferred invalidation, exactly, against the real Redis.

The running API's counters (`cache:user:*`, `cache:template:*`) are shared by every test run on
the machine, so the API tests can only see them grow; here each test counts under a name of its
own in `clarion:stats`. The counting `client` comes from tests/persistence/conftest.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from clarion.persistence import cache
from clarion.persistence.records import User

if TYPE_CHECKING:
    from tests.persistence.conftest import CountingRedis  # the `client` fixture's type

pytestmark = pytest.mark.integration


@pytest.fixture
def name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def users(client: CountingRedis, name: str) -> Iterator[cache.RecordCache[User]]:
    prefix = f"test-users-{name}"
    yield cache.RecordCache(client, prefix, 60, User.to_json, User.from_json, stats=name)
    client.fail_deletes = False
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.hdel(cache.STATS_KEY, *cache.stats_fields(name))


def counted(client: redis.Redis, name: str) -> tuple[int, int]:
    hit, miss = client.hmget(cache.STATS_KEY, list(cache.stats_fields(name)))
    return int(hit or 0), int(miss or 0)


def test_a_batch_counts_its_hits_and_misses_in_the_same_round_trip_as_its_read(
    users: cache.RecordCache[User], client: CountingRedis, name: str
) -> None:
    users.set_many({"a": User("a"), "b": User("b")})
    users.get_many(["warm-up"])  # on a fresh Redis, the first call also loads the script
    client.commands.clear()

    found = users.get_many(["a", "b", "c", "d", "e", "a"])

    assert found == {"a": User("a"), "b": User("b")}
    assert client.commands == ["EVALSHA"]
    assert counted(client, name) == (2, 1 + 3)
    assert cache.stats_fields(name) == (f"cache:{name}:hit", f"cache:{name}:miss")


def test_counters_add_up_over_batches(users: cache.RecordCache[User], client: CountingRedis,
                                      name: str) -> None:
    users.get_many(["a"])
    users.set_many({"a": User("a")})
    users.get_many(["a"])
    users.get_many(["a", "z"])

    assert counted(client, name) == (2, 2)


def test_a_cache_without_a_name_counts_nothing_and_reads_with_one_mget(
    client: CountingRedis, name: str
) -> None:
    plain = cache.RecordCache(client, f"test-users-{name}", 60, User.to_json, User.from_json)

    plain.get_many(["a", "b"])

    assert client.commands == ["MGET"]
    assert counted(client, name) == (0, 0)


def test_an_invalidation_redis_missed_is_done_by_the_next_read_before_it_reads(
    users: cache.RecordCache[User], client: CountingRedis
) -> None:
    users.set_many({"a": User("a", preferred_language="fr"), "b": User("b")})
    client.fail_deletes = True
    with pytest.raises(redis.ConnectionError):
        users.invalidate(["a"])
    client.fail_deletes = False

    found = users.get_many(["a", "b"])

    assert found == {"b": User("b")}  # the stale "a" was deleted, not served
    assert users.get_many(["a"]) == {}
