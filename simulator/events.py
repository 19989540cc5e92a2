"""What the simulator reports after accepting a message: SendGrid events and Twilio status callbacks.

Owns the outcome names a test can ask for through `event_rules`, which outcome a recipient gets,
the exact shape of SendGrid's Event Webhook array and of Twilio's status callback form, and both
signatures (SendGrid's ECDSA key pair, Twilio's HMAC through the `twilio` library). Everything
here is pure but the key pair; posting and retrying belong to `webhooks.py`.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

TWILIO_API_VERSION = "2010-04-01"
SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"

_DELIVERED = {"event": "delivered", "response": "250 2.0.0 OK"}

# Outcome name -> the events SendGrid posts for one recipient, in order.
EMAIL_OUTCOMES: dict[str, tuple[dict[str, str], ...]] = {
    "delivered": (_DELIVERED,),
    "bounce": ({"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 unknown user"},),
    "blocked": ({"event": "bounce", "type": "blocked", "status": "5.7.1",
                 "reason": "550 5.7.1 message refused by the receiving server"},),
    "dropped": ({"event": "dropped", "status": "5.0.0", "reason": "Invalid"},),
    # A complaint is only possible for a mail that arrived.
    "spamreport": (_DELIVERED, {"event": "spamreport"}),
    "deferred": ({"event": "deferred", "response": "451 4.3.0 mailbox temporarily unavailable", "attempt": "1"},),
    "none": (),
}

# Outcome name -> (MessageStatus, ErrorCode) of Twilio's final status callback; None: no callback.
SMS_OUTCOMES: dict[str, tuple[str, int | None] | None] = {
    "delivered": ("delivered", None),
    "undelivered": ("undelivered", 30003),  # unreachable destination handset
    "failed": ("failed", 30006),  # landline or unreachable carrier
    "stop": ("undelivered", 21610),  # the recipient replied STOP
    "none": None,
}

OUTCOMES: dict[str, Mapping[str, object]] = {"email": EMAIL_OUTCOMES, "sms": SMS_OUTCOMES}
UNMATCHED_OUTCOME = "delivered"


def pick_outcome(rules: Sequence[Mapping[str, str]], recipient: str, channel: str) -> str:
    """The outcome of the first rule whose pattern matches `recipient`, else "delivered".

    Rules whose outcome does not exist for `channel` are skipped, so one list can hold email and
    SMS rules (`"*"` → "bounce" applies to mail only). Matching ignores case: addresses do.
    """
    known = OUTCOMES[channel]
    for rule in rules:
        if rule["outcome"] in known and fnmatchcase(recipient.lower(), rule["match"].lower()):
            return rule["outcome"]
    return UNMATCHED_OUTCOME


def _recipients(personalization: Mapping[str, Any]) -> Iterator[str]:
    # SendGrid reports on every envelope recipient, cc and bcc included.
    for field in ("to", "cc", "bcc"):
        entries = personalization.get(field)
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("email"), str):
                yield entry["email"]


def _custom_args(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def sendgrid_events(
    message_id: str, mail: Mapping[str, Any], rules: Sequence[Mapping[str, str]], timestamp: int | None = None
) -> list[dict[str, Any]]:
    """The Event Webhook array SendGrid would post about an accepted `mail` (a validated body).

    Custom args (top level, overridden per personalization) are flattened into each event as
    SendGrid does; the event's own fields win a clash, so a custom arg can never fake an event.
    """
    timestamp = int(time.time()) if timestamp is None else timestamp
    top_args = _custom_args(mail.get("custom_args"))
    events: list[dict[str, Any]] = []
    recipient_index = 0
    for personalization in mail["personalizations"]:
        if not isinstance(personalization, dict):
            continue
        args = {**top_args, **_custom_args(personalization.get("custom_args"))}
        for address in _recipients(personalization):
            # One X-Message-Id per request; SendGrid suffixes it per recipient.
            sg_message_id = f"{message_id}.filter0001.{recipient_index}.0"
            recipient_index += 1
            for fields in EMAIL_OUTCOMES[pick_outcome(rules, address, "email")]:
                events.append({
                    **args,
                    "email": address,
                    "timestamp": timestamp,
                    "sg_event_id": secrets.token_urlsafe(16),
                    "sg_message_id": sg_message_id,
                    **fields,
                })
    return events


def twilio_status_params(message: Mapping[str, Any], rules: Sequence[Mapping[str, str]]) -> dict[str, str] | None:
    """The form of Twilio's final status callback for an accepted SMS record, or None for none.

    Only the final status is posted (real Twilio may post "sent" first): one callback per
    message keeps the count a test waits for predictable.
    """
    final = SMS_OUTCOMES[pick_outcome(rules, message["to"], "sms")]
    if final is None:
        return None
    status, error_code = final
    params = {
        "MessageSid": message["id"],
        "SmsSid": message["id"],
        "AccountSid": message["account_sid"],
        "To": message["to"],
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": TWILIO_API_VERSION,
    }
    if message.get("from"):
        params["From"] = message["from"]
    if message.get("messaging_service_sid"):
        params["MessagingServiceSid"] = message["messaging_service_sid"]
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature for a callback to the exact `url`, computed by Twilio's own library
    so it cannot drift from what `RequestValidator.validate` checks."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


class SendGridSigner:
    """A fresh P-256 key pair that signs Event Webhook posts as SendGrid does.

    Made once per simulator state: receivers are configured with `public_key` once and must
    keep verifying across resets.
    """

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Base64 DER without PEM armour: what SendGrid's console shows and what
        # EventWebhook.convert_public_key_to_ecdsa takes.
        self.public_key = base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        """Signature headers over `timestamp + body` (bytes, exactly as sent)."""
        timestamp = str(int(time.time())) if timestamp is None else timestamp
        signature = self._key.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return {SENDGRID_SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
                SENDGRID_TIMESTAMP_HEADER: timestamp}

    def __repr__(self) -> str:
        return "SendGridSigner(<P-256 key>)"  # never print the private key
