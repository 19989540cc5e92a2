"""Status callbacks in PostgreSQL: the triggers write every status change of a registered
key's notifications in the transaction that makes it; leases hand out one change per
notification at a time, in order; failures wait, then die into the DLQ, and replay (real
PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from clarion.persistence import dead_letters, status_callbacks
from clarion.persistence import notifications as repo
from clarion.persistence.notifications import NewDelivery, NewNotification, Outcome
from clarion.persistence.status_callbacks import Attempted

pytestmark = pytest.mark.integration


def _principal(db: Any) -> str:
    principal = f"key:cb-{uuid.uuid4().hex[:8]}"
    db.execute("INSERT INTO callback_endpoints (principal, url, secret) VALUES (%s, %s, %s)",
               (principal, "http://127.0.0.1:9/hook", "s" * 32))
    return principal


def _notification(db: Any, created_by: str | None, *channels: str) -> str:
    notification = NewNotification(
        notification_id=str(uuid.uuid4()), user_id="u", template_key="t", template_version=1,
        language="en", priority="normal", request_id=None, idempotency_key=None,
        message_data={}, created_by=created_by,
        deliveries=tuple(NewDelivery(c, "queued", f"{c}-recipient", {"body": "x"})
                         for c in channels))
    repo.insert_batch(db, [notification])
    return notification.notification_id


def _sent(db: Any, notification_id: str, channel: str) -> None:
    repo.record_outcomes(db, [Outcome(notification_id, channel, 1, True, "outbox", time.time(),
                                      provider_message_id="m")])


def _changes(db: Any, notification_id: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.execute(
        "SELECT kind, channel, previous_status, status FROM status_callbacks"
        " WHERE notification_id = %s ORDER BY callback_id", (notification_id,)).fetchall()]


def _ids(db: Any, notification_id: str) -> list[int]:
    return [int(r[0]) for r in db.execute(
        "SELECT callback_id FROM status_callbacks WHERE notification_id = %s"
        " ORDER BY callback_id", (notification_id,)).fetchall()]


def _lease(db: Any, owner: str, notification_id: str) -> list[int]:
    return [c.callback_id for c in status_callbacks.lease_due(db, owner, 1000, 30.0, 1000)
            if c.notification_id == notification_id]


def test_every_status_change_of_a_registered_keys_notification_is_written_in_order(
        db: Any) -> None:
    principal = _principal(db)
    notification_id = _notification(db, principal, "email", "push")

    _sent(db, notification_id, "email")
    _sent(db, notification_id, "push")

    assert _changes(db, notification_id) == [
        ("channel", "email", "queued", "sent"),
        ("channel", "push", "queued", "sent"),
        ("notification", None, "queued", "sent")]


def test_another_principals_or_an_anonymous_notification_makes_no_callback(db: Any) -> None:
    _principal(db)
    for created_by in ("key:nobody-registered", None):
        notification_id = _notification(db, created_by, "email")
        _sent(db, notification_id, "email")
        assert _changes(db, notification_id) == []


def test_one_change_per_notification_is_out_at_a_time_and_the_next_follows_delivery(
        db: Any) -> None:
    principal = _principal(db)
    notification_id = _notification(db, principal, "email")
    _sent(db, notification_id, "email")
    first, second = _ids(db, notification_id)

    assert _lease(db, "a", notification_id) == [first]
    assert _lease(db, "b", notification_id) == []  # leased, and the second waits behind it

    status_callbacks.record_attempts(db, "a", 3600, [Attempted(first, True)])

    assert _lease(db, "b", notification_id) == [second]


def test_a_failure_waits_its_backoff_holding_back_the_next(db: Any) -> None:
    principal = _principal(db)
    notification_id = _notification(db, principal, "email")
    _sent(db, notification_id, "email")
    [first] = _lease(db, "a", notification_id)

    dead = status_callbacks.record_attempts(db, "a", 3600, [
        Attempted(first, False, "http_500", "the endpoint answered 500", retry_in=60)])

    assert dead == []
    assert _lease(db, "a", notification_id) == []
    row = db.execute("SELECT state, attempts, last_error, next_attempt_at > now() + interval"
                     " '50 seconds' FROM status_callbacks WHERE callback_id = %s",
                     (first,)).fetchone()
    assert tuple(row) == ("pending", 1, "the endpoint answered 500", True)


def test_past_its_window_a_callback_is_dead_lettered_and_a_replay_makes_it_due(
        db: Any) -> None:
    principal = _principal(db)
    notification_id = _notification(db, principal, "email")
    _sent(db, notification_id, "email")
    first, second = _ids(db, notification_id)
    _lease(db, "a", notification_id)

    dead = status_callbacks.record_attempts(db, "a", 10, [
        Attempted(first, False, "http_503", "the endpoint answered 503", retry_in=60)])

    assert dead == [first]
    [letter] = db.execute("SELECT dead_letter_id, channel, error_code, message->>'callback_id'"
                          " FROM dead_letters WHERE notification_id = %s",
                          (notification_id,)).fetchall()
    assert (letter[1], letter[2], int(letter[3])) == ("callback", "http_503", first)
    # The next change is not held back by a dead one.
    assert _lease(db, "a", notification_id) == [second]
    status_callbacks.record_attempts(db, "a", 10, [Attempted(second, True)])

    replayed, outbox = dead_letters.replay(db, [letter[0]], None, None, 10)

    assert (replayed, outbox) == ([letter[0]], [])
    assert _lease(db, "a", notification_id) == [first]


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_cannot_record(db: Any) -> None:
    principal = _principal(db)
    notification_id = _notification(db, principal, "email")
    _sent(db, notification_id, "email")
    [first] = [c.callback_id for c in status_callbacks.lease_due(db, "a", 1000, 0.0, 1000)
               if c.notification_id == notification_id]
    time.sleep(0.01)

    assert _lease(db, "b", notification_id) == [first]
    status_callbacks.record_attempts(db, "a", 3600, [Attempted(first, True)])
    state = db.execute("SELECT state FROM status_callbacks WHERE callback_id = %s",
                       (first,)).fetchone()[0]
    assert state == "pending"  # still b's


def test_one_principals_backlog_leaves_room_for_the_others(db: Any) -> None:
    busy, quiet = _principal(db), _principal(db)
    backlog = [_notification(db, busy, "email") for _ in range(6)]
    for notification_id in backlog:
        _sent(db, notification_id, "email")
    other = _notification(db, quiet, "email")
    _sent(db, other, "email")
    mine = set(backlog) | {other}

    leased = [c for c in status_callbacks.lease_due(db, "a", 1000, 30.0, 2)
              if c.notification_id in mine]

    assert sum(1 for c in leased if c.principal == busy) == 2  # its cap
    assert [c.notification_id for c in leased if c.principal == quiet] == [other]
    assert all(c.principal != busy for c in status_callbacks.lease_due(
        db, "b", 1000, 30.0, 2, blocked=[busy]) if c.notification_id in mine)
