"""Finding: before a caller is known, nothing limited what it cost Clarion: every request with a
made-up key was a PostgreSQL query, a batch of 1,000 notifications cost one token of the key's
rate limit, and every `/health/ready` probed PostgreSQL, Redis, RabbitMQ and the actors.

Now a wrong key is remembered for a few seconds, each client address may have only so many
unknown keys looked up a second (beyond that: 429, before any lookup), a batch of N costs N
tokens, and `/health/ready` probes at most once a second."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from clarion.persistence import api_keys, database
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("flood"),
                       auth_lookups_per_second=2.0, rate_limit_per_second=1.0,
                       rate_limit_burst=10) as running:
        yield running


def _get(stack: Stack, key: str) -> httpx.Response:
    return httpx.get(stack.base_url + "/v1/notifications", params={"limit": 1}, timeout=15,
                     headers={"Authorization": f"Bearer {key}"})


def test_wrong_keys_are_remembered_and_unknown_ones_limited_per_address_before_any_lookup(
        stack: Stack) -> None:
    assert _get(stack, stack.api_key).status_code == 200  # looked up, now remembered
    wrong = f"clk_{uuid.uuid4().hex}"
    assert _get(stack, wrong).status_code == 401  # looked up once: remembered as wrong for 5 s

    # Made-up keys, each new: the address's budget (2 a second) runs out, then 429 at once.
    flood = [_get(stack, f"clk_{uuid.uuid4().hex}") for _ in range(12)]
    statuses = [reply.status_code for reply in flood]
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 6, statuses
    limited = next(reply for reply in flood if reply.status_code == 429)
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1

    # Meanwhile what is remembered costs no lookup, so no budget: the wrong key is still a
    # plain 401, and the real key still works.
    assert [_get(stack, wrong).status_code for _ in range(20)] == [401] * 20
    assert _get(stack, stack.api_key).status_code == 200
    time.sleep(1.1)  # the budget refills: a new key is looked up again
    assert _get(stack, f"clk_{uuid.uuid4().hex}").status_code == 401


def _batch(stack: Stack, key: str, count: int) -> httpx.Response:
    items = [{"user_id": f"nobody-{i}", "template_key": "none"} for i in range(count)]
    return httpx.post(stack.base_url + "/v1/notifications/batch", timeout=15,
                      json={"notifications": items},
                      headers={"Authorization": f"Bearer {key}"})


def test_a_batch_of_n_notifications_costs_n_tokens_of_the_keys_rate_limit(stack: Stack) -> None:
    time.sleep(1.1)  # whatever an earlier test left of this address's lookup budget refills
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        key = api_keys.create_api_key(conn, f"batch-{uuid.uuid4().hex[:6]}", scope="send")
        bigger = api_keys.create_api_key(conn, f"batch-{uuid.uuid4().hex[:6]}", scope="send")

    first = _batch(stack, key, 6)  # a full bucket of 10 at 1 a second
    assert first.status_code == 200, first.text
    assert first.headers["ratelimit-remaining"] == "4"
    second = _batch(stack, key, 6)
    assert second.status_code == 429 and second.json()["error"] == "rate_limited"
    assert int(second.headers["retry-after"]) >= 1
    # A batch the bucket could never pay for says so.
    over = _batch(stack, bigger, 11)
    assert over.status_code == 429 and "smaller batches" in over.json()["message"]


def test_readiness_probes_the_services_at_most_once_a_second(stack: Stack) -> None:
    def ready(_: int) -> float:
        reply = httpx.get(stack.base_url + "/health/ready", timeout=15)
        assert reply.status_code == 200
        return float(reply.json()["data"]["checked_at"])

    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        seen = list(pool.map(ready, range(100)))
    took = time.monotonic() - started

    probes = sorted(set(seen))
    assert len(probes) <= int(took) + 2, (len(probes), took)
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(probes)), probes
