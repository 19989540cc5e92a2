"""When the client tries a call again, and how long it waits: a policy object and a pure backoff.

What may be repeated is decided per outcome (`attempts.py`); this module only says how many
attempts a call gets and how the waits grow, so that the numbers live in one place and can be
tested without a network or a clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


def compute_backoff(retry: int, base: float, cap: float,
                    uniform: Callable[[float, float], float] = random.uniform) -> float:
    """The wait before retry number `retry` (1 for the first retry): `base` doubling each time,
    at most `cap`, then drawn from 50-100 % of that.

    The jitter keeps many clients that failed together (Clarion restarting, a 503 burst) from
    coming back together; the 50 % floor keeps the wait growing, so a retry is never immediate.
    """
    ceiling = min(cap, base * 2 ** max(0, retry - 1))
    return uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a call gets and how long the client waits between them.

    `max_retry_after` bounds how long the client itself waits for a `Retry-After`: a longer one
    is raised to the caller (`RateLimited.retry_after`), who knows better whether to wait.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False,
                                                     compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")

    def backoff(self, retry: int) -> float:
        return compute_backoff(retry, self.base_delay, self.max_delay, self.uniform)


NO_RETRIES = RetryPolicy(max_attempts=1)
