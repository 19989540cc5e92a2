"""Circuit breaker: stop calling a dependency that keeps failing, then try it again carefully.

    closed ──(N consecutive failures)──▶ open ──(reset_timeout)──▶ half-open
       ▲                                   ▲                          │
       └──────────(trial succeeds)─────────┼──────────────────────────┤
                                           └──────(trial fails)───────┘

Plain code with an injectable clock; each actor holds one per dependency. `on_change` is called
with (old, new) state so the actor can log it and report it to the Supervisor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = 5
    reset_timeout: float = 60.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str, str, str], None] | None = None
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    _trial_out: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        """May a call go out now? In half-open, exactly one trial call is let through."""
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.reset_timeout:
                return False
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self._trial_out:
                return False
            self._trial_out = True
        return True

    def would_allow(self) -> bool:
        """What `allow()` would answer now, without taking the half-open trial."""
        if self.state == OPEN:
            return self.clock() - self.opened_at >= self.reset_timeout
        return not (self.state == HALF_OPEN and self._trial_out)

    def retry_after(self) -> float:
        """Seconds until the breaker will let a trial call through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.reset_timeout - (self.clock() - self.opened_at))

    def success(self) -> None:
        self.failures = 0
        self._trial_out = False
        if self.state != CLOSED:
            self._move(CLOSED)

    def failure(self) -> None:
        self._trial_out = False
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED
                                       and self.failures >= self.failure_threshold):
            self.opened_at = self.clock()
            self._move(OPEN)

    def snapshot(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state, "failures": self.failures,
                "retry_after": round(self.retry_after(), 1)}

    def _move(self, new: str) -> None:
        old, self.state = self.state, new
        if self.on_change is not None and old != new:
            self.on_change(self.name, old, new)
