"""Provider failover end to end. Email: SendGrid first (the real client, against the simulator),
SMTP second (the standard library's client, against a real aiosmtpd server). SMS: two Twilio
accounts (the real client, against the simulator, which can take one account down)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from pydantic import SecretStr

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

BREAKER_THRESHOLD = 5  # the default CLARION_BREAKER_FAILURE_THRESHOLD
BREAKER_RESET = 3.0
PRIMARY, BACKUP = "AC" + "5" * 32, "AC" + "6" * 32  # provider_settings' account, and a second


class Mailbox:
    """An SMTP server's handler: keeps what it was given; can refuse everything for a while."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.refusing = False
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if self.refusing:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = message_from_bytes(envelope.content)
        with self._lock:
            self.messages.append({"to": envelope.rcpt_tos, "subject": parsed["Subject"],
                                  "notification_id": parsed["X-Clarion-Notification-Id"]})
        return "250 Message accepted"

    def of(self, notification_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["notification_id"] == notification_id]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any, mailbox: tuple[Mailbox, int],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _, port = mailbox
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       email_providers="sendgrid,smtp", smtp_host="127.0.0.1", smtp_port=port,
                       smtp_security="none", breaker_reset_timeout=BREAKER_RESET,
                       sms_providers="twilio,twilio-backup", twilio_backup_account_sid=BACKUP,
                       twilio_backup_auth_token=SecretStr("backup-token"),
                       twilio_backup_from_number="+15005550007") as running:
        yield running


class Sender:
    """Sends one email or one SMS and waits until it is sent or failed: its final state."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        client = stack.client()
        self.template = f"failover-{uuid.uuid4().hex[:6]}"
        reply = client.post("/v1/templates", json={
            "template_key": self.template, "subject": "Hello {{ tag }}", "body": "Body {{ tag }}",
            "sms_body": "Code {{ tag }}"})
        assert reply.status_code == 201, reply.text
        self.mail_user = self._user(email_address=f"{uuid.uuid4().hex[:8]}@example.com")

    def _user(self, **fields: Any) -> str:
        created = self.stack.client().post("/v1/users", json={
            "user_id": f"u-{uuid.uuid4().hex[:10]}", **fields})
        assert created.status_code == 201, created.text
        return str(created.json()["data"]["user_id"])

    def _send(self, user_id: str, channel: str, tag: str) -> dict[str, Any]:
        reply = self.stack.client().post("/v1/notifications", json={
            "user_id": user_id, "template_key": self.template, "channels": [channel],
            "message_data": {"tag": tag}})
        assert reply.status_code == 202, reply.text
        return self.stack.wait_for_status(reply.json()["data"]["notification_id"],
                                          {"sent", "failed"}, timeout=30)

    def email(self, tag: str) -> dict[str, Any]:
        return self._send(self.mail_user, "email", tag)

    def sms(self, tag: str, phone: str = "+14155550199") -> dict[str, Any]:
        """To a fresh user with this phone number."""
        return self._send(self._user(phone_number=phone), "sms", tag)


@pytest.fixture(scope="module")
def sender(stack: Stack) -> Sender:
    return Sender(stack)


@pytest.fixture(autouse=True)
def healthy(stack: Stack, sender: Sender,
            mailbox: tuple[Mailbox, int]) -> Iterator[None]:
    """Both providers healthy, and both breakers closed again, around each test."""
    box, _ = mailbox
    stack.simulator.state.reset()
    box.refusing = False
    yield
    stack.simulator.state.reset()
    box.refusing = False
    # Let any open breaker half-open and close on a good call.
    time.sleep(BREAKER_RESET)
    for _ in range(3):
        sender.email("settle")
    sender.sms("settle")


def test_with_sendgrid_failing_emails_go_out_through_smtp_and_none_waste_an_attempt_on_its_open_breaker(
    stack: Stack, mailbox: tuple[Mailbox, int], sender: Sender
) -> None:
    box, _ = mailbox
    stack.simulator.state.update_config({"fail_ratio": {"email": 1.0}, "fail_status": 503})
    finals = [sender.email(f"down-{i}") for i in range(BREAKER_THRESHOLD + 3)]

    assert [f["status"] for f in finals] == ["sent"] * len(finals)
    for final in finals:
        email = final["channels"]["email"]
        assert email["provider"] == "smtp"
        assert len(box.of(final["notification_id"])) == 1
    # Until the breaker opened each first attempt went to SendGrid and the retry to SMTP;
    # after it, SendGrid was not called again: every attempt went to SMTP at once.
    providers = [[a["provider"] for a in f["channels"]["email"]["attempt_log"]] for f in finals]
    assert providers[:BREAKER_THRESHOLD] == [["sendgrid", "smtp"]] * BREAKER_THRESHOLD
    assert providers[BREAKER_THRESHOLD:] == [["smtp"]] * 3
    assert len(stack.simulator.state.rejected("email")) == BREAKER_THRESHOLD
    assert stack.simulator.state.messages("email") == []


def test_when_sendgrid_recovers_traffic_returns_to_it_after_the_half_open_trial(
    stack: Stack, mailbox: tuple[Mailbox, int], sender: Sender
) -> None:
    stack.simulator.state.update_config({"fail_ratio": {"email": 1.0}, "fail_status": 503})
    for i in range(BREAKER_THRESHOLD):
        assert sender.email(f"tripping-{i}")["channels"]["email"]["provider"] == "smtp"
    stack.simulator.state.update_config({"fail_ratio": {"email": 0.0}})
    assert sender.email("while-open")["channels"]["email"]["attempt_log"][0]["provider"] == "smtp"

    time.sleep(BREAKER_RESET + 0.5)
    trial = sender.email("trial")
    after = [sender.email(f"after-{i}") for i in range(3)]

    assert trial["channels"]["email"]["provider"] == "sendgrid"
    assert [f["channels"]["email"]["provider"] for f in after] == ["sendgrid"] * 3
    assert len(stack.simulator.state.messages("email")) == 4


def test_with_both_providers_down_an_email_waits_then_is_dead_lettered_and_nothing_is_lost(
    stack: Stack, mailbox: tuple[Mailbox, int], sender: Sender
) -> None:
    box, _ = mailbox
    stack.simulator.state.update_config({"fail_ratio": {"email": 1.0}, "fail_status": 503})
    box.refusing = True
    final = sender.email("both-down")

    assert final["status"] == "failed"
    email = final["channels"]["email"]
    assert email["attempts"] == 3
    # The attempts took turns: each retry went to the provider that had not just failed.
    assert [a["provider"] for a in email["attempt_log"]] == ["sendgrid", "smtp", "sendgrid"]
    dead = [d for d in stack.client().get("/v1/dlq", params={"limit": 200}).json()["data"]
            if d["notification_id"] == final["notification_id"]]
    assert len(dead) == 1 and dead[0]["channel"] == "email"
    assert box.of(final["notification_id"]) == []

    # Replayed once both are back, it goes out.
    box.refusing = False
    stack.simulator.state.update_config({"fail_ratio": {"email": 0.0}})
    time.sleep(BREAKER_RESET)
    replay = stack.client().post(f"/v1/dlq/{dead[0]['dead_letter_id']}/replay")
    assert replay.status_code == 200, replay.text
    again = stack.wait_for_status(final["notification_id"], {"sent"}, timeout=30)
    assert again["status"] == "sent"


def test_a_permanent_refusal_does_not_fail_over(
    stack: Stack, mailbox: tuple[Mailbox, int], sender: Sender
) -> None:
    box, _ = mailbox
    stack.simulator.state.update_config({"fail_next": {"email": 1}, "fail_status": 400})
    final = sender.email("invalid")

    assert final["status"] == "failed"
    email = final["channels"]["email"]
    assert [a["provider"] for a in email["attempt_log"]] == ["sendgrid"]
    assert email["error_code"] == "sendgrid_http_400"
    assert box.of(final["notification_id"]) == []


def test_with_the_first_twilio_account_down_sms_go_out_through_the_second(
    stack: Stack, sender: Sender
) -> None:
    state = stack.simulator.state
    state.update_config({"twilio_down_accounts": [PRIMARY], "fail_status": 503})
    finals = [sender.sms(f"down-{i}") for i in range(BREAKER_THRESHOLD + 2)]

    assert [f["status"] for f in finals] == ["sent"] * len(finals)
    providers = [[a["provider"] for a in f["channels"]["sms"]["attempt_log"]] for f in finals]
    assert providers[:BREAKER_THRESHOLD] == [["twilio", "twilio-backup"]] * BREAKER_THRESHOLD
    assert providers[BREAKER_THRESHOLD:] == [["twilio-backup"]] * 2
    sent = state.messages("sms")
    assert {m["account_sid"] for m in sent} == {BACKUP} and len(sent) == len(finals)
    assert len(state.rejected("sms")) == BREAKER_THRESHOLD


def test_an_invalid_number_is_the_recipients_fault_and_does_not_fail_over(
    stack: Stack, sender: Sender
) -> None:
    final = sender.sms("invalid", phone="+15005550001")
    sms = final["channels"]["sms"]
    assert (final["status"], sms["error_code"]) == ("failed", "twilio_21211")
    assert [a["provider"] for a in sms["attempt_log"]] == ["twilio"]
