"""POST /v1/providers/twilio/status: Twilio's signed status callbacks (README "Delivery truth").

Every SMS Clarion sends asks Twilio to report to `CLARION_TWILIO_STATUS_CALLBACK_URL` with the
notification's id in the query (`actors/providers/twilio_sms.py`). There is no API key: the
request is trusted for `X-Twilio-Signature`, checked with the `twilio` library's
`RequestValidator` and the auth token of the account that sent the SMS (its `AccountSid`) over
the exact URL Twilio was given and the form parameters. Anything else is 403 and changes nothing.

Twilio reports `queued`, `sent`, `delivered`, `undelivered` and `failed`; the last three move
the SMS channel (`delivered`; `undelivered` for both failures, their `ErrorCode` kept), the
others are acknowledged and ignored. Error 21610 (the number replied STOP) suppresses the
number. Twilio's callbacks carry no time and no event id: the callback's id is its message and
status, so a retry changes nothing, and the state machine refuses a late `delivered` after
`undelivered`.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from clarion.config.settings import Settings
from clarion.http.responses import EnvelopeResponse, failure, success
from clarion.http.routes.provider_events import record
from clarion.persistence.provider_events import ProviderEvent

SIGNATURE = "x-twilio-signature"
# Twilio's MessageStatus → the delivery status it implies.
STATUS_OF = {"delivered": "delivered", "undelivered": "undelivered", "failed": "undelivered"}
# Twilio's ErrorCode → the suppression it calls for.
SUPPRESSING_CODES = {"21610": "unsubscribed"}  # the recipient replied STOP


def _auth_token(settings: Settings, account_sid: str) -> str | None:
    """The auth token of the Clarion account that sent the SMS (None: not one of ours)."""
    for sid, token in ((settings.twilio_account_sid, settings.twilio_auth_token),
                       (settings.twilio_backup_account_sid, settings.twilio_backup_auth_token)):
        if sid and token is not None and sid == account_sid:
            return token.get_secret_value()
    return None


async def twilio_status(request: Request) -> EnvelopeResponse:
    settings = request.app.state.settings
    base = settings.twilio_status_callback_url
    if base is None:
        return failure(403, "webhook_not_configured",
                       "set CLARION_TWILIO_STATUS_CALLBACK_URL to accept Twilio's callbacks")
    signature = request.headers.get(SIGNATURE)
    if not signature:
        return failure(403, "invalid_signature", "the request is not signed")
    raw = (await request.body()).decode("utf-8", "replace")
    params = ImmutableMultiDict(parse_qsl(raw, keep_blank_values=True))
    token = _auth_token(settings, params.get("AccountSid", ""))
    # The URL Twilio signed: the configured one (scheme, host, path) with the query this
    # request came with, which holds the configured query, if any, and the notification's id.
    parts = urlsplit(base)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, request.url.query, ""))
    if token is None or not RequestValidator(token).validate(url, params, signature):
        return failure(403, "invalid_signature", "the signature does not match the request")
    notification_id = request.query_params.get("notification_id", "")
    message_sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
    try:
        uuid.UUID(notification_id)
    except ValueError:
        return _ignored("not about a Clarion SMS")
    if status not in STATUS_OF or not message_sid:
        return _ignored(f"status {status!r} is not recorded")
    code = params.get("ErrorCode") or None
    detail = {k: params[k] for k in ("MessageSid", "MessageStatus", "ErrorCode", "To",
                                     "AccountSid") if params.get(k)}
    to = params.get("To") or None
    happened = ProviderEvent(
        event_id=f"twilio:{message_sid[:64]}:{status}", provider="twilio",
        notification_id=notification_id, channel="sms", event=status,
        status=STATUS_OF[status], occurred_at=time.time(), detail=detail,
        suppress=SUPPRESSING_CODES.get(code or ""), address=to, message_id=message_sid)
    return await record(request, [happened])


def _ignored(why: str) -> EnvelopeResponse:
    """Acknowledged (Twilio must not retry it) and left alone."""
    return success({"recorded": 0, "moved": 0, "unknown": 0, "suppressed": 0, "ignored": 1},
                   message=why)


routes = [Route("/v1/providers/twilio/status", twilio_status, methods=["POST"])]
