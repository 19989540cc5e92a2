"""Exponential backoff with jitter: how long attempt k waits (a pure function, as in dramatiq)."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    base: float = 0.1,
    cap: float = 5.0,
    jitter: float = 0.25,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): min(cap, base * 2**(k-1)) ±jitter.

    The jitter spreads retries of many callers that failed together, so they do not hit the
    recovering dependency in one wave; it never lifts the delay above `cap`.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    delay = min(cap, base * 2 ** (attempt - 1))
    spread = delay * jitter * (2 * rand() - 1)  # uniform in [-jitter, +jitter] of the delay
    return max(0.0, min(cap, delay + spread))
