"""Fixtures for the users and templates API tests: one running Clarion per test module, over
real HTTP, with the real PostgreSQL, Redis and RabbitMQ of the session.

Ids are unique per test (uuid4), since the database and Redis database 15 are shared.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.stack import Stack, running_stack

Factory = Callable[..., dict[str, Any]]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator,
                       tmp_path_factory.mktemp("stack-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> httpx.Client:
    """A client that sends a valid API key."""
    return stack.client()


@pytest.fixture(scope="module")
def cache(stack: Stack) -> Iterator[redis.Redis]:
    """The Redis database the stack caches in."""
    client = redis.Redis.from_url(stack.settings.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def make_user(api: httpx.Client) -> Factory:
    def make(**fields: Any) -> dict[str, Any]:
        body = {"user_id": uid("u"), "email_address": f"{uuid.uuid4().hex[:12]}@example.com",
                **fields}
        reply = api.post("/v1/users", json=body)
        assert reply.status_code == 201, reply.text
        return dict(reply.json()["data"])

    return make


@pytest.fixture
def make_template(api: httpx.Client) -> Factory:
    def make(key: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"template_key": key or uid("t"), "language": "en",
                "subject": "Hello {{ name }}", "body": "Dear {{ name }}, welcome.", **fields}
        reply = api.post("/v1/templates", json=body)
        assert reply.status_code == 201, reply.text
        return dict(reply.json()["data"])

    return make


@pytest.fixture
def counters(cache: redis.Redis) -> Callable[[], dict[str, int]]:
    """Reads the cache counters in `clarion:stats` (a missing field is 0)."""
    fields = ("cache:user:hit", "cache:user:miss", "cache:template:hit", "cache:template:miss")

    def read() -> dict[str, int]:
        values = cache.hmget("clarion:stats", list(fields))
        return {f: int(v or 0) for f, v in zip(fields, values, strict=True)}

    return read
