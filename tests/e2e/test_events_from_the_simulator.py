"""The whole loop with nothing hand-made: Clarion sends through the real `sendgrid` client, the
simulator reports what became of each email with SendGrid's signed Event Webhook (its own key
pair), and Clarion records it: delivered flips the status, a bounce or a spam report suppresses
the address and the next send to it is skipped before any provider call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    key = SecretStr(simulator.state.sendgrid_public_key)
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       sendgrid_webhook_public_key=key) as running:
        yield running


@pytest.fixture(autouse=True)
def events_to_clarion(stack: Stack) -> None:
    stack.simulator.state.reset()
    stack.simulator.state.update_config({
        "sendgrid_event_webhook": stack.base_url + "/v1/providers/sendgrid/events",
        "event_rules": [{"match": "*-bounce@example.com", "outcome": "bounce"},
                        {"match": "*-spam@example.com", "outcome": "spamreport"}]})


def user_with(stack: Stack, address: str) -> tuple[str, str]:
    client = stack.client()
    user_id, key = f"u-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:6]}"
    assert client.post("/v1/users", json={"user_id": user_id,
                                          "email_address": address}).status_code == 201
    assert client.post("/v1/templates", json={"template_key": key, "subject": "Hi",
                                              "body": "Code {{ code }}"}).status_code == 201
    return user_id, key


def send(stack: Stack, user_id: str, key: str) -> str:
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user_id, "template_key": key, "channels": ["email"],
        "message_data": {"code": "42"}})
    assert reply.status_code == 202, reply.text
    return str(reply.json()["data"]["notification_id"])


def test_a_delivered_email_ends_delivered(stack: Stack) -> None:
    user_id, key = user_with(stack, f"{uuid.uuid4().hex[:8]}@example.com")
    notification_id = send(stack, user_id, key)

    assert stack.wait_for_status(notification_id, {"delivered"})["status"] == "delivered"
    [post] = stack.simulator.state.wait_for_events(1, "sendgrid")
    assert post["status"] == 200


@pytest.mark.parametrize(("suffix", "channel_status", "reason"), [
    ("bounce", "bounced", "hard_bounce"), ("spam", "complained", "spam_report")])
def test_a_bounce_or_a_spam_report_suppresses_and_the_next_send_is_skipped(
        stack: Stack, suffix: str, channel_status: str, reason: str) -> None:
    address = f"{uuid.uuid4().hex[:8]}-{suffix}@example.com"
    user_id, key = user_with(stack, address)
    first = send(stack, user_id, key)
    stack.simulator.state.wait_for_events(1, "sendgrid")
    shown = stack.client().get(f"/v1/notifications/{first}").json()["data"]
    assert shown["channels"]["email"]["status"] == channel_status
    sent_before = len(stack.simulator.state.messages("email"))

    second = stack.wait_for_status(send(stack, user_id, key), {"failed", "sent"})

    assert (second["status"], second["channels"]["email"]["error"]) == (
        "failed", f"suppressed: {reason}")
    assert len(stack.simulator.state.messages("email")) == sent_before
    entry = stack.client().get(f"/v1/suppressions/{address}").json()["data"]["suppressed"]
    assert (entry["reason"], entry["notification_id"]) == (reason, first)
