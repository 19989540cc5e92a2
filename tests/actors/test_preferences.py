"""Channel preferences, opt-outs and quiet hours, on an injected clock."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from clarion.actors.preferences import blocked, quiet_hours_end

UTC = timezone.utc


def test_a_disabled_channel_is_blocked_with_its_reason() -> None:
    assert blocked({"email_enabled": False}, "email", None) == (
        "channel_disabled", "the user turned email notifications off")
    assert blocked({"email_enabled": False}, "push", None) is None
    assert blocked({}, "email", None) is None


def test_an_opted_out_category_is_blocked_and_others_are_not() -> None:
    prefs = {"opt_outs": ["marketing"]}
    assert blocked(prefs, "email", "marketing")[0] == "category_opted_out"
    assert blocked(prefs, "email", "security") is None
    assert blocked(prefs, "email", None) is None


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 23, 23, 30, tzinfo=UTC), datetime(2026, 11, 24, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 24, 3, 0, tzinfo=UTC), datetime(2026, 11, 24, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 24, 7, 0, tzinfo=UTC), None),
        (datetime(2026, 11, 24, 12, 0, tzinfo=UTC), None),
        (datetime(2026, 11, 24, 22, 0, tzinfo=UTC), datetime(2026, 11, 25, 7, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_across_midnight_hold_until_they_end(now: datetime,
                                                         expected: datetime | None) -> None:
    prefs = {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "UTC"}}
    assert quiet_hours_end(prefs, now) == expected


def test_quiet_hours_are_read_in_the_users_time_zone() -> None:
    prefs = {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Tokyo"}}
    # 14:00 UTC is 23:00 in Tokyo: quiet until 07:00 Tokyo, which is 22:00 UTC.
    assert quiet_hours_end(prefs, datetime(2026, 11, 23, 14, 0, tzinfo=UTC)) == \
        datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    assert quiet_hours_end(prefs, datetime(2026, 11, 23, 3, 0, tzinfo=UTC)) is None


def test_a_daytime_window_and_bad_windows() -> None:
    day = {"quiet_hours": {"start": "09:00", "end": "17:00", "timezone": "UTC"}}
    assert quiet_hours_end(day, datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) == \
        datetime(2026, 1, 1, 17, 0, tzinfo=UTC)
    assert quiet_hours_end(day, datetime(2026, 1, 1, 18, 0, tzinfo=UTC)) is None
    for bad in ({"start": "09:00", "end": "09:00"}, {"start": "x", "end": "y"},
                {"start": "09:00", "end": "17:00", "timezone": "Mars/Olympus"}, {}):
        assert quiet_hours_end({"quiet_hours": bad}, datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) \
            is None
