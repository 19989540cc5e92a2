"""SMS end to end: the running app, real PostgreSQL, Redis and RabbitMQ, and the real `twilio`
client talking to the provider simulator's Twilio API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator,
                       tmp_path_factory.mktemp("stack-logs")) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_simulator(simulator: Any) -> None:
    simulator.state.reset()


@pytest.fixture(scope="module")
def code_template(stack: Stack) -> str:
    key = f"code-{uuid.uuid4().hex[:6]}"
    reply = stack.client().post("/v1/templates", json={
        "template_key": key, "subject": "Your code", "body": "Hello {{ name }}, the code is {{ code }}.",
        "sms_body": "{{ code }} is your Clarion code, {{ name }}.",
    })
    assert reply.status_code == 201, reply.text
    return key


def make_user(stack: Stack, **fields: Any) -> dict[str, Any]:
    body = {"user_id": f"u-{uuid.uuid4().hex[:10]}",
            "email_address": f"{uuid.uuid4().hex[:8]}@example.com", **fields}
    reply = stack.client().post("/v1/users", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()["data"]


def send(stack: Stack, user: dict[str, Any], template: str, **fields: Any) -> dict[str, Any]:
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": template,
        "message_data": {"name": "Ada", "code": "482113"}, **fields})
    assert reply.status_code == 202, reply.text
    return reply.json()["data"]


def dead_letters_of(stack: Stack, notification_id: str) -> list[dict[str, Any]]:
    rows = stack.client().get("/v1/dlq", params={"limit": 200, "channel": "sms"}).json()["data"]
    return [r for r in rows if r["notification_id"] == notification_id]


def test_a_user_with_a_phone_number_gets_the_sms_through_twilio(
    stack: Stack, code_template: str
) -> None:
    user = make_user(stack, phone_number="+14155550123")
    accepted = send(stack, user, code_template)
    assert accepted["channels"] == {"email": "queued", "push": "skipped", "sms": "queued"}

    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed",
                                                                "partially_sent"})
    assert final["status"] == "sent", final
    sms = final["channels"]["sms"]
    assert (sms["status"], sms["provider"], sms["attempts"]) == ("sent", "twilio", 1)
    [message] = stack.simulator.state.messages("sms")
    assert message["to"] == "+14155550123"
    assert message["body"] == "482113 is your Clarion code, Ada."
    assert sms["provider_message_id"] == message["id"]


def test_only_sms_can_be_asked_for(stack: Stack, code_template: str) -> None:
    user = make_user(stack, phone_number="+447700900123")
    accepted = send(stack, user, code_template, channels=["sms"])
    assert accepted["channels"] == {"sms": "queued"}
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"})
    assert final["status"] == "sent"
    assert stack.simulator.state.messages("email") == []
    assert len(stack.simulator.state.messages("sms")) == 1


def test_a_user_without_a_phone_number_has_the_sms_skipped_with_its_reason(
    stack: Stack, code_template: str
) -> None:
    user = make_user(stack)
    accepted = send(stack, user, code_template, channels=["email", "sms"])
    assert accepted["channels"] == {"email": "queued", "sms": "skipped"}
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"})
    assert final["channels"]["sms"]["error_code"] == "no_phone_number"


def test_a_user_who_turned_sms_off_gets_none(stack: Stack, code_template: str) -> None:
    user = make_user(stack, phone_number="+14155550124", preferences={"sms_enabled": False})
    accepted = send(stack, user, code_template, channels=["email", "sms"])
    assert accepted["channels"] == {"email": "queued", "sms": "skipped"}
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"})
    assert final["channels"]["sms"]["error_code"] == "channel_disabled"
    assert stack.simulator.state.messages("sms") == []


@pytest.mark.parametrize(("number", "code"), [("+15005550001", 21211),
                                              ("+15005550004", 21610),
                                              ("+15005550009", 21614)])
def test_a_permanent_twilio_refusal_is_a_dead_letter_at_once(
    stack: Stack, code_template: str, number: str, code: int
) -> None:
    user = make_user(stack, phone_number=number)
    accepted = send(stack, user, code_template, channels=["sms"])
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"}, timeout=15)

    assert final["status"] == "failed"
    sms = final["channels"]["sms"]
    assert (sms["status"], sms["attempts"], sms["error_code"]) == ("failed", 1, f"twilio_{code}")
    [dead] = dead_letters_of(stack, accepted["notification_id"])
    assert (dead["channel"], dead["error_code"]) == ("sms", f"twilio_{code}")


def test_a_number_that_replied_stop_is_suppressed_and_not_texted_again(
    stack: Stack, code_template: str
) -> None:
    number = "+15005550004"  # the simulator answers 21610 for it, as Twilio does after STOP
    user = make_user(stack, phone_number=number)
    first = send(stack, user, code_template, channels=["sms"])
    stack.wait_for_status(first["notification_id"], {"failed"}, timeout=15)
    entry = stack.client().get(f"/v1/suppressions/{number}").json()["data"]["suppressed"]
    assert (entry["channel"], entry["reason"], entry["source"]) == (
        "sms", "unsubscribed", "twilio:twilio_21610")
    calls = len(stack.simulator.state.rejected("sms"))

    second = send(stack, user, code_template, channels=["sms"])
    final = stack.wait_for_status(second["notification_id"], {"failed"}, timeout=15)

    sms = final["channels"]["sms"]
    assert (sms["status"], sms["error"]) == ("skipped", "suppressed: unsubscribed")
    assert len(stack.simulator.state.rejected("sms")) == calls  # Twilio was not called
    assert dead_letters_of(stack, second["notification_id"]) == []
    assert stack.client().delete(f"/v1/suppressions/{number}",
                                 params={"reason": "test clean-up"}).status_code == 200


def test_a_passing_twilio_failure_is_retried_then_delivered(
    stack: Stack, code_template: str
) -> None:
    stack.simulator.state.update_config({"fail_next": {"sms": 1}, "fail_status": 503})
    user = make_user(stack, phone_number="+14155550125")
    accepted = send(stack, user, code_template, channels=["sms"])
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"}, timeout=15)

    assert final["status"] == "sent"
    log = [(a["attempt"], a["outcome"]) for a in final["channels"]["sms"]["attempt_log"]]
    assert log == [(1, "failed"), (2, "sent")]
    assert len(stack.simulator.state.messages("sms")) == 1


def test_a_phone_number_must_be_e164(stack: Stack) -> None:
    reply = stack.client().post("/v1/users", json={"user_id": f"u-{uuid.uuid4().hex[:8]}",
                                                   "phone_number": "0612345678"})
    assert reply.status_code == 422
    assert reply.json()["error"] == "validation_error"


def test_the_preview_shows_the_sms_and_its_segments(stack: Stack, code_template: str) -> None:
    reply = stack.client().post("/v1/templates/render", json={
        "template_key": code_template, "message_data": {"name": "Zoë", "code": "1"}})
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert data["sms_body"] == "1 is your Clarion code, Zoë."
    assert data["sms_segments"] == {"encoding": "UCS-2", "characters": 28, "units": 28,
                                    "segments": 1}


def test_an_sms_that_kept_failing_is_a_dead_letter_that_replays_to_sent(
    stack: Stack, code_template: str
) -> None:
    stack.simulator.state.update_config({"fail_next": {"sms": 3}, "fail_status": 503})
    user = make_user(stack, phone_number="+14155550126")
    accepted = send(stack, user, code_template, channels=["sms"])
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"}, timeout=30)
    assert (final["status"], final["channels"]["sms"]["attempts"]) == ("failed", 3)
    [dead] = dead_letters_of(stack, accepted["notification_id"])
    assert (dead["channel"], dead["error_code"]) == ("sms", "twilio_20503")

    replay = stack.client().post(f"/v1/dlq/{dead['dead_letter_id']}/replay")
    assert replay.status_code == 200, replay.text
    again = stack.wait_for_status(accepted["notification_id"], {"sent"}, timeout=30)
    assert again["status"] == "sent"
    assert [m["to"] for m in stack.simulator.state.messages("sms")] == ["+14155550126"]
