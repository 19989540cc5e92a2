"""Planning a notification: the pure decisions the Gateway makes for each accepted request.

    fingerprint          what makes two requests "the same" for an idempotency key
    language_candidates  the languages to try, in order
    plan_deliveries      which channels it goes out on (or why not), and the broker message of each

No actor, no storage: tested on their own (tests/actors/test_gateway_planning.py).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from collections.abc import Sequence
from typing import Any

from clarion.actors.messages import NotificationRequest, Rendering
from clarion.actors.preferences import blocked, quiet_hours_end
from clarion.actors.rendering import language_fallbacks
from clarion.actors.sms_text import MAX_SMS_CHARS
from clarion.persistence.broker import BULK, CHANNELS
from clarion.persistence.delivery_message import DeliveryMessage
from clarion.persistence.notifications import NewDelivery
from clarion.persistence.records import User


def fingerprint(item: NotificationRequest) -> str:
    """What makes two requests "the same" for an idempotency key."""
    fields: list[Any] = [item.user_id, item.template_key, item.message_data, item.channels,
                         item.language, item.template_version, item.priority, item.category]
    if item.send_at is not None:
        fields.append(item.send_at)  # only then: keys stored before send_at keep matching
    if item.fallback_channels:
        fields.append(list(item.fallback_channels))
    canonical = json.dumps(
        fields,
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def language_candidates(requested: str | None, user: User, default: str) -> tuple[str, ...]:
    """Requested language, the user's, each one's base (pt-BR → pt), then the default."""
    return language_fallbacks(requested, user.preferred_language, default)


def hold_until(item: NotificationRequest, preferences: dict[str, Any],
               now: datetime) -> datetime | None:
    """Until when a notification waits: None to send it now."""
    quiet = None if item.priority == "high" else quiet_hours_end(preferences, now)
    send_at = (datetime.fromtimestamp(item.send_at, timezone.utc)
               if item.send_at is not None and item.send_at > now.timestamp() else None)
    waits = [t for t in (quiet, send_at) if t is not None]
    return max(waits) if waits else None


def plan_deliveries(item: NotificationRequest, user: User, rendering: Rendering,
                    notification_id: str, now: datetime | None = None, lanes: bool = True,
                    ) -> tuple[tuple[NewDelivery, ...], list[DeliveryMessage]]:
    """Which channels this notification goes out on, and the broker message for each.

    A bulk notification's messages travel in the bulk lane (unless `lanes` is off).
    A channel the user cannot receive or does not want is skipped with the reason. A channel
    is scheduled, its message kept until then, for the later of `send_at` and the end of the
    user's quiet hours (quiet hours do not hold a high-priority notification; `send_at` does).
    The first of `fallback_channels` (the request's, else the template's) the user can
    receive, and that is not one of the channels asked for, waits on `standby` with its message kept: it goes out only if an email or SMS
    of the notification is suppressed, bounces or is not delivered (`release_fallbacks`).
    """
    now = now or datetime.now(timezone.utc)
    wanted = item.channels or CHANNELS
    preferences = user.preferences or {}
    quiet_until = hold_until(item, preferences, now)
    deliveries: list[NewDelivery] = []
    messages: list[DeliveryMessage] = []
    for channel in (c for c in CHANNELS if c in wanted):
        route = _route(channel, item, user, rendering, notification_id)
        if isinstance(route, NewDelivery):
            deliveries.append(route)
            continue
        recipient, content, sent = route
        message = _message(item, user, notification_id, channel, sent, now, lanes)
        refusal = blocked(preferences, channel, item.category)
        if refusal is not None:
            deliveries.append(NewDelivery(channel, "skipped", None, error_code=refusal[0],
                                          error=refusal[1]))
        elif quiet_until is not None:
            deliveries.append(NewDelivery(
                channel, "scheduled", recipient, content, scheduled_for=quiet_until,
                pending_message=_kept(channel, message)))
        else:
            deliveries.append(NewDelivery(channel, "queued", recipient, content))
            messages.append(message)
    standby = _standby(item, user, rendering, notification_id, now, lanes, wanted)
    return tuple(deliveries) + standby, messages


def _standby(item: NotificationRequest, user: User, rendering: Rendering,
             notification_id: str, now: datetime, lanes: bool, wanted: Sequence[str],
             ) -> tuple[NewDelivery, ...]:
    """The fallback delivery, kept on standby: the first of `fallback_channels` not asked for
    that the user can receive and has not turned off (none: ())."""
    for channel in item.fallback_channels or rendering.fallback_channels:
        if channel in wanted:
            continue
        route = _route(channel, item, user, rendering, notification_id)
        if isinstance(route, NewDelivery) or blocked(user.preferences or {}, channel,
                                                     item.category):
            continue
        recipient, content, sent = route
        message = _message(item, user, notification_id, channel, sent, now, lanes)
        return (NewDelivery(channel, "standby", recipient, content,
                            pending_message=_kept(channel, message)),)
    return ()


def _route(channel: str, item: NotificationRequest, user: User, rendering: Rendering,
           notification_id: str,
           ) -> tuple[str, dict[str, Any], dict[str, Any]] | NewDelivery:
    """(recipient, content kept with the delivery, content sent) of `channel` for this user,
    or the skipped delivery saying why it cannot go out on it."""
    if channel == "email":
        if not user.email_address:
            return NewDelivery("email", "skipped", None, error_code="no_email_address",
                               error="the user has no email address")
        content = {"subject": rendering.subject, "body": rendering.body,
                   "html_body": rendering.html_body}
        return user.email_address, content, {"to": user.email_address, **content}
    if channel == "push":
        if not user.push_tokens:
            return NewDelivery("push", "skipped", None, error_code="no_push_tokens",
                               error="the user has no push tokens")
        content = {"title": rendering.push_title, "body": rendering.push_body,
                   "data": {"notification_id": notification_id,
                            "template_key": item.template_key}}
        return (f"{len(user.push_tokens)} token(s)", content,
                {"tokens": list(user.push_tokens), **content})
    if not user.phone_number:
        return NewDelivery("sms", "skipped", None, error_code="no_phone_number",
                           error="the user has no phone number")
    if len(rendering.sms_body) > MAX_SMS_CHARS:
        return NewDelivery(
            "sms", "skipped", None, error_code="sms_too_long",
            error=f"the rendered SMS has {len(rendering.sms_body)} characters, more than"
                  f" the {MAX_SMS_CHARS} an SMS can carry")
    content = {"body": rendering.sms_body}
    return user.phone_number, content, {"to": user.phone_number, **content}


def _message(item: NotificationRequest, user: User, notification_id: str, channel: str,
             sent: dict[str, Any], now: datetime, lanes: bool) -> DeliveryMessage:
    return DeliveryMessage(notification_id, channel, user.user_id, item.request_id,
                           attempt=1, accepted_at=now.timestamp(), content=sent,
                           lane=BULK if lanes and item.priority == "bulk" else None)


def _kept(channel: str, message: DeliveryMessage) -> dict[str, Any]:
    """A message kept with its delivery until it is released (scheduled, standby)."""
    return {"channel": channel, "body": message.body, "headers": message.headers}
