"""Signing SendGrid's Event Webhook the way SendGrid does, for the end-to-end tests: a real
ECDSA P-256 key pair (`cryptography`, as notes/providers.md says); Clarion verifies with the
`sendgrid` library's helper."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.stack import Stack

PATH = "/v1/providers/sendgrid/events"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def public_key(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def post_events(stack: Stack, events: list[dict[str, Any]],
                key: ec.EllipticCurvePrivateKey = KEY, signed_at: float | None = None,
                signed: bool = True) -> httpx.Response:
    raw = json.dumps(events)
    timestamp = str(int(signed_at if signed_at is not None else time.time()))
    headers = {"Content-Type": "application/json"}
    if signed:
        signature = key.sign(timestamp.encode() + raw.encode(), ec.ECDSA(hashes.SHA256()))
        headers["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(signature).decode()
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = timestamp
    # No API key: SendGrid has none to send.
    return httpx.post(stack.base_url + PATH, content=raw, headers=headers, timeout=15)


def event(notification_id: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"email": "someone@example.com", "timestamp": int(time.time()), "event": name,
            "sg_event_id": uuid.uuid4().hex, "sg_message_id": "sg.1",
            "notification_id": notification_id, **fields}
