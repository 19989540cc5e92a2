"""Safe retries: a send keeps one idempotency key through its retries of 503, 504, 429 and lost
connections, with growing, jittered waits and a bounded number of attempts; a call that is not
safe to repeat is tried again only when Clarion did nothing with it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from clarion_client import (
    ConnectionFailed,
    RateLimited,
    ServerError,
    Unavailable,
)
from clarion_client.retry import RetryPolicy, compute_backoff
from fakes import ACCEPTED, Script, envelope, refusal


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    highest = [compute_backoff(n, 0.5, 8.0, lambda low, high: high) for n in range(1, 8)]

    assert highest == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_jitter_stays_between_half_and_all_of_the_wait() -> None:
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return low

    assert compute_backoff(3, 0.5, 8.0, uniform) == 1.0
    assert asked == [(1.0, 2.0)]


def test_a_policy_refuses_fewer_than_one_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_a_send_reuses_its_idempotency_key_across_503_504_and_connection_errors() -> None:
    script = Script(refusal(503, "actor_restarted"), refusal(504, "timeout"),
                    httpx.ReadTimeout("lost"), envelope(ACCEPTED, 202))

    with script.client(max_attempts=4) as clarion:
        accepted = clarion.notifications.send("u-1", "welcome", {"name": "Ada"})

    assert accepted.notification_id == ACCEPTED["notification_id"]
    keys = script.header("idempotency-key")
    assert len(keys) == 4 and keys[0] and len(set(keys)) == 1
    assert len(set(script.header("x-request-id"))) == 1  # the retries show as one request
    assert script.bodies()[0] == script.bodies()[3]


def test_each_send_makes_its_own_key_unless_the_caller_gives_one() -> None:
    script = Script(envelope(ACCEPTED, 202))

    with script.client() as clarion:
        clarion.notifications.send("u-1", "welcome")
        clarion.notifications.send("u-1", "welcome")
        clarion.notifications.send("u-1", "welcome", idempotency_key="order-42")

    first, second, given = script.header("idempotency-key")
    assert first and second and first != second
    assert given == "order-42"


def test_the_waits_grow_between_attempts() -> None:
    script = Script(refusal(503, "actor_restarted"), refusal(503, "actor_restarted"),
                    refusal(503, "actor_restarted"), envelope(ACCEPTED, 202))

    with script.client(max_attempts=4, base_delay=0.5) as clarion:
        clarion.notifications.send("u-1", "welcome")

    assert script.sleeps == [0.5, 1.0, 2.0]


def test_a_429_waits_its_retry_after() -> None:
    script = Script(refusal(429, "rate_limited", headers={"Retry-After": "3"}),
                    envelope(ACCEPTED, 202))

    with script.client() as clarion:
        clarion.notifications.send("u-1", "welcome")

    assert script.sleeps == [3.0]
    assert len(set(script.header("idempotency-key"))) == 1


def test_a_retry_after_longer_than_the_policy_allows_is_left_to_the_caller() -> None:
    script = Script(refusal(429, "rate_limited", headers={"Retry-After": "120",
                                                          "X-Request-ID": "req-9"}))

    with script.client(max_retry_after=30) as clarion, pytest.raises(RateLimited) as caught:
        clarion.notifications.send("u-1", "welcome")

    assert len(script.requests) == 1 and script.sleeps == []
    assert caught.value.retry_after == 120 and caught.value.code == "rate_limited"
    assert caught.value.request_id == "req-9"


def test_attempts_are_bounded_and_the_last_error_carries_the_key() -> None:
    script = Script(refusal(504, "timeout", "no answer in time"))

    with script.client(max_attempts=3) as clarion, pytest.raises(Unavailable) as caught:
        clarion.notifications.send("u-1", "welcome")

    assert len(script.requests) == 3
    assert caught.value.status == 504 and caught.value.code == "timeout"
    # The outcome is unknown: the caller may retry later with this same key.
    assert caught.value.idempotency_key == script.header("idempotency-key")[0]


def test_a_keyed_send_waits_for_its_own_attempt_still_in_flight() -> None:
    script = Script(refusal(504, "timeout"), refusal(409, "idempotency_in_progress"),
                    envelope(ACCEPTED, 202, headers={"Idempotent-Replayed": "true"}))

    with script.client() as clarion:
        accepted = clarion.notifications.send("u-1", "welcome")

    assert accepted.status == "queued" and len(script.requests) == 3


def test_a_500_is_not_retried() -> None:
    script = Script(refusal(500, "internal_error"))

    with script.client() as clarion, pytest.raises(ServerError) as caught:
        clarion.notifications.send("u-1", "welcome")

    assert len(script.requests) == 1 and caught.value.code == "internal_error"


def test_a_batch_is_not_retried_when_its_outcome_is_unknown() -> None:
    for unknown in (refusal(504, "timeout"), refusal(503, "actor_restarted"),
                    httpx.ReadTimeout("lost"), httpx.RemoteProtocolError("cut")):
        script = Script(unknown, envelope([], meta={"accepted": 0, "refused": 0}))
        with script.client() as clarion, pytest.raises((Unavailable, ConnectionFailed)):
            clarion.notifications.send_batch([{"user_id": "u-1", "template_key": "t"}])
        assert len(script.requests) == 1, unknown


def test_a_batch_is_retried_when_clarion_did_nothing_with_it() -> None:
    for untouched in (httpx.ConnectError("refused"), refusal(429, "rate_limited"),
                      refusal(503, "overloaded"), refusal(503, "storage_unavailable")):
        script = Script(untouched, envelope([], meta={"accepted": 0, "refused": 0}))
        with script.client() as clarion:
            clarion.notifications.send_batch([{"user_id": "u-1", "template_key": "t"}])
        assert len(script.requests) == 2, untouched


def test_writes_without_a_key_are_not_repeated_after_a_504() -> None:
    script = Script(refusal(504, "timeout"))

    with script.client() as clarion:
        for write in (lambda: clarion.notifications.cancel("n-1"),
                      lambda: clarion.users.create("u-1"),
                      lambda: clarion.templates.new_version("t", subject="s", body="b"),
                      lambda: clarion.dead_letters.replay(7),
                      lambda: clarion.suppressions.remove("a@example.com", reason="asked")):
            with pytest.raises(Unavailable):
                write()

    assert len(script.requests) == 5


def test_reads_and_idempotent_writes_are_retried_after_a_504() -> None:
    user: dict[str, Any] = {"user_id": "u-1", "email_address": None, "phone_number": None,
            "preferred_language": "en", "preferences": {}, "push_tokens": ["tok"]}
    script = Script(refusal(504, "timeout"), envelope(user))

    with script.client() as clarion:
        assert clarion.users.get("u-1").user_id == "u-1"
        script.answers = [refusal(504, "timeout"), envelope(user, 201)]
        assert clarion.users.add_push_token("u-1", "tok").push_tokens == ["tok"]

    assert [r.method for r in script.requests] == ["GET", "GET", "POST", "POST"]


def test_a_connection_that_never_opened_is_retried_then_raised() -> None:
    script = Script(httpx.ConnectError("connection refused"))

    with script.client(max_attempts=2) as clarion, pytest.raises(ConnectionFailed) as caught:
        clarion.users.create("u-1")

    assert len(script.requests) == 2
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.status is None and caught.value.code == "connection_failed"


def test_no_retries_makes_one_attempt() -> None:
    script = Script(refusal(503, "overloaded"))

    with script.client(max_attempts=1) as clarion, pytest.raises(Unavailable):
        clarion.notifications.send("u-1", "welcome")

    assert len(script.requests) == 1


def test_the_async_client_retries_the_same_way() -> None:
    script = Script(refusal(503, "actor_restarted"), httpx.ReadTimeout("lost"),
                    envelope(ACCEPTED, 202))

    async def main() -> str:
        async with script.async_client() as clarion:
            accepted = await clarion.notifications.send("u-1", "welcome")
            return accepted.notification_id

    assert asyncio.run(main()) == ACCEPTED["notification_id"]
    assert len(set(script.header("idempotency-key"))) == 1 and len(script.requests) == 3
    assert script.sleeps == [0.5, 1.0]
