"""HTTP surface of the provider simulator: SendGrid, FCM, Google OAuth2, Twilio SMS and /_sim control routes.

Owns request validation and the exact response shapes the real `sendgrid`,
`firebase-admin` and `twilio` clients parse (see /work/shared/notes/providers.md). All state
lives in `SimulatorState`; the handlers here are stateless. Accepted mail and SMS are handed to
the app's `WebhookSender`, which posts SendGrid events and Twilio status callbacks afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .events import TWILIO_API_VERSION
from .state import CHANNELS, EVENT_KINDS, ConfigError, SimulatorState, new_id
from .webhooks import WebhookSender

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
ACCESS_TOKEN_LIFETIME_S = 3600

# Google's canonical status name per HTTP code, used for injected FCM failures.
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _state(request: Request) -> SimulatorState:
    return request.app.state.simulator


def _webhooks(request: Request) -> WebhookSender:
    return request.app.state.webhooks


def _bearer(request: Request) -> str | None:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None


async def _apply_latency(state: SimulatorState) -> None:
    latency = state.latency_seconds()
    if latency > 0:
        await asyncio.sleep(latency)


def _channel_param(request: Request) -> str | None:
    channel = request.query_params.get("channel")
    if channel is not None and channel not in CHANNELS + ("token",):
        raise ConfigError(f"unknown channel {channel!r}")
    return channel


# -- SendGrid -----------------------------------------------------------------


def _sendgrid_error(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"errors": [{"message": message, "field": field, "help": None}]}
    return JSONResponse(body, status_code=status, headers=headers)


def _validate_mail(body: Any) -> tuple[str, str] | None:
    """Returns (message, field) for the first problem SendGrid would report, or None."""
    if not isinstance(body, dict):
        return ("The request body must be a JSON object.", None)
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations or not isinstance(personalizations[0], dict):
        return ("The personalizations field is required and must have at least one personalization.", "personalizations")
    recipients = personalizations[0].get("to")
    if not isinstance(recipients, list) or not recipients or not isinstance(recipients[0], dict):
        return ("The to array is required for all personalization objects.", "personalizations.0.to")
    address = recipients[0].get("email")
    if not isinstance(address, str) or "@" not in address.strip("@"):
        return ("Does not contain a valid address.", "personalizations.0.to.0.email")
    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str) or "@" not in sender["email"]:
        return ("The from object must be provided for every email send.", "from.email")
    # SendGrid accepts the subject globally or per personalization.
    subject = body.get("subject", personalizations[0].get("subject"))
    if not isinstance(subject, str) or not subject:
        return ("The subject is required.", "subject")
    content = body.get("content")
    if not isinstance(content, list) or not content:
        return ("Unless a valid template_id is provided, the content parameter is required.", "content")
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str) or not isinstance(part.get("value"), str):
            return ("Each content object needs a type and a value.", f"content.{index}")
    return None


def _content_of_type(body: dict[str, Any], mime: str) -> str | None:
    for part in body["content"]:
        if part["type"] == mime:
            return part["value"]
    return None


async def sendgrid_mail_send(request: Request) -> Response:
    state = _state(request)
    started_at = time.time()  # each record says when its call began (what was in flight when)
    raw_bytes = await request.body()
    await _apply_latency(state)
    raw = _parse_json(raw_bytes)
    to = _first_recipient(raw)

    def reject(status: int, reason: str) -> None:
        state.record_rejected(
            {"channel": "email", "status": status, "reason": reason, "to": to, "raw": raw, "started_at": started_at}
        )

    if _bearer(request) is None:
        reject(401, "unauthorized")
        return _sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked")

    fault = state.take_fault("email")
    if fault == ("rate_limit", 429):
        reject(429, "rate_limited")
        # SendGrid documents X-RateLimit-Reset as an epoch second; no Retry-After.
        headers = {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + 1),
        }
        return _sendgrid_error(429, "too many requests", headers=headers)
    if fault is not None:
        status = fault[1]
        reject(status, "injected_failure")
        return _sendgrid_error(status, f"Simulated failure (HTTP {status})")

    problem = _validate_mail(raw)
    if problem is not None:
        reject(400, "bad_request")
        return _sendgrid_error(400, problem[0], problem[1])

    message_id = new_id()
    state.record_message(
        {
            "id": message_id,
            "started_at": started_at,
            "channel": "email",
            "to": to,
            "from": raw["from"]["email"],
            "subject": raw.get("subject", raw["personalizations"][0].get("subject")),
            "body": _content_of_type(raw, "text/plain"),
            "html_body": _content_of_type(raw, "text/html"),
            "raw": raw,
        }
    )
    _webhooks(request).mail_accepted(message_id, raw)
    return Response(status_code=202, headers={"X-Message-Id": message_id})


def _first_recipient(raw: Any) -> str | None:
    try:
        address = raw["personalizations"][0]["to"][0]["email"]
    except (KeyError, IndexError, TypeError):
        return None
    return address if isinstance(address, str) else None


# -- Google OAuth2 token endpoint ---------------------------------------------


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _looks_like_jwt(assertion: str) -> bool:
    # Signature verification is out of scope: shape is enough to catch a client
    # that sends something other than a signed service-account assertion.
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        return False
    try:
        header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
    except (binascii.Error, UnicodeError, ValueError):
        return False
    return isinstance(header, dict) and "alg" in header and isinstance(claims, dict)


async def oauth_token(request: Request) -> Response:
    state = _state(request)
    raw_bytes = await request.body()
    # The form is parsed by hand: Starlette's request.form() needs python-multipart.
    form = {k: v[0] for k, v in parse_qs(raw_bytes.decode("utf-8", "replace")).items()}

    def reject(error: str, description: str) -> Response:
        state.record_rejected(
            {"channel": "token", "status": 400, "reason": error, "to": None, "raw": {"grant_type": form.get("grant_type")}}
        )
        return JSONResponse({"error": error, "error_description": description}, status_code=400)

    if form.get("grant_type") != JWT_BEARER_GRANT:
        return reject("unsupported_grant_type", f"grant_type must be {JWT_BEARER_GRANT}")
    if not _looks_like_jwt(form.get("assertion", "")):
        return reject("invalid_grant", "Invalid JWT: the assertion is not a three-part JWT.")
    return JSONResponse(
        {"access_token": state.issue_token(), "expires_in": ACCESS_TOKEN_LIFETIME_S, "token_type": "Bearer"}
    )


async def regional_access_boundary(request: Request) -> Response:
    # google-auth looks up a service account's "allowed locations" after each
    # token refresh; answering here keeps clients pointed at the simulator hermetic.
    return JSONResponse({"locations": [], "encodedLocations": "0x0"})


# -- Firebase Cloud Messaging -------------------------------------------------


def _fcm_error(
    status: int,
    message: str,
    google_status: str | None = None,
    error_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    google_status = google_status or _GOOGLE_STATUS.get(status, "UNAVAILABLE" if status >= 500 else "UNKNOWN")
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if error_code is not None:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _validate_fcm_message(body: Any) -> str | None:
    """Returns why FCM would answer INVALID_ARGUMENT, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return "Request body must be a JSON object with a message object."
    message = body["message"]
    targets = [key for key in ("token", "fid") if key in message]
    if len(targets) != 1 or not isinstance(message[targets[0]], str) or not message[targets[0]]:
        return "The message must have exactly one non-empty target: token or fid (the simulator supports no topics)."
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or not all(isinstance(v, str) for v in notification.values()):
        return "notification must be an object of strings."
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return "data must map strings to strings."
    return None


def _fcm_target(raw: Any) -> str | None:
    if isinstance(raw, dict) and isinstance(raw.get("message"), dict):
        target = raw["message"].get("token", raw["message"].get("fid"))
        return target if isinstance(target, str) else None
    return None


async def fcm_messages_send(request: Request) -> Response:
    state = _state(request)
    started_at = time.time()  # each record says when its call began (what was in flight when)
    project = request.path_params["project"]
    raw_bytes = await request.body()
    await _apply_latency(state)
    raw = _parse_json(raw_bytes)
    to = _fcm_target(raw)

    def reject(status: int, reason: str) -> None:
        state.record_rejected(
            {"channel": "push", "status": status, "reason": reason, "to": to, "raw": raw, "started_at": started_at}
        )

    token = _bearer(request)
    if token is None or not state.token_is_valid(token):
        reject(401, "UNAUTHENTICATED")
        return _fcm_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )

    fault = state.take_fault("push")
    if fault == ("rate_limit", 429):
        reject(429, "QUOTA_EXCEEDED")
        return _fcm_error(
            429, "Quota exceeded for sending messages.", "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", {"Retry-After": "1"}
        )
    if fault is not None:
        status = fault[1]
        google_status = _GOOGLE_STATUS.get(status, "UNAVAILABLE" if status >= 500 else "UNKNOWN")
        reject(status, google_status)
        # FCM repeats the status as errorCode for its server-side errors.
        return _fcm_error(status, f"Simulated failure (HTTP {status}).", google_status, google_status)

    problem = _validate_fcm_message(raw)
    if problem is not None:
        reject(400, "INVALID_ARGUMENT")
        return _fcm_error(400, problem, "INVALID_ARGUMENT", "INVALID_ARGUMENT")

    # Magic token prefixes let tests provoke per-token errors deterministically.
    if to.startswith("unregistered-"):
        reject(404, "UNREGISTERED")
        return _fcm_error(404, "Requested entity was not found.", "NOT_FOUND", "UNREGISTERED")
    if to.startswith("invalid-"):
        reject(400, "INVALID_ARGUMENT")
        return _fcm_error(
            400, "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT", "INVALID_ARGUMENT"
        )
    if to.startswith("sender-mismatch-"):
        reject(403, "SENDER_ID_MISMATCH")
        return _fcm_error(403, "SenderId mismatch", "PERMISSION_DENIED", "SENDER_ID_MISMATCH")

    message = raw["message"]
    notification = message.get("notification", {})
    message_id = new_id()
    state.record_message(
        {
            "id": message_id,
            "started_at": started_at,
            "channel": "push",
            "to": to,
            "title": notification.get("title"),
            "body": notification.get("body"),
            "data": message.get("data", {}),
            "raw": raw,
        }
    )
    return JSONResponse({"name": f"projects/{project}/messages/{message_id}"})


# -- Twilio Programmable Messaging ------------------------------------------------

TWILIO_MAX_BODY_CHARS = 1600  # Twilio refuses a longer Body with error 21617
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

# Twilio's documented magic test numbers (test credentials): the error each `To` provokes.
TWILIO_MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}

# GSM 03.38: the basic alphabet takes one 7-bit slot, the extension table two.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def _twilio_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # The legacy shape the `twilio` library turns into TwilioRestException (.status, .code, .msg).
    # Never add "type" and "title" together: the library would read an RFC 9457 problem instead.
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
    return JSONResponse(body, status_code=status, headers=headers)


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not credential.strip():
        return None
    try:
        decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def _sms_segments(body: str) -> int:
    """How many segments a carrier bills `body` as: 160/153 GSM-7 slots, else 70/67 UCS-2 units."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in body):
        units, single, multi = sum(2 if c in _GSM_EXTENDED else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 0 if units == 0 else 1 if units <= single else -(-units // multi)


def _twilio_date() -> str:
    # RFC 2822 in UTC, as Twilio writes date_created ("Thu, 03 Dec 2026 10:00:00 +0000").
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())


def _validate_sms(form: dict[str, str]) -> tuple[int, str] | None:
    """Returns (Twilio error code, message) for the first problem Twilio would report, or None."""
    to = form.get("To", "")
    if not to:
        return (21604, "A 'To' phone number is required.")
    if not _E164.match(to):
        return (21211, f"The 'To' number {to} is not a valid phone number.")
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return (21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.")
    body = form.get("Body", "")
    if not body:
        return (21602, "Message body is required.")
    if len(body) > TWILIO_MAX_BODY_CHARS:
        return (21617, "The concatenated message body exceeds the 1600 character limit.")
    return TWILIO_MAGIC_TO.get(to)


async def twilio_messages_create(request: Request) -> Response:
    state = _state(request)
    started_at = time.time()  # each record says when its call began (what was in flight when)
    account_sid = request.path_params["account_sid"]
    raw_bytes = await request.body()
    await _apply_latency(state)
    # Form-encoded; parsed by hand: Starlette's request.form() needs python-multipart.
    parsed = parse_qs(raw_bytes.decode("utf-8", "replace"), keep_blank_values=True)
    form = {key: values[0] for key, values in parsed.items()}
    to = form.get("To")

    def reject(status: int, reason: str, code: int) -> None:
        state.record_rejected(
            {"channel": "sms", "status": status, "reason": reason, "code": code, "to": to, "raw": form,
             "started_at": started_at}
        )

    credentials = _basic_auth(request)
    if credentials is None or credentials[0] != account_sid or not state.twilio_credentials_valid(*credentials):
        reject(401, "unauthorized", 20003)
        return _twilio_error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})

    if state.twilio_account_down(account_sid):
        status = state.get_config()["fail_status"]
        reject(status, "account_down", 20000 + status)
        return _twilio_error(status, 20000 + status, f"Simulated outage of this account (HTTP {status})")
    fault = state.take_fault("sms")
    if fault == ("rate_limit", 429):
        reject(429, "rate_limited", 20429)
        return _twilio_error(429, 20429, "Too Many Requests")
    if fault is not None:
        status = fault[1]
        # Twilio numbers its HTTP-level errors 20000 + status (20500 Internal Server Error, 20503).
        reject(status, "injected_failure", 20000 + status)
        return _twilio_error(status, 20000 + status, f"Simulated failure (HTTP {status})")

    problem = _validate_sms(form)
    if problem is not None:
        code, message = problem
        reject(400, f"twilio_{code}", code)
        return _twilio_error(400, code, message)

    sid = "SM" + secrets.token_hex(16)
    body = form["Body"]
    sender = form.get("From") or None
    service = form.get("MessagingServiceSid") or None
    record = state.record_message(
        {
            "id": sid,
            "started_at": started_at,
            "channel": "sms",
            "to": to,
            "from": sender,
            "messaging_service_sid": service,
            "body": body,
            "status_callback": form.get("StatusCallback") or None,
            "account_sid": account_sid,
            "raw": form,
        }
    )
    _webhooks(request).sms_accepted(record, credentials[1])
    uri = f"/{TWILIO_API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
    now = _twilio_date()
    resource = {
        "account_sid": account_sid,
        "api_version": TWILIO_API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": sender,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": str(_sms_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        # Through a Messaging Service without a From, Twilio first answers "accepted" (it picks
        # the sender later); otherwise "queued".
        "status": "accepted" if sender is None else "queued",
        "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
        "to": to,
        "uri": uri,
    }
    return JSONResponse(resource, status_code=201)


# -- /_sim control and inspection ---------------------------------------------


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def sim_get_config(request: Request) -> Response:
    return JSONResponse(_state(request).get_config())


async def sim_put_config(request: Request) -> Response:
    update = _parse_json(await request.body())
    try:
        return JSONResponse(_state(request).update_config(update))
    except ConfigError as exc:
        return _bad_request(str(exc))


async def sim_messages(request: Request) -> Response:
    try:
        channel = _channel_param(request)
    except ConfigError as exc:
        return _bad_request(str(exc))
    return JSONResponse({"messages": _state(request).messages(channel)})


async def sim_rejected(request: Request) -> Response:
    try:
        channel = _channel_param(request)
    except ConfigError as exc:
        return _bad_request(str(exc))
    return JSONResponse({"rejected": _state(request).rejected(channel)})


async def sim_events(request: Request) -> Response:
    kind = request.query_params.get("kind")
    if kind is not None and kind not in EVENT_KINDS:
        return _bad_request(f"unknown kind {kind!r}")
    return JSONResponse({"events": _state(request).events(kind)})


async def sim_sendgrid_public_key(request: Request) -> Response:
    return JSONResponse({"public_key": _state(request).sendgrid_public_key})


async def sim_clear_messages(request: Request) -> Response:
    _state(request).clear_messages()
    return Response(status_code=204)


async def sim_health(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_simulator_app(state: SimulatorState | None = None) -> Starlette:
    """Builds the simulator ASGI app around `state` (a fresh one when omitted).

    The state is reachable as `app.state.simulator`, the webhook sender as `app.state.webhooks`.
    """
    routes = [
        Route("/v3/mail/send", sendgrid_mail_send, methods=["POST"]),
        Route("/token", oauth_token, methods=["POST"]),
        Route("/v1/projects/{project}/messages:send", fcm_messages_send, methods=["POST"]),
        Route(
            "/v1/projects/{project}/serviceAccounts/{email}/allowedLocations",
            regional_access_boundary,
            methods=["GET"],
        ),
        Route(
            f"/{TWILIO_API_VERSION}/Accounts/{{account_sid}}/Messages.json", twilio_messages_create, methods=["POST"]
        ),
        Route("/_sim/config", sim_get_config, methods=["GET"]),
        Route("/_sim/config", sim_put_config, methods=["PUT"]),
        Route("/_sim/messages", sim_messages, methods=["GET"]),
        Route("/_sim/messages", sim_clear_messages, methods=["DELETE"]),
        Route("/_sim/rejected", sim_rejected, methods=["GET"]),
        Route("/_sim/events", sim_events, methods=["GET"]),
        Route("/_sim/events/sendgrid-public-key", sim_sendgrid_public_key, methods=["GET"]),
        Route("/_sim/health", sim_health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.simulator = state if state is not None else SimulatorState()
    app.state.webhooks = WebhookSender(app.state.simulator)
    return app
