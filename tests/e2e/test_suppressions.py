"""The suppression list end to end: SendGrid's signed events put an address on it, the next
send to that address is skipped before any provider call, operators read, add and remove
entries through `/v1/suppressions`, and every removal can be read back with who and why."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.e2e.sendgrid_events import KEY, event, post_events, public_key
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       sendgrid_webhook_public_key=SecretStr(public_key(KEY))) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_simulator(simulator: Any) -> None:
    simulator.state.reset()


def user_and_template(stack: Stack) -> tuple[str, str, str]:
    """(user_id, template_key, the user's email address) for a fresh user."""
    user_id, template_key = stack.code_user_and_template()
    return user_id, template_key, f"{user_id}@example.com"


def send_email(stack: Stack, user_id: str, template_key: str) -> dict[str, Any]:
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user_id, "template_key": template_key, "channels": ["email"],
        "message_data": {"code": uuid.uuid4().hex[:6]}})
    assert reply.status_code == 202, reply.text
    return stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent", "failed"})


@pytest.mark.parametrize(("name", "fields", "reason"), [
    ("bounce", {"type": "bounce", "status": "5.1.1", "reason": "550 unknown user"},
     "hard_bounce"),
    ("spamreport", {}, "spam_report"),
    ("dropped", {"reason": "Invalid"}, "invalid_address"),
])
def test_a_bad_address_event_suppresses_it_and_the_next_send_is_skipped(
        stack: Stack, name: str, fields: dict[str, Any], reason: str) -> None:
    user_id, template_key, address = user_and_template(stack)
    first = send_email(stack, user_id, template_key)
    assert first["status"] == "sent"
    reply = post_events(stack, [event(first["notification_id"], name, email=address, **fields)])
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["suppressed"] == 1
    stack.simulator.state.clear_messages()

    second = send_email(stack, user_id, template_key)

    email = second["channels"]["email"]
    assert second["status"] == "failed"
    assert (email["status"], email["error_code"], email["error"]) == (
        "skipped", "suppressed", f"suppressed: {reason}")
    assert stack.simulator.state.messages("email") == []  # no provider call
    providers = stack.client().get("/v1/system/providers").json()["data"]
    assert "suppression_list" not in json.dumps(providers)  # not a provider: not counted
    listed = stack.client().get("/v1/suppressions", params={"address": address}).json()
    assert [(e["address"], e["reason"], e["notification_id"]) for e in listed["data"]] == [
        (address, reason, first["notification_id"])]


def test_a_blocked_bounce_or_a_delivery_leaves_the_address_alone(stack: Stack) -> None:
    user_id, template_key, address = user_and_template(stack)
    first = send_email(stack, user_id, template_key)
    reply = post_events(stack, [
        event(first["notification_id"], "delivered", email=address),
        event(first["notification_id"], "bounce", email=address, type="blocked")])
    assert reply.json()["data"]["suppressed"] == 0

    assert send_email(stack, user_id, template_key)["status"] == "sent"


def test_an_operator_adds_an_address_and_removes_it_with_a_reason_that_is_kept(
        stack: Stack) -> None:
    client = stack.client()
    user_id, template_key, address = user_and_template(stack)
    added = client.post("/v1/suppressions", json={"address": address.upper(),
                                                  "note": "asked by phone"})
    assert added.status_code == 201, added.text
    entry = added.json()["data"]
    assert (entry["address"], entry["reason"], entry["note"]) == (
        address, "manual", "asked by phone")
    me = entry["created_by"]
    assert me.startswith("key:tests-")  # the stack's admin key
    assert client.post("/v1/suppressions", json={"address": address}).status_code == 200
    assert send_email(stack, user_id, template_key)["channels"]["email"]["error"] == \
        "suppressed: manual"

    no_reason = client.delete(f"/v1/suppressions/{address}")
    assert (no_reason.status_code, no_reason.json()["error"]) == (422, "reason_required")
    removed = client.request("DELETE", f"/v1/suppressions/{address}",
                             json={"reason": "the user fixed their mailbox"})
    assert removed.status_code == 200, removed.text
    again = client.delete(f"/v1/suppressions/{address}", params={"reason": "twice"})
    assert (again.status_code, again.json()["error"]) == (404, "suppression_not_found")

    history = client.get(f"/v1/suppressions/{address}").json()["data"]
    assert history["suppressed"] is None
    [removal] = history["removals"]
    assert (removal["reason"], removal["suppressed_by"], removal["removed_by"],
            removal["why"]) == ("manual", me, me, "the user fixed their mailbox")
    audit = client.get("/v1/suppressions/removals", params={"address": address}).json()
    assert [r["why"] for r in audit["data"]] == ["the user fixed their mailbox"]
    assert send_email(stack, user_id, template_key)["status"] == "sent"


def test_the_list_filters_by_reason_and_channel_and_refuses_nonsense(stack: Stack) -> None:
    client = stack.client()
    number = f"+1415{uuid.uuid4().int % 10**7:07d}"
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    assert client.post("/v1/suppressions", json={"address": number,
                                                 "reason": "unsubscribed"}).status_code == 201
    assert client.post("/v1/suppressions", json={"address": email,
                                                 "reason": "spam_report"}).status_code == 201

    sms = client.get("/v1/suppressions", params={"channel": "sms", "limit": 200}).json()
    spam = client.get("/v1/suppressions", params={"reason": "spam_report",
                                                  "limit": 200}).json()
    assert number in [e["address"] for e in sms["data"]]
    assert all(e["channel"] == "sms" for e in sms["data"])
    assert email in [e["address"] for e in spam["data"]]
    assert all(e["reason"] == "spam_report" for e in spam["data"])
    for bad in ({"channel": "fax"}, {"reason": "bored"}, {"address": "nobody"},
                {"limit": "0"}):
        reply = client.get("/v1/suppressions", params=bad)
        assert (reply.status_code, reply.json()["error"]) == (422, "validation_error")
    refused = client.post("/v1/suppressions", json={"address": "not an address"})
    assert (refused.status_code, refused.json()["error"]) == (422, "validation_error")
    unknown = client.get("/v1/suppressions/nobody@example.com")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "suppression_not_found")


def user_with_phone(stack: Stack) -> tuple[str, str, str, str]:
    """(user_id, template_key, email address, phone number) for a fresh user with both."""
    client = stack.client()
    user_id, key = f"u-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:6]}"
    address, phone = f"{user_id}@example.com", f"+1415{uuid.uuid4().int % 10**7:07d}"
    assert client.post("/v1/users", json={"user_id": user_id, "email_address": address,
                                          "phone_number": phone}).status_code == 201
    assert client.post("/v1/templates", json={
        "template_key": key, "subject": "Code", "body": "Your code: {{ code }}",
        "sms_body": "Code {{ code }}"}).status_code == 201
    return user_id, key, address, phone


def send_with_fallback(stack: Stack, user_id: str, key: str) -> dict[str, Any]:
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user_id, "template_key": key, "channels": ["email"],
        "fallback_channels": ["sms"], "message_data": {"code": "9911"}})
    assert reply.status_code == 202, reply.text
    assert reply.json()["data"]["channels"] == {"email": "queued", "sms": "standby"}
    return reply.json()["data"]


def test_a_suppressed_email_goes_to_the_fallback_sms_instead(stack: Stack) -> None:
    user_id, key, address, phone = user_with_phone(stack)
    assert stack.client().post("/v1/suppressions", json={"address": address}).status_code == 201

    accepted = send_with_fallback(stack, user_id, key)
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"})

    assert final["status"] == "sent"
    assert (final["channels"]["email"]["status"], final["channels"]["sms"]["status"]) == (
        "skipped", "sent")
    assert stack.simulator.state.messages("email") == []
    [sms] = stack.simulator.state.messages("sms")
    assert (sms["to"], sms["body"]) == (phone, "Code 9911")


def test_a_bounced_email_goes_to_the_fallback_and_a_delivered_one_does_not(
        stack: Stack) -> None:
    user_id, key, address, phone = user_with_phone(stack)
    bounced = send_with_fallback(stack, user_id, key)["notification_id"]
    other_id, other_key, other_address, _ = user_with_phone(stack)
    delivered = send_with_fallback(stack, other_id, other_key)["notification_id"]
    for notification_id in (bounced, delivered):
        assert stack.wait_for_status(notification_id, {"sent"})["status"] == "sent"

    post_events(stack, [event(bounced, "bounce", email=address, type="bounce"),
                        event(delivered, "delivered", email=other_address)])

    final = stack.wait_for_status(bounced, {"partially_sent"})
    assert (final["channels"]["email"]["status"], final["channels"]["sms"]["status"]) == (
        "bounced", "sent")
    assert [m["to"] for m in stack.simulator.state.messages("sms")] == [phone]
    kept = stack.wait_for_status(delivered, {"delivered"})
    assert kept["channels"]["sms"]["status"] == "standby"


def test_a_templates_fallback_channels_apply_without_the_request_naming_them(
        stack: Stack) -> None:
    user_id, _, address, phone = user_with_phone(stack)
    client = stack.client()
    key = f"t-{uuid.uuid4().hex[:6]}"
    made = client.post("/v1/templates", json={"template_key": key, "subject": "S", "body": "B",
                                              "sms_body": "fallback {{ code }}",
                                              "fallback_channels": ["sms"]})
    assert made.json()["data"]["fallback_channels"] == ["sms"]
    assert client.post("/v1/suppressions", json={"address": address}).status_code == 201

    reply = client.post("/v1/notifications", json={"user_id": user_id, "template_key": key,
                                                   "channels": ["email"],
                                                   "message_data": {"code": "5"}})

    assert reply.json()["data"]["channels"] == {"email": "queued", "sms": "standby"}
    final = stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent", "failed"})
    assert final["channels"]["sms"]["status"] == "sent"
    assert [(m["to"], m["body"]) for m in stack.simulator.state.messages("sms")] == [
        (phone, "fallback 5")]


def test_an_address_with_a_slash_is_shown_and_removed(stack: Stack) -> None:
    client = stack.client()
    address = f"ops/{uuid.uuid4().hex[:6]}@example.com"
    assert client.post("/v1/suppressions", json={"address": address}).status_code == 201
    assert client.get(f"/v1/suppressions/{address}").json()["data"]["address"] == address
    removed = client.delete(f"/v1/suppressions/{address}", params={"reason": "typo"})
    assert removed.status_code == 200, removed.text
