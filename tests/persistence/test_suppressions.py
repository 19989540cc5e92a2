"""The suppression list in PostgreSQL: what puts an address on it, how a delivery's claim reads
it, and how a removal is kept (real PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from clarion.persistence import notifications as repo
from clarion.persistence import provider_events, suppressions
from clarion.persistence.notifications import NewDelivery, NewNotification, Outcome
from clarion.persistence.provider_events import ProviderEvent
from clarion.persistence.suppressions import Suppression

pytestmark = pytest.mark.integration


def _address() -> str:
    return f"Someone.{uuid.uuid4().hex[:10]}@Example.com"


def _queued(db: Any, channel: str, recipient: str) -> str:
    notification = NewNotification(
        notification_id=str(uuid.uuid4()), user_id="u", template_key="t", template_version=1,
        language="en", priority="normal", request_id=None, idempotency_key=None,
        message_data={}, deliveries=(NewDelivery(channel, "queued", recipient, {"body": "x"}),))
    repo.insert_batch(db, [notification])
    return notification.notification_id


def _entry(db: Any, channel: str, address: str) -> dict[str, Any] | None:
    return suppressions.entry(db, channel, address)


def test_a_suppressed_recipient_is_claimed_then_skipped_and_never_sent(db: Any) -> None:
    address = _address()
    notification_id = _queued(db, "email", address.lower())
    claim = repo.Claim(notification_id, "email", 1)
    with db.transaction():
        suppressions.add(db, [Suppression("email", address, "hard_bounce", "test", "test")])

    verdicts = repo.claim_attempts(db, "actor-a", [claim], 30.0)

    assert verdicts == {claim: repo.Suppressed("hard_bounce")}
    # Recorded as skipped: the delivery and the notification say why, nothing is dead-lettered.
    repo.record_outcomes(db, [Outcome(notification_id, "email", 1, False, "suppression_list",
                                      time.time(), error_code="suppressed",
                                      error="suppressed: hard_bounce", skipped=True)])
    row = db.execute("SELECT d.status, d.error_code, d.error, n.status FROM deliveries d"
                     " JOIN notifications n USING (notification_id)"
                     " WHERE notification_id = %s", (notification_id,)).fetchone()
    assert row == ("skipped", "suppressed", "suppressed: hard_bounce", "failed")
    assert db.execute("SELECT count(*) FROM dead_letters WHERE notification_id = %s",
                      (notification_id,)).fetchone()[0] == 0
    assert db.execute("SELECT outcome FROM delivery_attempts WHERE notification_id = %s",
                      (notification_id,)).fetchone()[0] == "skipped"


def test_an_address_off_the_list_is_claimed_to_send(db: Any) -> None:
    notification_id = _queued(db, "email", _address().lower())
    claim = repo.Claim(notification_id, "email", 1)
    assert repo.claim_attempts(db, "actor-a", [claim], 30.0) == {claim: repo.SEND}


@pytest.mark.parametrize(("event", "suppress", "expected"), [
    ("bounce", "hard_bounce", "hard_bounce"),
    ("spamreport", "spam_report", "spam_report"),
    ("delivered", None, None),
])
def test_an_event_that_calls_for_it_suppresses_the_address_once(
        db: Any, event: str, suppress: str | None, expected: str | None) -> None:
    address = _address()
    notification_id = _queued(db, "email", address.lower())
    db.execute("UPDATE deliveries SET status = 'sent' WHERE notification_id = %s",
               (notification_id,))
    happened = ProviderEvent(f"sendgrid:{uuid.uuid4().hex}", "sendgrid", notification_id,
                             "email", event, None, time.time(), suppress=suppress,
                             address=address)

    first = provider_events.record(db, [happened])
    again = provider_events.record(db, [happened])

    found = _entry(db, "email", address)
    assert (found["reason"] if found else None) == expected
    assert first.suppressed == (1 if expected else 0)
    assert again.suppressed == 0
    if found:
        assert found["address"] == address.lower()
        assert found["source"] == happened.event_id
        assert found["notification_id"] == notification_id


def test_twilio_stop_suppresses_the_number_in_the_outcomes_transaction(db: Any) -> None:
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    notification_id = _queued(db, "sms", number)
    repo.record_outcomes(db, [Outcome(notification_id, "sms", 1, False, "twilio", time.time(),
                                      error_code="twilio_21610", error="STOP",
                                      dead_message={"x": 1},
                                      suppress=(number, "unsubscribed"))])
    found = _entry(db, "sms", number)
    assert found is not None and found["reason"] == "unsubscribed"
    assert found["source"] == "twilio:twilio_21610"


def test_a_removal_is_kept_with_who_and_why_and_a_second_one_finds_nothing(db: Any) -> None:
    address = _address()
    with db.transaction():
        suppressions.add(db, [Suppression("email", address, "spam_report", "sendgrid:e1",
                                          "provider:sendgrid")])

    removal = suppressions.remove(db, "email", address, "key:ops", "the user asked us to")

    assert removal is not None
    assert (removal["address"], removal["reason"], removal["suppressed_by"],
            removal["removed_by"], removal["why"]) == (
        address.lower(), "spam_report", "provider:sendgrid", "key:ops", "the user asked us to")
    assert _entry(db, "email", address) is None
    assert suppressions.remove(db, "email", address, "key:ops", "again") is None


def test_the_first_reason_is_kept_when_an_address_is_suppressed_twice(db: Any) -> None:
    address = _address()
    with db.transaction():
        assert suppressions.add(db, [Suppression("email", address, "hard_bounce", "a", "a")])
        assert not suppressions.add(db, [Suppression("email", address, "manual", "b", "b")])
    found = _entry(db, "email", address)
    assert found is not None and found["reason"] == "hard_bounce"


def test_a_suppressed_skip_releases_the_fallback_on_standby_once(db: Any) -> None:
    notification = NewNotification(
        notification_id=str(uuid.uuid4()), user_id="u", template_key="t", template_version=1,
        language="en", priority="normal", request_id=None, idempotency_key=None,
        message_data={}, deliveries=(
            NewDelivery("email", "queued", "a@example.com", {"body": "x"}),
            NewDelivery("sms", "standby", "+14155550100", {"body": "x"}, pending_message={
                "channel": "sms", "body": {"notification_id": str(uuid.uuid4()),
                                           "channel": "sms", "attempt": 1,
                                           "to": "+14155550100", "body": "x"},
                "headers": {}})))
    repo.insert_batch(db, [notification])
    notification_id = notification.notification_id
    repo.derive_status(db, [notification_id])
    assert db.execute("SELECT status FROM notifications WHERE notification_id = %s",
                      (notification_id,)).fetchone()[0] == "queued"  # standby counts for nothing

    outbox = repo.record_outcomes(db, [Outcome(notification_id, "email", 1, False,
                                               "suppression_list", time.time(),
                                               error_code="suppressed", skipped=True)])

    assert len(outbox) == 1
    rows = dict(db.execute("SELECT channel, status FROM deliveries WHERE notification_id = %s",
                           (notification_id,)).fetchall())
    assert rows == {"email": "skipped", "sms": "queued"}
    with db.transaction():
        assert repo.release_fallbacks(db, [notification_id]) == []


def test_a_permanent_refusal_releases_the_fallback_but_a_passing_failure_does_not(
        db: Any) -> None:
    def with_standby() -> str:
        notification = NewNotification(
            notification_id=str(uuid.uuid4()), user_id="u", template_key="t",
            template_version=1, language="en", priority="normal", request_id=None,
            idempotency_key=None, message_data={}, deliveries=(
                NewDelivery("sms", "queued", "+14155550100", {"body": "x"}),
                NewDelivery("email", "standby", "a@example.com", {"body": "x"},
                            pending_message={"channel": "email", "body": {
                                "notification_id": str(uuid.uuid4()), "channel": "email",
                                "attempt": 1, "to": "a@example.com"}, "headers": {}})))
        repo.insert_batch(db, [notification])
        return notification.notification_id

    refused, passing = with_standby(), with_standby()
    repo.record_outcomes(db, [
        Outcome(refused, "sms", 1, False, "twilio", time.time(), error_code="twilio_21211",
                dead_message={"x": 1}, permanent=True),
        Outcome(passing, "sms", 1, False, "twilio", time.time(), error_code="twilio_503",
                retry_in=5.0)])

    def email_of(notification_id: str) -> str:
        return str(db.execute("SELECT status FROM deliveries WHERE notification_id = %s"
                              " AND channel = 'email'", (notification_id,)).fetchone()[0])
    assert (email_of(refused), email_of(passing)) == ("queued", "standby")
