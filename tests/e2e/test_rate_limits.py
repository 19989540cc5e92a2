"""Per-API-key rate limits: a token bucket in Redis, over real HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("ratelimit"),
                       rate_limit_per_second=5.0, rate_limit_burst=5) as running:
        yield running


def test_a_key_over_its_burst_gets_429_with_retry_after_and_ratelimit_headers(
    stack: Stack,
) -> None:
    client = stack.client()
    replies = [client.get("/v1/outbox", params={"limit": 1}) for _ in range(8)]
    statuses = [r.status_code for r in replies]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    limited = next(r for r in replies if r.status_code == 429)
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-limit"] == "5"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert replies[0].headers["ratelimit-remaining"] == "4"

    time.sleep(1.1)  # five tokens a second refill
    assert client.get("/v1/outbox", params={"limit": 1}).status_code == 200


def test_each_api_key_has_its_own_bucket(stack: Stack) -> None:
    from clarion.persistence import api_keys, database

    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        other_key = api_keys.create_api_key(conn, f"other-{uuid.uuid4().hex[:6]}", scope="admin")
    client = stack.client()
    statuses = [client.get("/v1/outbox", params={"limit": 1}).status_code for _ in range(20)]
    assert 429 in statuses, "this key's bucket never ran dry"
    other = httpx.get(stack.base_url + "/v1/outbox", params={"limit": 1},
                      headers={"Authorization": f"Bearer {other_key}"})
    assert other.status_code == 200


def test_unauthenticated_requests_are_refused_before_they_spend_tokens(stack: Stack) -> None:
    time.sleep(1.1)  # the bucket the tests before emptied refills (five tokens a second)
    for _ in range(10):
        assert httpx.get(stack.base_url + "/v1/outbox").status_code == 401
    assert stack.client().get("/v1/outbox", params={"limit": 1}).status_code == 200
