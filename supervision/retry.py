"""Retry policy: how many attempts, how long to wait before the next, and what is worth it.

Data, not `if` statements spread over actors (as Dramatiq's `Retries`): each actor holds the
policies it applies.

    STORAGE   the Gateway's calls to PostgreSQL/Redis-backed actors: 5 attempts, exponential
              backoff with jitter (backoff.py), on timers
    delivery  a channel's provider calls: `CLARION_DELIVERY_MAX_ATTEMPTS` attempts on the delay
              ladder (1 s, 5 s, 30 s, 120 s, 600 s), a provider's Retry-After stretching a step,
              permanent failures never retried
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clarion.supervision.backoff import backoff_delay


def _always(_failure: Any) -> bool:
    return True


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    # Attempt k (1-based) that failed waits `delays[k-1]` before attempt k+1 (the last delay
    # repeats); without delays, `backoff(k)`.
    delays: tuple[float, ...] = ()
    backoff: Callable[[int], float] = backoff_delay
    retryable: Callable[[Any], bool] = _always

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts from 1")

    def next_delay(self, attempt: int, failure: Any = None, at_least: float = 0.0
                   ) -> float | None:
        """Seconds to wait before the attempt after `attempt`, or None: give up (the failure
        is not retryable, or that was the last attempt). `at_least`: what the other side
        asked for (Retry-After)."""
        if attempt >= self.max_attempts or not self.retryable(failure):
            return None
        if self.delays:
            wait = self.delays[min(attempt, len(self.delays)) - 1]
        else:
            wait = self.backoff(attempt)
        return max(wait, at_least)


# The Gateway's stages that call storage through another actor (ARCHITECTURE "Resilience").
STORAGE = RetryPolicy(max_attempts=5)
