"""Twilio's status callbacks end to end: Clarion asks for them on every SMS, verifies each with
the `twilio` library's RequestValidator and the sending account's auth token, and records what
became of the SMS (delivered, undelivered, failed; STOP suppresses the number)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.stack import Stack, free_port, running_stack

pytestmark = pytest.mark.e2e

PATH = "/v1/providers/twilio/status"
TOKEN = "twilio-test-token"  # provider_settings' auth token (tests/conftest.py)
ACCOUNT = "AC" + "5" * 32


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()  # the callback URL names the port Clarion listens on
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       http_port=port,
                       twilio_status_callback_url=f"http://127.0.0.1:{port}{PATH}") as running:
        yield running


@pytest.fixture(autouse=True)
def clean_simulator(simulator: Any) -> None:
    simulator.state.reset()
    # The tests below sign their own callbacks; the simulator's would race them.
    simulator.state.update_config({"event_rules": [{"match": "*", "outcome": "none"}]})


def sent_sms(stack: Stack, number: str | None = None,
             wait_for: frozenset[str] | set[str] = frozenset({"sent"}),
             ) -> tuple[str, dict[str, Any]]:
    """(notification id, the simulator's record of the SMS) for an SMS Twilio accepted."""
    client = stack.client()
    user_id, key = f"u-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:6]}"
    phone = number or f"+1415{uuid.uuid4().int % 10**7:07d}"
    assert client.post("/v1/users", json={"user_id": user_id,
                                          "phone_number": phone}).status_code == 201
    assert client.post("/v1/templates", json={"template_key": key, "subject": "s",
                                              "body": "Code {{ code }}"}).status_code == 201
    reply = client.post("/v1/notifications", json={"user_id": user_id, "template_key": key,
                                                   "channels": ["sms"],
                                                   "message_data": {"code": "1234"}})
    assert reply.status_code == 202, reply.text
    notification_id = reply.json()["data"]["notification_id"]
    assert stack.wait_for_status(notification_id, set(wait_for))["status"] in wait_for
    [record] = [m for m in stack.simulator.state.messages("sms") if m["to"] == phone]
    return notification_id, record


def callback(stack: Stack, url: str, record: dict[str, Any], status: str,
             token: str = TOKEN, signed: bool = True, **extra: str) -> httpx.Response:
    """POST a status callback the way Twilio does: form-encoded, signed over URL + params."""
    params = {"MessageSid": record["id"], "SmsSid": record["id"], "AccountSid": ACCOUNT,
              "From": "+15005550006", "To": record["to"], "MessageStatus": status,
              "SmsStatus": status, "ApiVersion": "2010-04-01", **extra}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(url, params)
    return httpx.post(url, content=urlencode(params), headers=headers, timeout=15)


def sms_channel(stack: Stack, notification_id: str) -> dict[str, Any]:
    reply = stack.client().get(f"/v1/notifications/{notification_id}")
    return reply.json()["data"]["channels"]["sms"]


def test_every_sms_asks_twilio_for_callbacks_at_clarion_with_its_notification(
        stack: Stack) -> None:
    notification_id, record = sent_sms(stack)
    assert record["status_callback"] == (
        f"{stack.base_url}{PATH}?{urlencode({'notification_id': notification_id})}")


def test_a_signed_delivered_callback_flips_the_status_once(stack: Stack) -> None:
    notification_id, record = sent_sms(stack)

    first = callback(stack, record["status_callback"], record, "delivered")
    again = callback(stack, record["status_callback"], record, "delivered")

    assert first.status_code == 200, first.text
    assert (first.json()["data"]["recorded"], first.json()["data"]["moved"]) == (1, 1)
    assert (again.json()["data"]["recorded"], again.json()["data"]["moved"]) == (0, 0)
    sms = sms_channel(stack, notification_id)
    assert sms["status"] == "delivered"
    assert [(e["event"], e["status"]) for e in sms["events"]] == [("delivered", "delivered")]
    assert stack.wait_for_status(notification_id, {"delivered"})["status"] == "delivered"


@pytest.mark.parametrize("status", ["undelivered", "failed"])
def test_an_undelivered_or_failed_callback_keeps_twilios_error_code(stack: Stack,
                                                                    status: str) -> None:
    notification_id, record = sent_sms(stack)

    reply = callback(stack, record["status_callback"], record, status, ErrorCode="30003")

    assert reply.status_code == 200, reply.text
    sms = sms_channel(stack, notification_id)
    assert sms["status"] == "undelivered"
    [logged] = sms["events"]
    assert (logged["event"], logged["detail"]["ErrorCode"]) == (status, "30003")
    # A late `delivered` does not overwrite it.
    callback(stack, record["status_callback"], record, "delivered")
    assert sms_channel(stack, notification_id)["status"] == "undelivered"


def test_a_stop_reply_suppresses_the_number(stack: Stack) -> None:
    notification_id, record = sent_sms(stack)

    reply = callback(stack, record["status_callback"], record, "undelivered", ErrorCode="21610")

    assert reply.json()["data"]["suppressed"] == 1
    entry = stack.client().get(f"/v1/suppressions/{record['to']}").json()["data"]["suppressed"]
    assert (entry["reason"], entry["notification_id"]) == ("unsubscribed", notification_id)


def test_a_forged_unsigned_or_foreign_callback_is_refused_and_changes_nothing(
        stack: Stack) -> None:
    notification_id, record = sent_sms(stack)
    url = record["status_callback"]
    other_url = f"{stack.base_url}{PATH}?{urlencode({'notification_id': str(uuid.uuid4())})}"

    forged = callback(stack, url, record, "delivered", token="not-the-token")
    unsigned = callback(stack, url, record, "delivered", signed=False)
    # Signed for another notification's URL, replayed against this one.
    params = {"MessageSid": record["id"], "AccountSid": ACCOUNT, "MessageStatus": "delivered"}
    moved = httpx.post(url, content=urlencode(params), timeout=15, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(other_url, params)})
    foreign = callback(stack, url, record, "delivered", AccountSid="AC" + "9" * 32)

    for reply in (forged, unsigned, moved, foreign):
        assert (reply.status_code, reply.json()["error"]) == (403, "invalid_signature")
    assert sms_channel(stack, notification_id)["status"] == "sent"


def test_the_simulators_own_callbacks_close_the_loop(stack: Stack) -> None:
    """What Twilio itself would do: the simulator reports on what it accepted, signed with the
    account's token; a number set to be unreachable ends undelivered."""
    stack.simulator.state.update_config({"event_rules": [
        {"match": "+1415555*", "outcome": "undelivered"}, {"match": "*", "outcome": "delivered"}]})
    delivered, _ = sent_sms(stack, wait_for={"sent", "delivered"})
    undelivered, _ = sent_sms(stack, number=f"+1415555{uuid.uuid4().int % 10**4:04d}",
                              wait_for={"sent", "failed"})

    assert stack.wait_for_status(delivered, {"delivered"})["status"] == "delivered"
    assert stack.wait_for_status(undelivered, {"failed"})["status"] == "failed"
    sms = sms_channel(stack, undelivered)
    assert sms["status"] == "undelivered"
    assert sms["events"][-1]["detail"]["ErrorCode"] == "30003"


def test_statuses_on_the_way_are_acknowledged_and_ignored(stack: Stack) -> None:
    notification_id, record = sent_sms(stack)
    reply = callback(stack, record["status_callback"], record, "sent")
    assert reply.status_code == 200
    assert reply.json()["data"]["ignored"] == 1
    assert sms_channel(stack, notification_id)["status"] == "sent"
