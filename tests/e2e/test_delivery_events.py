"""SendGrid's signed Event Webhook end to end: a real ECDSA key pair signs the events the way
SendGrid does (`cryptography`, as notes/providers.md says), Clarion verifies them with the
`sendgrid` library's helper and records what happened to each email."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from tests.e2e.sendgrid_events import (
    KEY,
    OTHER_KEY,
    PATH,
    event,
    post_events,
    public_key,
)
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       sendgrid_webhook_public_key=SecretStr(public_key(KEY))) as running:
        yield running


def sent_email(stack: Stack) -> str:
    user_id, template_key = stack.code_user_and_template()
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user_id, "template_key": template_key, "channels": ["email"],
        "message_data": {"code": uuid.uuid4().hex[:6]}})
    notification_id = reply.json()["data"]["notification_id"]
    assert stack.wait_for_status(notification_id, {"sent"})["status"] == "sent"
    return notification_id


def shown(stack: Stack, notification_id: str) -> dict[str, Any]:
    return stack.client().get(f"/v1/notifications/{notification_id}").json()["data"]


def test_a_delivered_event_flips_the_status_and_is_kept_with_its_time(stack: Stack) -> None:
    notification_id = sent_email(stack)
    delivered = event(notification_id, "delivered", response="250 OK")

    reply = post_events(stack, [delivered])
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"] == {"recorded": 1, "moved": 1, "unknown": 0, "suppressed": 0,
                                     "ignored": 0}
    data = shown(stack, notification_id)
    assert data["status"] == "delivered"
    email = data["channels"]["email"]
    assert email["status"] == "delivered"
    assert [(e["event"], e["status"]) for e in email["events"]] == [("delivered", "delivered")]

    # SendGrid retries a request it did not see answered: the same events change nothing.
    again = post_events(stack, [delivered])
    assert again.json()["data"]["recorded"] == 0
    assert len(shown(stack, notification_id)["channels"]["email"]["events"]) == 1


def test_a_late_delivered_never_overwrites_a_bounce(stack: Stack) -> None:
    notification_id = sent_email(stack)
    now = int(time.time())
    assert post_events(stack, [event(notification_id, "bounce", type="bounce",
                                     reason="550 5.1.1 no such user", timestamp=now)]
                       ).status_code == 200
    assert post_events(stack, [event(notification_id, "delivered", timestamp=now - 30)]
                       ).status_code == 200
    data = shown(stack, notification_id)
    assert (data["channels"]["email"]["status"], data["status"]) == ("bounced", "failed")
    assert [e["event"] for e in data["channels"]["email"]["events"]] == ["bounce", "delivered"]


def test_a_spam_report_and_a_drop_have_their_statuses(stack: Stack) -> None:
    complained, dropped = sent_email(stack), sent_email(stack)
    post_events(stack, [event(complained, "delivered"), event(complained, "spamreport"),
                        event(dropped, "dropped", reason="Invalid")])
    assert shown(stack, complained)["channels"]["email"]["status"] == "complained"
    assert shown(stack, dropped)["channels"]["email"]["status"] == "undelivered"


def test_a_forged_unsigned_or_stale_request_is_refused_and_changes_nothing(stack: Stack) -> None:
    notification_id = sent_email(stack)
    delivered = [event(notification_id, "delivered")]

    forged = post_events(stack, delivered, key=OTHER_KEY)
    unsigned = post_events(stack, delivered, signed=False)
    stale = post_events(stack, delivered, signed_at=time.time() - 11 * 60)
    tampered_raw = json.dumps(delivered)
    timestamp = str(int(time.time()))
    signature = KEY.sign(timestamp.encode() + tampered_raw.encode(), ec.ECDSA(hashes.SHA256()))
    tampered = httpx.post(stack.base_url + PATH, timeout=15,
                          content=tampered_raw.replace("delivered", "bounce"),
                          headers={"X-Twilio-Email-Event-Webhook-Signature":
                                   base64.b64encode(signature).decode(),
                                   "X-Twilio-Email-Event-Webhook-Timestamp": timestamp})
    garbage = httpx.post(stack.base_url + PATH, content="[]", timeout=15, headers={
        "X-Twilio-Email-Event-Webhook-Signature": "not base64!",
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp})

    for reply, code in ((forged, "invalid_signature"), (unsigned, "invalid_signature"),
                        (stale, "stale_signature"), (tampered, "invalid_signature"),
                        (garbage, "invalid_signature")):
        assert (reply.status_code, reply.json()["error"]) == (403, code), reply.text
    data = shown(stack, notification_id)
    assert data["channels"]["email"]["status"] == "sent"
    assert data["channels"]["email"]["events"] == []


def test_events_about_other_mail_are_counted_and_left_alone(stack: Stack) -> None:
    reply = post_events(stack, [event(str(uuid.uuid4()), "delivered"),
                                {"event": "open", "email": "x@example.com"},
                                {"event": "delivered", "email": "y@example.com"}])
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"] == {"recorded": 0, "moved": 0, "unknown": 1, "suppressed": 0,
                                    "ignored": 2}
