"""The retry policy: how many attempts, how long between them, and what is worth retrying."""

from __future__ import annotations

import pytest

from clarion.supervision.retry import STORAGE, RetryPolicy


def test_a_ladder_gives_each_attempt_its_step_and_repeats_the_last() -> None:
    policy = RetryPolicy(max_attempts=10, delays=(1.0, 5.0, 30.0))

    assert [policy.next_delay(k) for k in range(1, 6)] == [1.0, 5.0, 30.0, 30.0, 30.0]


def test_after_the_last_attempt_there_is_no_next_one() -> None:
    policy = RetryPolicy(max_attempts=3, delays=(1.0,))

    assert policy.next_delay(2) == 1.0
    assert policy.next_delay(3) is None


def test_a_failure_that_is_not_retryable_is_never_retried() -> None:
    policy = RetryPolicy(max_attempts=5, delays=(1.0,), retryable=lambda f: f != "permanent")

    assert policy.next_delay(1, "passing") == 1.0
    assert policy.next_delay(1, "permanent") is None


def test_the_other_side_may_ask_for_a_longer_wait_never_a_shorter_one() -> None:
    policy = RetryPolicy(max_attempts=5, delays=(5.0,))

    assert policy.next_delay(1, at_least=12.0) == 12.0
    assert policy.next_delay(1, at_least=0.5) == 5.0


def test_without_a_ladder_the_backoff_decides() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=lambda k: 0.1 * 2 ** (k - 1))

    assert [policy.next_delay(k) for k in range(1, 5)] == [0.1, 0.2, 0.4, 0.8]


def test_storage_calls_are_tried_five_times_with_jittered_backoff_capped_at_five_seconds() -> None:
    delays = [STORAGE.next_delay(k) for k in range(1, 6)]

    assert delays[-1] is None
    for k, delay in enumerate(delays[:-1], start=1):
        assert delay is not None
        assert 0.75 * min(5.0, 0.1 * 2 ** (k - 1)) <= delay <= min(5.0, 1.25 * 0.1 * 2 ** (k - 1))


def test_a_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
