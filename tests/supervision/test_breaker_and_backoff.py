"""The circuit breaker and the backoff function, on an injected clock and random source."""

from __future__ import annotations

import pytest

from clarion.supervision.backoff import backoff_delay
from clarion.supervision.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, changes: list[tuple[str, str]] | None = None) -> CircuitBreaker:
    def record(_name: str, old: str, new: str) -> None:
        if changes is not None:
            changes.append((old, new))

    return CircuitBreaker("sendgrid", failure_threshold=5, reset_timeout=60, clock=clock,
                          on_change=record)


def test_five_consecutive_failures_open_the_breaker_and_calls_fail_fast() -> None:
    clock, changes = FakeClock(), []
    breaker = make(clock, changes)
    for _ in range(4):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == CLOSED
    breaker.failure()
    assert breaker.state == OPEN
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(60)
    assert changes == [(CLOSED, OPEN)]


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = make(FakeClock())
    for _ in range(4):
        breaker.failure()
    breaker.success()
    for _ in range(4):
        breaker.failure()
    assert breaker.state == CLOSED


def test_after_the_reset_timeout_exactly_one_trial_call_goes_through() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(5):
        breaker.failure()
    clock.now += 59.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()  # the trial is out: everyone else still waits


def test_a_successful_trial_closes_the_breaker() -> None:
    clock, changes = FakeClock(), []
    breaker = make(clock, changes)
    for _ in range(5):
        breaker.failure()
    clock.now += 61
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED
    assert breaker.allow() and breaker.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_trial_opens_the_breaker_again_for_a_full_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(5):
        breaker.failure()
    clock.now += 61
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN
    assert breaker.retry_after() == pytest.approx(60)


@pytest.mark.parametrize(("attempt", "expected"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8),
                                                   (5, 1.6), (6, 3.2), (7, 5.0), (12, 5.0)])
def test_backoff_doubles_from_a_tenth_of_a_second_up_to_five(attempt: int,
                                                             expected: float) -> None:
    assert backoff_delay(attempt, rand=lambda: 0.5) == pytest.approx(expected)


def test_jitter_stays_within_a_quarter_and_never_exceeds_the_cap() -> None:
    assert backoff_delay(3, rand=lambda: 0.0) == pytest.approx(0.3)
    assert backoff_delay(3, rand=lambda: 1.0) == pytest.approx(0.5)
    assert backoff_delay(7, rand=lambda: 1.0) == 5.0
    assert backoff_delay(7, rand=lambda: 0.0) == pytest.approx(3.75)


def test_backoff_refuses_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_would_allow_answers_without_taking_the_half_open_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker("x", failure_threshold=1, reset_timeout=10, clock=lambda: now[0])
    breaker.failure()
    assert not breaker.would_allow()
    now[0] = 11
    assert breaker.would_allow() and breaker.would_allow()  # asking twice takes nothing
    assert breaker.allow()  # the trial
    assert not breaker.would_allow() and not breaker.allow()
