"""OTP-style restart intensity: at most `max_restarts` in `window` seconds per child."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RestartIntensity:
    """Counts a child's restarts; `allow()` says whether one more is within the intensity."""

    max_restarts: int = 10
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _recent: deque[float] = field(default_factory=deque)

    def allow(self) -> bool:
        now = self.clock()
        while self._recent and now - self._recent[0] > self.window:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            return False
        self._recent.append(now)
        return True

    def recent(self) -> int:
        """Restarts within the window, as of now."""
        now = self.clock()
        return sum(1 for t in self._recent if now - t <= self.window)
