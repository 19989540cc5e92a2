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
from typing import Any

from clarion.actors.messages import NotificationRequest, Rendering
from clarion.actors.preferences import blocked, quiet_hours_end
from clarion.actors.rendering import language_fallbacks
from clarion.persistence.broker import CHANNELS
from clarion.persistence.delivery_message import DeliveryMessage
from clarion.persistence.notifications import NewDelivery
from clarion.persistence.records import User


def fingerprint(item: NotificationRequest) -> str:
    """What makes two requests "the same" for an idempotency key."""
    canonical = json.dumps(
        [item.user_id, item.template_key, item.message_data, item.channels, item.language,
         item.template_version, item.priority, item.category],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def language_candidates(requested: str | None, user: User, default: str) -> tuple[str, ...]:
    """Requested language, the user's, each one's base (pt-BR → pt), then the default."""
    return language_fallbacks(requested, user.preferred_language, default)


def plan_deliveries(item: NotificationRequest, user: User, rendering: Rendering,
                    notification_id: str, now: datetime | None = None,
                    ) -> tuple[tuple[NewDelivery, ...], list[DeliveryMessage]]:
    """Which channels this notification goes out on, and the broker message for each.

    A channel the user cannot receive or does not want is skipped with the reason; inside the
    user's quiet hours (unless the priority is high) a channel is scheduled for their end, its
    message kept until then.
    """
    now = now or datetime.now(timezone.utc)
    wanted = item.channels or CHANNELS
    preferences = user.preferences or {}
    quiet_until = None if item.priority == "high" else quiet_hours_end(preferences, now)
    planned: list[tuple[str, str | None, dict[str, Any], dict[str, Any]]] = []
    deliveries: list[NewDelivery] = []
    if "email" in wanted:
        if not user.email_address:
            deliveries.append(NewDelivery("email", "skipped", None, error_code="no_email_address",
                                          error="the user has no email address"))
        else:
            content = {"subject": rendering.subject, "body": rendering.body,
                       "html_body": rendering.html_body}
            planned.append(("email", user.email_address, content,
                            {"to": user.email_address, **content}))
    if "push" in wanted:
        if not user.push_tokens:
            deliveries.append(NewDelivery("push", "skipped", None, error_code="no_push_tokens",
                                          error="the user has no push tokens"))
        else:
            content = {"title": rendering.push_title, "body": rendering.push_body,
                       "data": {"notification_id": notification_id,
                                "template_key": item.template_key}}
            planned.append(("push", f"{len(user.push_tokens)} token(s)", content,
                            {"tokens": list(user.push_tokens), **content}))
    messages: list[DeliveryMessage] = []
    for channel, recipient, content, sent in planned:
        message = DeliveryMessage(notification_id, channel, user.user_id, item.request_id,
                                  attempt=1, accepted_at=now.timestamp(), content=sent)
        refusal = blocked(preferences, channel, item.category)
        if refusal is not None:
            deliveries.append(NewDelivery(channel, "skipped", None, error_code=refusal[0],
                                          error=refusal[1]))
        elif quiet_until is not None:
            deliveries.append(NewDelivery(
                channel, "scheduled", recipient, content, scheduled_for=quiet_until,
                pending_message={"channel": channel, "body": message.body,
                                 "headers": message.headers}))
        else:
            deliveries.append(NewDelivery(channel, "queued", recipient, content))
            messages.append(message)
    return tuple(deliveries), messages
