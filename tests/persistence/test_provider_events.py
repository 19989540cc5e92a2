"""The delivery state machine after `sent`, and recording provider events (real PostgreSQL)."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import pytest

from clarion.persistence import provider_events
from clarion.persistence.provider_events import TRANSITIONS, ProviderEvent, allowed

STATUSES = ("sent", "delivered", "bounced", "undelivered", "complained")
LEGAL = {("sent", "delivered"), ("sent", "bounced"), ("sent", "undelivered"),
         ("sent", "complained"), ("delivered", "complained"), ("delivered", "bounced")}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(STATUSES, STATUSES)))
def test_every_legal_transition_is_allowed_and_every_other_refused(current: str,
                                                                   new: str) -> None:
    assert allowed(current, new) == ((current, new) in LEGAL)


def test_a_delivery_that_never_went_out_does_not_move() -> None:
    for current in ("queued", "retrying", "scheduled", "failed", "skipped", "cancelled"):
        assert not any(allowed(current, new) for new in STATUSES)
    assert set(TRANSITIONS) == set(STATUSES)


integration = pytest.mark.integration  # the tests below use the real PostgreSQL


def _sent_email(db: Any) -> str:
    notification_id = str(uuid.uuid4())
    db.execute("INSERT INTO notifications (notification_id, user_id, template_key,"
               " template_version, language, status) VALUES (%s, 'u', 't', 1, 'en', 'sent')",
               (notification_id,))
    db.execute("INSERT INTO deliveries (notification_id, channel, status) VALUES (%s, 'email',"
               " 'sent')", (notification_id,))
    return notification_id


def _event(notification_id: str, event: str, status: str | None, at: float,
           event_id: str | None = None) -> ProviderEvent:
    return ProviderEvent(event_id or f"sendgrid:{uuid.uuid4().hex}", "sendgrid", notification_id,
                         "email", event, status, at, {"email": "a@example.com"})


def _logged(db: Any, notification_id: str) -> list[str]:
    return [str(r[0]) for r in db.execute(
        "SELECT event FROM provider_events WHERE notification_id = %s ORDER BY received_at",
        (notification_id,)).fetchall()]


def _status(db: Any, notification_id: str) -> tuple[str, str]:
    row = db.execute("SELECT d.status, n.status FROM deliveries d JOIN notifications n"
                     " USING (notification_id) WHERE notification_id = %s",
                     (notification_id,)).fetchone()
    return str(row[0]), str(row[1])


@integration
def test_an_event_moves_its_delivery_once_and_its_notification_follows(db: Any) -> None:
    notification_id = _sent_email(db)
    delivered = _event(notification_id, "delivered", "delivered", time.time())

    first = provider_events.record(db, [delivered])
    again = provider_events.record(db, [delivered])

    assert (first.recorded, first.moved, again.recorded, again.moved) == (1, 1, 0, 0)
    assert _status(db, notification_id) == ("delivered", "delivered")
    assert _logged(db, notification_id) == ["delivered"]


@integration
def test_a_late_delivered_never_overwrites_a_bounce(db: Any) -> None:
    notification_id = _sent_email(db)
    now = time.time()
    provider_events.record(db, [_event(notification_id, "bounce", "bounced", now)])
    late = provider_events.record(db, [_event(notification_id, "delivered", "delivered",
                                              now - 5)])

    assert (late.recorded, late.moved) == (1, 0)  # kept in the log, moves nothing
    assert _status(db, notification_id) == ("bounced", "failed")
    assert sorted(_logged(db, notification_id)) == ["bounce", "delivered"]


@integration
def test_events_of_one_request_apply_in_the_order_they_happened(db: Any) -> None:
    notification_id = _sent_email(db)
    now = time.time()
    provider_events.record(db, [_event(notification_id, "spamreport", "complained", now),
                                _event(notification_id, "delivered", "delivered", now - 10)])
    assert _status(db, notification_id) == ("complained", "sent")


@integration
def test_an_event_about_no_delivery_of_ours_is_counted_not_recorded(db: Any) -> None:
    applied = provider_events.record(db, [_event(str(uuid.uuid4()), "delivered", "delivered",
                                                 time.time())])
    assert (applied.recorded, applied.moved, applied.unknown) == (0, 0, 1)


def test_an_event_that_came_before_the_sent_commit_moves_the_delivery_when_it_is_recorded(
        db: Any) -> None:
    from clarion.persistence import notifications as repo
    from clarion.persistence.notifications import Outcome

    notification_id = _sent_email(db)
    db.execute("UPDATE deliveries SET status = 'queued' WHERE notification_id = %s",
               (notification_id,))
    early = provider_events.record(db, [_event(notification_id, "delivered", "delivered",
                                               time.time())])
    assert (early.recorded, early.moved) == (1, 0)  # kept; nothing to move yet

    repo.record_outcomes(db, [Outcome(notification_id, "email", 1, True, "sendgrid",
                                      time.time(), provider_message_id="m")])

    assert _status(db, notification_id) == ("delivered", "delivered")


def test_a_callback_about_another_attempts_message_moves_nothing(db: Any) -> None:
    notification_id = _sent_email(db)
    db.execute("UPDATE deliveries SET provider_message_id = 'SM-second'"
               " WHERE notification_id = %s", (notification_id,))
    stale = ProviderEvent("twilio:SM-first:undelivered", "twilio", notification_id, "email",
                          "undelivered", "undelivered", time.time(), message_id="SM-first")

    applied = provider_events.record(db, [stale])

    assert (applied.recorded, applied.moved) == (1, 0)
    assert _status(db, notification_id)[0] == "sent"
