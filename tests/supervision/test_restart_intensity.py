"""RestartIntensity: at most `max_restarts` in a sliding `window`, on an injected clock."""

from __future__ import annotations

from clarion.supervision.restart import RestartIntensity


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_it_allows_max_restarts_within_the_window_and_refuses_the_next() -> None:
    clock = FakeClock()
    intensity = RestartIntensity(max_restarts=3, window=10.0, clock=clock)

    allowed = []
    for _ in range(3):
        allowed.append(intensity.allow())
        clock.now += 1.0

    assert allowed == [True, True, True]
    assert intensity.allow() is False


def test_it_allows_again_once_the_window_slides_past_the_oldest_restart() -> None:
    clock = FakeClock(1000.0)
    intensity = RestartIntensity(max_restarts=2, window=10.0, clock=clock)
    assert intensity.allow()  # at 1000
    clock.now = 1004.0
    assert intensity.allow()  # at 1004
    clock.now = 1009.0
    assert not intensity.allow()

    clock.now = 1010.5  # the restart at 1000 is now older than the window
    assert intensity.allow()
    assert not intensity.allow()  # 1004 and 1010.5 fill the window again

    clock.now = 1014.5  # 1004 slides out
    assert intensity.allow()


def test_a_refused_restart_does_not_count_against_later_ones() -> None:
    clock = FakeClock(0.0)
    intensity = RestartIntensity(max_restarts=1, window=5.0, clock=clock)
    assert intensity.allow()
    for _ in range(10):
        clock.now += 0.1
        assert not intensity.allow()

    clock.now = 5.5  # only the one allowed restart, at 0.0, was counted

    assert intensity.allow()


def test_zero_max_restarts_refuses_every_restart() -> None:
    intensity = RestartIntensity(max_restarts=0, window=60.0, clock=FakeClock())

    assert not intensity.allow()


def test_each_intensity_counts_only_its_own_restarts() -> None:
    clock = FakeClock()
    first = RestartIntensity(max_restarts=1, window=60.0, clock=clock)
    second = RestartIntensity(max_restarts=1, window=60.0, clock=clock)

    assert first.allow()
    assert not first.allow()
    assert second.allow()
