"""What a user's preferences say about one delivery: blocked, held for quiet hours, or go.

Pure functions over the `preferences` JSON of a user (validated by the users API):
    {"email_enabled": true, "push_enabled": true, "opt_outs": ["marketing", ...],
     "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"} | null}
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def blocked(preferences: dict[str, Any], channel: str,
            category: str | None) -> tuple[str, str] | None:
    """(code, reason) if the user does not want this channel (or this category), else None."""
    if preferences.get(f"{channel}_enabled", True) is False:
        return "channel_disabled", f"the user turned {channel} notifications off"
    if category and category in (preferences.get("opt_outs") or ()):
        return "category_opted_out", f"the user opted out of '{category}' notifications"
    return None


def _clock(text: str) -> time:
    hours, minutes = text.split(":")[:2]
    return time(int(hours), int(minutes))


def quiet_hours_end(preferences: dict[str, Any], now: datetime) -> datetime | None:
    """When the quiet hours `now` falls in end (aware, UTC), or None if not in quiet hours.

    Windows may cross midnight (22:00-07:00). A bad window is ignored rather than holding
    notifications for ever.
    """
    quiet = preferences.get("quiet_hours")
    if not quiet:
        return None
    try:
        zone = ZoneInfo(quiet.get("timezone") or "UTC")
        start, end = _clock(quiet["start"]), _clock(quiet["end"])
    except (KeyError, ValueError, TypeError, ZoneInfoNotFoundError):
        return None
    if start == end:
        return None
    local = now.astimezone(zone)
    at = local.time().replace(second=0, microsecond=0)
    inside = start <= at < end if start < end else (at >= start or at < end)
    if not inside:
        return None
    ends = datetime.combine(local.date(), end, tzinfo=zone)
    if ends <= local:
        ends = datetime.combine(local.date() + timedelta(days=1), end, tzinfo=zone)
    return ends.astimezone(ZoneInfo("UTC"))
