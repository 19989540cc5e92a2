"""Alert rules over snapshots, on an injected clock."""

from __future__ import annotations

from clarion.supervision.alerts import Alert, AlertBook


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(clock: Clock, changes: list[Alert]) -> AlertBook:
    return AlertBook(backlog_threshold=100, backlog_window=60, clock=clock,
                     on_change=changes.append)


def test_an_open_breaker_raises_an_alert_once_and_its_closing_resolves_it() -> None:
    clock, changes = Clock(), []
    alerts = book(clock, changes)
    open_breaker = [{"name": "email", "state": "running", "breakers": {"sendgrid": "open"}}]
    alerts.evaluate(open_breaker, {})
    alerts.evaluate(open_breaker, {})
    assert [a.kind for a in alerts.active.values()] == ["breaker_open"]
    assert len(changes) == 1
    clock.now += 30
    alerts.evaluate([{"name": "email", "state": "running", "breakers": {"sendgrid": "closed"}}],
                    {})
    assert alerts.active == {}
    assert changes[-1].resolved_at == 1030.0
    assert alerts.snapshot()["recent"][0]["kind"] == "breaker_open"


def test_a_backlog_alerts_only_after_it_lasted_the_whole_window() -> None:
    clock, changes = Clock(), []
    alerts = book(clock, changes)
    alerts.evaluate([], {"queues": {"email.queue": 500}})
    clock.now += 59
    alerts.evaluate([], {"queues": {"email.queue": 500}})
    assert alerts.active == {}
    clock.now += 2
    alerts.evaluate([], {"queues": {"email.queue": 500}})
    assert list(alerts.active) == ["backlog:email.queue"]
    alerts.evaluate([], {"queues": {"email.queue": 3}})
    assert alerts.active == {}


def test_a_dip_below_the_threshold_restarts_the_backlog_window() -> None:
    clock, changes = Clock(), []
    alerts = book(clock, changes)
    alerts.evaluate([], {"queues": {"push.queue": 500}})
    clock.now += 50
    alerts.evaluate([], {"queues": {"push.queue": 50}})
    clock.now += 20
    alerts.evaluate([], {"queues": {"push.queue": 500}})
    assert alerts.active == {}


def test_down_flapping_dependencies_and_delivery_errors_each_raise_their_alert() -> None:
    clock, changes = Clock(), []
    alerts = book(clock, changes)
    alerts.evaluate(
        [{"name": "users", "state": "failed"},
         {"name": "push", "state": "running", "recent_restarts": 3}],
        {"dependencies": {"postgresql": True, "redis": False},
         "delivery_attempts": (40, 25)},
    )
    kinds = sorted(a.kind for a in alerts.active.values())
    assert kinds == ["actor_down", "actor_flapping", "delivery_errors", "dependency_down"]
    assert alerts.active["dependency:redis"].severity == "critical"


def test_few_failed_attempts_are_not_an_error_spike() -> None:
    alerts = book(Clock(), [])
    alerts.evaluate([], {"delivery_attempts": (10, 9)})
    alerts.evaluate([], {"delivery_attempts": (100, 40)})
    assert alerts.active == {}
