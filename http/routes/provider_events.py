"""POST /v1/providers/sendgrid/events: SendGrid's signed Event Webhook (README "Delivery truth").

No API key: SendGrid cannot send one. The request is trusted for its signature instead: ECDSA
P-256 over the timestamp and the raw body, checked with the `sendgrid` library's helper against
`CLARION_SENDGRID_WEBHOOK_PUBLIC_KEY`. A request without a valid signature, or signed more than
10 minutes ago (a replay), is refused with 403 and changes nothing. Events are matched to
deliveries through the `notification_id` custom argument Clarion sends with every email, and handed
to the ProviderEvents actor, which records each once.
"""

from __future__ import annotations

import binascii
import functools
import json
import time
import uuid
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook
from starlette.requests import Request
from starlette.routing import Route

from clarion.actors.messages import RecordProviderEvents
from clarion.http.responses import EnvelopeResponse, failure, from_reply, success
from clarion.persistence.provider_events import ProviderEvent

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
MAX_AGE = 600.0  # seconds: an older signed request is a replay
MAX_EVENTS = 5_000  # SendGrid batches up to a few thousand events per request

# SendGrid's event → the delivery status it implies (None: kept in the log only).
STATUS_OF = {
    "delivered": "delivered",
    "deferred": None,
    "bounce": "bounced",  # type "bounce" (hard) or "blocked" (refused for now)
    "dropped": "undelivered",
    "spamreport": "complained",
}

# A `dropped` event's reason → the suppression it calls for (a reason not named here, such as
# "Spam Content", says nothing about the address).
DROPPED_SUPPRESSES = {
    "bounced address": "hard_bounce",
    "spam reporting address": "spam_report",
    "unsubscribed address": "unsubscribed",
    "invalid": "invalid_address",
    "invalid smtpapi header": None,
}


def suppression_of(name: str, item: dict[str, Any]) -> str | None:
    """What an event says about the address itself: a hard bounce (not `blocked`, which is a
    refusal for now), a drop for a known-bad address, a spam report."""
    if name == "bounce":
        return "hard_bounce" if item.get("type", "bounce") == "bounce" else None
    if name == "dropped":
        reason = str(item.get("reason", "")).strip().lower()
        if reason in DROPPED_SUPPRESSES:
            return DROPPED_SUPPRESSES[reason]
        return "invalid_address" if reason.startswith("invalid") else None
    return "spam_report" if name == "spamreport" else None


async def sendgrid_events(request: Request) -> EnvelopeResponse:
    settings = request.app.state.settings
    if settings.sendgrid_webhook_public_key is None:
        return failure(403, "webhook_not_configured",
                       "set CLARION_SENDGRID_WEBHOOK_PUBLIC_KEY to accept SendGrid's events")
    raw = (await request.body()).decode("utf-8", "replace")
    signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
    if not signature or not timestamp:
        return failure(403, "invalid_signature", "the request is not signed")
    try:
        signed_at = float(timestamp)
    except ValueError:
        return failure(403, "invalid_signature", "the signature's timestamp is not a number")
    if abs(time.time() - signed_at) > MAX_AGE:
        return failure(403, "stale_signature",
                       "signed more than 10 minutes from now: refused as a replay")
    if not _verified(settings.sendgrid_webhook_public_key.get_secret_value(), raw, signature,
                     timestamp):
        return failure(403, "invalid_signature", "the signature does not match the body")
    try:
        body = json.loads(raw)
    except ValueError:
        return failure(400, "invalid_json", "the body is not valid JSON")
    if not isinstance(body, list) or len(body) > MAX_EVENTS:
        return failure(422, "validation_error",
                       f"expected a JSON array of at most {MAX_EVENTS} events")
    events = [e for e in (_event(item) for item in body) if e is not None]
    if not events:
        return success({"recorded": 0, "moved": 0, "unknown": 0, "ignored": len(body)},
                       message="nothing to record")
    return await record(request, events, ignored=len(body) - len(events))


async def record(request: Request, events: list[ProviderEvent],
                 ignored: int = 0) -> EnvelopeResponse:
    """Hand verified events to the ProviderEvents actor and answer with what it recorded."""
    reply = await request.app.state.bridge.request(
        RecordProviderEvents(uuid.uuid4().hex, tuple(events)))
    if reply.status == 200 and isinstance(reply.data, dict):
        reply.data["ignored"] = ignored
    return from_reply(reply)


_WEBHOOK = EventWebhook()


@functools.lru_cache(maxsize=4)
def _ecdsa_key(public_key: str) -> Any:
    """The configured key, parsed once (not on every request)."""
    return _WEBHOOK.convert_public_key_to_ecdsa(public_key)


def _verified(public_key: str, payload: str, signature: str, timestamp: str) -> bool:
    try:
        return bool(_WEBHOOK.verify_signature(payload, signature, timestamp,
                                              _ecdsa_key(public_key)))
    except (binascii.Error, ValueError, TypeError):
        return False  # a signature or key that is not even base64 DER


def _event(item: Any) -> ProviderEvent | None:
    """One SendGrid event as a ProviderEvent, or None if it is not about a Clarion email (or
    not an event of the five Clarion maps)."""
    if not isinstance(item, dict):
        return None
    name, notification_id = item.get("event"), item.get("notification_id")
    if name not in STATUS_OF or not isinstance(notification_id, str):
        return None
    try:
        uuid.UUID(notification_id)
    except ValueError:
        return None
    event_id = item.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id:
        # Without SendGrid's id, the event's own content identifies it (a retry is identical).
        event_id = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(item, sort_keys=True)).hex
    status = STATUS_OF[name]
    occurred = item.get("timestamp")
    detail = {k: item[k] for k in ("email", "type", "reason", "status", "response", "attempt",
                                   "sg_message_id") if k in item}
    return ProviderEvent(
        event_id=f"sendgrid:{event_id[:200]}", provider="sendgrid",
        notification_id=notification_id, channel="email", event=name, status=status,
        occurred_at=float(occurred) if isinstance(occurred, (int, float)) else time.time(),
        detail=detail, suppress=suppression_of(name, item),
        address=email if isinstance(email := item.get("email"), str) and email else None)


routes = [Route("/v1/providers/sendgrid/events", sendgrid_events, methods=["POST"])]
