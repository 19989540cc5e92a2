"""The Redis record cache against the real Redis (database 15), one round trip per batch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from clarion.persistence import cache
from clarion.persistence.records import User

if TYPE_CHECKING:
    from tests.persistence.conftest import CountingRedis  # the `client` fixture's type

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    # A prefix of its own: other tests share Redis database 15.
    return f"test-users-{uuid.uuid4().hex}"


@pytest.fixture
def users(client: CountingRedis, prefix: str) -> Iterator[cache.RecordCache[User]]:
    yield cache.RecordCache(client, prefix, cache.USER_TTL, User.to_json, User.from_json)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def _user(n: int) -> User:
    return User(f"user-{n}", f"user{n}@example.test", None, "de", {"email": True, "n": n},
                ("token-1", "token-2"))


def test_users_round_trip_through_set_many_and_get_many(
    users: cache.RecordCache[User],
) -> None:
    records = {u.user_id: u for u in (_user(1), _user(2), User("bare"))}

    users.set_many(records)

    assert users.get_many(records) == records


def test_cached_records_are_stored_under_their_prefix_with_the_configured_ttl(
    users: cache.RecordCache[User], client: CountingRedis, prefix: str
) -> None:
    assert cache.USER_TTL == 3600
    users.set_many({"user-1": _user(1)})

    ttl = client.ttl(f"{prefix}:user-1")

    assert 3590 <= ttl <= 3600


def test_invalidate_removes_records_from_the_cache(users: cache.RecordCache[User]) -> None:
    users.set_many({"user-1": _user(1), "user-2": _user(2)})

    users.invalidate(["user-1", "unknown"])

    assert users.get_many(["user-1", "user-2"]) == {"user-2": _user(2)}
    users.invalidate([])


def test_get_many_returns_only_the_ids_it_knows(users: cache.RecordCache[User]) -> None:
    users.set_many({"user-1": _user(1)})

    assert users.get_many(["nobody", "user-1", "nobody-else", "user-1"]) == {"user-1": _user(1)}
    assert users.get_many(["nobody"]) == {}


def test_get_many_of_a_hundred_ids_is_a_single_mget(
    users: cache.RecordCache[User], client: CountingRedis
) -> None:
    users.set_many({f"user-{n}": _user(n) for n in range(50)})
    client.commands.clear()

    found = users.get_many(f"user-{n}" for n in range(100))

    assert client.commands == ["MGET"]
    assert found == {f"user-{n}": _user(n) for n in range(50)}


def test_set_many_writes_a_whole_batch_in_one_pipeline(
    users: cache.RecordCache[User], client: CountingRedis
) -> None:
    users.set_many({f"user-{n}": _user(n) for n in range(100)})

    assert client.commands == []
    assert client.pipelines == [100]


def test_empty_batches_send_nothing(
    users: cache.RecordCache[User], client: CountingRedis
) -> None:
    assert users.get_many([]) == {}
    users.set_many({})
    users.invalidate([])

    assert client.commands == [] and client.pipelines == []
