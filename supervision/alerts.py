"""Alerts evaluated inside Clarion: plain rules over snapshots, with an injectable clock.

    breaker_open        a child's circuit breaker is open
    actor_down          a child is failed (restart intensity exceeded) or not running
    actor_flapping      a child restarted `flap_restarts` times within the restart window
    queue_backlog       a work queue held more than `backlog_threshold` messages for longer
                        than `backlog_window` seconds
    dependency_down     PostgreSQL, Redis or RabbitMQ did not answer the monitor's probe
    delivery_errors     more than half of the last 5 minutes' delivery attempts failed
                        (at least `error_min_attempts` of them)

An alert is raised once when its condition starts, stays active while it holds, and is resolved
when it stops; `on_change` hears both (to log and to post the webhook: `post_webhook`).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Alert:
    key: str
    kind: str
    severity: str
    message: str
    since: float
    resolved_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AlertBook:
    backlog_threshold: int = 10_000
    backlog_window: float = 60.0
    flap_restarts: int = 3
    error_min_attempts: int = 20
    clock: Callable[[], float] = time.time
    on_change: Callable[[Alert], None] | None = None
    active: dict[str, Alert] = field(default_factory=dict)
    recent: deque[Alert] = field(default_factory=lambda: deque(maxlen=100))
    _backlog_since: dict[str, float] = field(default_factory=dict)

    def evaluate(self, children: list[dict[str, Any]], observations: dict[str, Any]) -> None:
        """Raise and resolve alerts from the actor tree and the monitor's latest observations."""
        now = self.clock()
        found: dict[str, tuple[str, str, str]] = {}  # key → (kind, severity, message)
        for child in children:
            name = child["name"]
            for dependency, state in (child.get("breakers") or {}).items():
                if state == "open":
                    found[f"breaker:{name}:{dependency}"] = (
                        "breaker_open", "warning",
                        f"{name}: the circuit breaker for {dependency} is open")
            if child.get("state") == "failed":
                found[f"actor:{name}"] = ("actor_down", "critical",
                                          f"{name} is down: it restarted too often and was"
                                          " left stopped")
            elif child.get("recent_restarts", 0) >= self.flap_restarts:
                found[f"flapping:{name}"] = ("actor_flapping", "warning",
                                             f"{name} restarted {child['recent_restarts']}"
                                             " times in the restart window")
        for dependency, up in (observations.get("dependencies") or {}).items():
            if not up:
                found[f"dependency:{dependency}"] = ("dependency_down", "critical",
                                                    f"{dependency} does not answer")
        for queue, depth in (observations.get("queues") or {}).items():
            if depth > self.backlog_threshold:
                since = self._backlog_since.setdefault(queue, now)
                if now - since >= self.backlog_window:
                    found[f"backlog:{queue}"] = (
                        "queue_backlog", "warning",
                        f"{queue} has held more than {self.backlog_threshold} messages for"
                        f" {now - since:.0f} s ({depth} now)")
            else:
                self._backlog_since.pop(queue, None)
        attempts, failures = observations.get("delivery_attempts") or (0, 0)
        if attempts >= self.error_min_attempts and failures * 2 > attempts:
            found["delivery_errors"] = ("delivery_errors", "warning",
                                        f"{failures} of the last {attempts} delivery attempts"
                                        " failed (5 minutes)")
        for key, (kind, severity, message) in found.items():
            if key in self.active:
                self.active[key].message = message
            else:
                alert = Alert(key, kind, severity, message, now)
                self.active[key] = alert
                self.recent.appendleft(alert)
                if self.on_change:
                    self.on_change(alert)
        for key in [k for k in self.active if k not in found]:
            alert = self.active.pop(key)
            alert.resolved_at = now
            if self.on_change:
                self.on_change(alert)

    def snapshot(self) -> dict[str, Any]:
        return {"active": [a.to_json() for a in self.active.values()],
                "recent": [a.to_json() for a in self.recent]}


def post_webhook(url: str, payload: dict[str, Any]) -> None:
    """POST an alert as JSON from a short-lived thread: a slow receiver never stalls us."""
    def post() -> None:
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - operator's URL
        except OSError:
            pass  # alerts are in the log and the API too; a webhook is best effort

    threading.Thread(target=post, name="alert-webhook", daemon=True).start()
