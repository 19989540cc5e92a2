"""http/auth.py without a server: the access table, what each grant may call, and the key
checker's memory and per-address budget (on an injected clock; the running app is
tests/security/)."""

from __future__ import annotations

import asyncio

import pytest

from clarion.http.auth import (
    ADMIN,
    ANONYMOUS_GRANT,
    FALLBACK,
    INTERNAL_GRANT,
    PUBLIC,
    SEND,
    AddressBuckets,
    Grant,
    KeyChecker,
    KeyRecord,
    TooManyAttempts,
    rule_for,
)

SEND_KEY = Grant("key:billing", SEND, 1)
ADMIN_KEY = Grant("key:ops", ADMIN, 2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("method", "path", "need"), [
    ("GET", "/health", PUBLIC), ("GET", "/health/ready", PUBLIC),
    ("GET", "/openapi.json", PUBLIC), ("GET", "/docs", PUBLIC), ("GET", "/admin", PUBLIC),
    ("POST", "/admin/login", PUBLIC), ("GET", "/admin/assets/console.js", PUBLIC),
    ("POST", "/v1/notifications", SEND), ("POST", "/v1/notifications/batch", SEND),
    ("GET", "/v1/notifications", SEND), ("GET", "/v1/notifications/abc", SEND),
    ("GET", "/v1/users", ADMIN), ("DELETE", "/v1/users/u1", ADMIN),
    ("POST", "/v1/templates/render", ADMIN), ("GET", "/v1/dlq", ADMIN),
    ("GET", "/v1/outbox", ADMIN), ("GET", "/metrics", ADMIN), ("GET", "/admin/api/host", ADMIN),
    ("GET", "/v1/system/cluster", ADMIN),
])
def test_each_route_needs_what_the_table_says(method: str, path: str, need: str) -> None:
    assert rule_for(method, path).need == need


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/users"), ("GET", "/nothing"), ("GET", ""), ("DELETE", "/v1/notifications"),
    ("POST", "/health"), ("GET", "/v1/notifications/a/b"), ("GET", "/clarion/v1/users"),
])
def test_a_call_no_rule_names_needs_an_admin_key(method: str, path: str) -> None:
    assert rule_for(method, path) is FALLBACK
    assert not SEND_KEY.may(FALLBACK) and not INTERNAL_GRANT.may(FALLBACK)
    assert ADMIN_KEY.may(FALLBACK)


def test_a_send_key_reaches_only_the_send_routes() -> None:
    assert SEND_KEY.may(rule_for("POST", "/v1/notifications"))
    assert SEND_KEY.may(rule_for("GET", "/v1/notifications/x"))
    assert SEND_KEY.may(rule_for("DELETE", "/v1/notifications/x"))  # cancels its own only
    assert not SEND_KEY.may(rule_for("GET", "/v1/users"))
    assert not SEND_KEY.may(rule_for("GET", "/metrics"))
    assert ADMIN_KEY.may(rule_for("GET", "/v1/users"))


def test_the_internal_secret_reaches_only_the_management_routes() -> None:
    assert INTERNAL_GRANT.may(rule_for("POST", "/v1/users"))
    assert INTERNAL_GRANT.may(rule_for("GET", "/metrics"))
    assert not INTERNAL_GRANT.may(rule_for("POST", "/v1/notifications"))
    assert not INTERNAL_GRANT.may(rule_for("GET", "/v1/outbox"))
    assert not ANONYMOUS_GRANT.may(rule_for("GET", "/v1/notifications"))


def _checker(clock: Clock, known: dict[str, KeyRecord], lookups: list[str],
             per_second: float = 2.0) -> KeyChecker:
    async def lookup(digest: str) -> KeyRecord | None:
        lookups.append(digest)
        return known.get(digest)

    return KeyChecker(lookup, per_second, cache_seconds=30, negative_seconds=5, clock=clock)


def _digest(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def test_a_wrong_key_is_looked_up_once_and_remembered_for_a_few_seconds() -> None:
    clock, lookups = Clock(), list[str]()
    checker = _checker(clock, {}, lookups)

    for _ in range(50):
        assert asyncio.run(checker.record("clk_wrong", "10.0.0.1")) is None
    assert len(lookups) == 1
    clock.now += 5.1
    assert asyncio.run(checker.record("clk_wrong", "10.0.0.1")) is None
    assert len(lookups) == 2


def test_unknown_keys_from_one_address_are_refused_before_the_lookup_once_its_budget_is_spent(
) -> None:
    clock, lookups = Clock(), list[str]()
    record = KeyRecord(7, "ops", ADMIN)
    checker = _checker(clock, {_digest("clk_good"): record}, lookups)
    assert asyncio.run(checker.record("clk_good", "10.0.0.1")) == record

    asyncio.run(checker.record("clk_a", "10.0.0.1"))
    with pytest.raises(TooManyAttempts) as refused:
        asyncio.run(checker.record("clk_b", "10.0.0.1"))
    assert 0 < refused.value.retry_after <= 0.5
    assert len(lookups) == 2  # the good key and clk_a: clk_b never reached the database
    # A remembered key still passes, and another address has a budget of its own.
    assert asyncio.run(checker.record("clk_good", "10.0.0.1")) == record
    assert asyncio.run(checker.record("clk_c", "10.0.0.2")) is None
    clock.now += 0.5
    assert asyncio.run(checker.record("clk_b", "10.0.0.1")) is None


def test_an_address_bucket_refills_at_its_rate_and_holds_at_least_one_token() -> None:
    clock = Clock()
    buckets = AddressBuckets(0.5, clock)

    assert buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(2.0)
    clock.now += 2
    assert buckets.take("a") == 0


def test_lookup_failures_are_not_remembered() -> None:
    calls: list[str] = []

    async def failing(digest: str) -> KeyRecord | None:
        calls.append(digest)
        raise OSError("database away")

    checker = KeyChecker(failing, 100.0)
    for _ in range(2):
        with pytest.raises(OSError):
            asyncio.run(checker.record("clk_x", "10.0.0.1"))
    assert len(calls) == 2
