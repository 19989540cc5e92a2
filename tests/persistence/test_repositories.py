"""The PostgreSQL repositories and read queries, against the real database.

The database is shared with other tests: every row here has its own uuid4-based ids, and nothing
is ever truncated.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from clarion.config.settings import Settings
from clarion.persistence import api_keys, broker, database, outbox, queries
from clarion.persistence import notifications as repo
from clarion.persistence import templates as template_repo
from clarion.persistence import users as user_repo
from clarion.persistence.notifications import NewDelivery, NewNotification, Outcome
from clarion.persistence.records import Template, User

pytestmark = pytest.mark.integration


def _uid() -> str:
    return uuid.uuid4().hex


def _user(**overrides: Any) -> User:
    ident = _uid()
    fields: dict[str, Any] = {
        "user_id": f"user-{ident}",
        "email_address": f"{ident}@example.test",
        "phone_number": "+15550100",
        "preferred_language": "fr",
        "preferences": {"email": True, "push": False},
        "push_tokens": ("token-a", "token-b"),
    }
    return User(**{**fields, **overrides})


def _notification(
    *channels: tuple[str, str], idempotency_key: str | None = None
) -> NewNotification:
    """A notification with one delivery per (channel, status) given."""
    deliveries = tuple(
        NewDelivery(
            channel,
            status,
            None if status == "skipped" else f"{channel}-recipient",
            {"subject": "Hi"} if channel == "email" else {"title": "Hi"},
            "no_address" if status == "skipped" else None,
            "the user has no address" if status == "skipped" else None,
        )
        for channel, status in channels
    )
    return NewNotification(
        notification_id=str(uuid.uuid4()),
        user_id=f"user-{_uid()}",
        template_key="welcome",
        template_version=1,
        language="en",
        priority="normal",
        request_id=f"req-{_uid()}",
        idempotency_key=idempotency_key,
        message_data={"name": "Ada"},
        deliveries=deliveries,
    )


def _outcome(notification_id: str, channel: str, ok: bool, attempt: int = 1) -> Outcome:
    return Outcome(
        notification_id=notification_id,
        channel=channel,
        attempt=attempt,
        ok=ok,
        provider="outbox",
        started_at=time.time(),
        provider_message_id=f"msg-{_uid()}" if ok else None,
        error_code=None if ok else "rejected",
        error=None if ok else "the provider said no",
    )


def _status(db: psycopg.Connection, notification_id: str) -> str:
    row = db.execute(
        "SELECT status FROM notifications WHERE notification_id = %s", (notification_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def _deliveries(db: psycopg.Connection, notification_id: str) -> dict[str, tuple[Any, ...]]:
    rows = db.execute(
        "SELECT channel, status, attempts, finished_at IS NOT NULL FROM deliveries"
        " WHERE notification_id = %s",
        (notification_id,),
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def _exists(db: psycopg.Connection, notification_id: str) -> bool:
    row = db.execute(
        "SELECT count(*) FROM notifications WHERE notification_id = %s", (notification_id,)
    ).fetchone()
    assert row is not None
    return bool(row[0])


# Users


def test_created_users_are_fetched_in_one_batch_and_missing_ids_are_absent(
    db: psycopg.Connection,
) -> None:
    ada, bob = _user(), _user(push_tokens=(), preferences={})
    assert user_repo.create_user(db, ada) == ada
    assert user_repo.create_user(db, bob) == bob
    missing = f"user-{_uid()}"

    found = user_repo.fetch_users(db, [ada.user_id, bob.user_id, missing, ada.user_id])

    assert found == {ada.user_id: ada, bob.user_id: bob}
    assert user_repo.fetch_users(db, []) == {}


def test_a_user_with_an_existing_id_is_a_duplicate(db: psycopg.Connection) -> None:
    ada = user_repo.create_user(db, _user())

    with pytest.raises(user_repo.DuplicateUser):
        user_repo.create_user(db, _user(user_id=ada.user_id))


def test_a_user_with_an_existing_email_address_is_a_duplicate(db: psycopg.Connection) -> None:
    ada = user_repo.create_user(db, _user())
    other = _user(email_address=ada.email_address)

    with pytest.raises(user_repo.DuplicateUser):
        user_repo.create_user(db, other)

    assert user_repo.fetch_users(db, [other.user_id]) == {}


# Templates


def _template(key: str, language: str, version: int) -> Template:
    return Template(key, language, version, f"Subject v{version} {language}",
                    f"Body v{version} {language}", f"<p>v{version}</p>", "Title", "Push body",
                    "a test template")


def test_a_created_template_is_returned_as_stored(db: psycopg.Connection) -> None:
    template = _template(f"tpl-{_uid()}", "en", 1)

    assert template_repo.create_template(db, template) == template


def test_the_same_template_version_and_language_twice_is_a_duplicate(
    db: psycopg.Connection,
) -> None:
    template = template_repo.create_template(db, _template(f"tpl-{_uid()}", "en", 1))

    with pytest.raises(template_repo.DuplicateTemplate):
        template_repo.create_template(db, template)


def test_next_version_counts_per_key_and_language(db: psycopg.Connection) -> None:
    key = f"tpl-{_uid()}"
    assert template_repo.next_version(db, key, "en") == 1

    template_repo.create_template(db, _template(key, "en", 1))
    template_repo.create_template(db, _template(key, "en", 2))

    assert template_repo.next_version(db, key, "en") == 3
    assert template_repo.next_version(db, key, "fr") == 1


def test_fetch_latest_returns_the_latest_version_of_each_language(
    db: psycopg.Connection,
) -> None:
    key, other = f"tpl-{_uid()}", f"tpl-{_uid()}"
    for template in (_template(key, "en", 1), _template(key, "en", 2), _template(key, "en", 3),
                     _template(key, "fr", 1), _template(other, "en", 1)):
        template_repo.create_template(db, template)

    latest = template_repo.fetch_latest(db, [key, other, f"tpl-{_uid()}"])

    assert latest == {
        (key, "en"): _template(key, "en", 3),
        (key, "fr"): _template(key, "fr", 1),
        (other, "en"): _template(other, "en", 1),
    }
    assert template_repo.fetch_latest(db, []) == {}


def test_fetch_version_returns_every_language_of_that_version(db: psycopg.Connection) -> None:
    key = f"tpl-{_uid()}"
    for template in (_template(key, "en", 1), _template(key, "en", 2), _template(key, "fr", 1)):
        template_repo.create_template(db, template)

    assert template_repo.fetch_version(db, key, 1) == {
        (key, "en"): _template(key, "en", 1),
        (key, "fr"): _template(key, "fr", 1),
    }
    assert template_repo.fetch_version(db, key, 2) == {(key, "en"): _template(key, "en", 2)}
    assert template_repo.fetch_version(db, key, 9) == {}


# Notifications


def test_insert_batch_writes_notifications_with_their_deliveries(db: psycopg.Connection) -> None:
    both = _notification(("email", "queued"), ("push", "skipped"))
    none = _notification(("email", "skipped"))

    repo.insert_batch(db, [both, none])

    assert _status(db, both.notification_id) == "queued"
    assert _status(db, none.notification_id) == "failed"
    # A skipped delivery is finished as soon as it is written; a queued one is not.
    assert _deliveries(db, both.notification_id) == {
        "email": ("queued", 0, False),
        "push": ("skipped", 0, True),
    }
    assert _deliveries(db, none.notification_id) == {"email": ("skipped", 0, True)}


@pytest.mark.parametrize(
    ("channels", "outcomes", "expected"),
    [
        ((("email", "queued"), ("push", "queued")), {"email": True, "push": True}, "sent"),
        ((("email", "queued"), ("push", "queued")), {"email": True, "push": False},
         "partially_sent"),
        ((("email", "queued"), ("push", "queued")), {"email": False, "push": False}, "failed"),
        ((("email", "queued"), ("push", "skipped")), {"email": True}, "sent"),
        ((("email", "queued"), ("push", "skipped")), {"email": False}, "failed"),
    ],
    ids=["all-sent", "sent-and-failed", "all-failed", "sent-and-skipped", "failed-and-skipped"],
)
def test_record_outcomes_derives_the_notification_status_from_its_deliveries(
    db: psycopg.Connection,
    channels: tuple[tuple[str, str], ...],
    outcomes: dict[str, bool],
    expected: str,
) -> None:
    notification = _notification(*channels)
    repo.insert_batch(db, [notification])
    nid = notification.notification_id

    repo.record_outcomes(db, [_outcome(nid, channel, ok) for channel, ok in outcomes.items()])

    assert _status(db, nid) == expected
    recorded = _deliveries(db, nid)
    for channel, ok in outcomes.items():
        assert recorded[channel] == ("sent" if ok else "failed", 1, True)


def test_a_notification_stays_queued_while_one_channel_is_on_its_way(
    db: psycopg.Connection,
) -> None:
    notification = _notification(("email", "queued"), ("push", "queued"))
    repo.insert_batch(db, [notification])

    repo.record_outcomes(db, [_outcome(notification.notification_id, "email", True)])

    assert _status(db, notification.notification_id) == "queued"


def test_record_outcomes_handles_a_run_across_several_notifications(
    db: psycopg.Connection,
) -> None:
    first = _notification(("email", "queued"))
    second = _notification(("email", "queued"))
    repo.insert_batch(db, [first, second])

    repo.record_outcomes(db, [_outcome(second.notification_id, "email", False),
                              _outcome(first.notification_id, "email", True)])

    assert _status(db, first.notification_id) == "sent"
    assert _status(db, second.notification_id) == "failed"


@pytest.fixture
def two_connections(test_settings: Settings) -> Iterator[tuple[psycopg.Connection, ...]]:
    with database.connect(test_settings.database_url, autocommit=True) as one, \
            database.connect(test_settings.database_url, autocommit=True) as two:
        yield one, two


@pytest.mark.parametrize(("email_ok", "push_ok", "expected"),
                         [(True, True, "sent"), (True, False, "partially_sent")])
def test_two_channels_recorded_at_the_same_moment_never_leave_the_notification_queued(
    db: psycopg.Connection,
    two_connections: tuple[psycopg.Connection, ...],
    email_ok: bool,
    push_ok: bool,
    expected: str,
) -> None:
    # Each channel's delivery actor records its own outcome on its own connection; both
    # transactions must see each other, whichever commits first.
    for _ in range(20):
        notification = _notification(("email", "queued"), ("push", "queued"))
        repo.insert_batch(db, [notification])
        nid = notification.notification_id
        start = threading.Barrier(2, timeout=10)
        errors: list[BaseException] = []

        def record(conn: psycopg.Connection, outcome: Outcome) -> None:
            try:
                start.wait()
                repo.record_outcomes(conn, [outcome])
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [
            threading.Thread(target=record, args=(two_connections[0],
                                                  _outcome(nid, "email", email_ok))),
            threading.Thread(target=record, args=(two_connections[1],
                                                  _outcome(nid, "push", push_ok))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert not errors, errors
        assert _status(db, nid) == expected


def _claims(db: psycopg.Connection, owner: str, *claims: repo.Claim,
            lease: float = 30.0) -> dict[repo.Claim, str]:
    return repo.claim_attempts(db, owner, list(claims), lease)


def test_an_attempt_is_claimed_once_and_a_second_copy_waits_then_is_acked(
    db: psycopg.Connection,
) -> None:
    notification = _notification(("email", "queued"))
    repo.insert_batch(db, [notification])
    claim = repo.Claim(notification.notification_id, "email", 1)

    assert _claims(db, "actor-a", claim) == {claim: repo.SEND}
    # Another process gets a copy while actor-a is sending: it must not send it too.
    assert _claims(db, "actor-b", claim) == {claim: repo.HELD}
    # actor-a may claim its own attempt again (a redelivery to itself).
    assert _claims(db, "actor-a", claim) == {claim: repo.SEND}

    repo.record_outcomes(db, [_outcome(notification.notification_id, "email", True)])

    assert _claims(db, "actor-b", claim) == {claim: repo.DONE}
    assert _claims(db, "actor-a", claim) == {claim: repo.DONE}


def test_a_claim_older_than_the_lease_is_taken_over_by_another_process(
    db: psycopg.Connection,
) -> None:
    notification = _notification(("push", "queued"))
    repo.insert_batch(db, [notification])
    claim = repo.Claim(notification.notification_id, "push", 1)
    assert _claims(db, "killed-actor", claim) == {claim: repo.SEND}
    db.execute("UPDATE deliveries SET claimed_at = now() - interval '1 minute'"
               " WHERE notification_id = %s", (notification.notification_id,))

    assert _claims(db, "new-actor", claim, lease=30.0) == {claim: repo.SEND}
    assert _claims(db, "killed-actor", claim) == {claim: repo.HELD}


def test_claims_say_done_for_finished_skipped_unknown_and_older_attempts(
    db: psycopg.Connection,
) -> None:
    sent = _notification(("email", "queued"), ("push", "skipped"))
    retrying = _notification(("email", "queued"))
    repo.insert_batch(db, [sent, retrying])
    repo.record_outcomes(db, [_outcome(sent.notification_id, "email", True),
                              dataclasses.replace(_outcome(retrying.notification_id, "email",
                                                           False), retry_in=1.0)])
    claims = [repo.Claim(sent.notification_id, "email", 1),
              repo.Claim(sent.notification_id, "push", 1),
              repo.Claim(str(uuid.uuid4()), "email", 1),
              repo.Claim(retrying.notification_id, "email", 1),  # a stale copy of attempt 1
              repo.Claim(retrying.notification_id, "email", 2)]

    found = _claims(db, "actor-a", *claims)

    assert found == {**{c: repo.DONE for c in claims[:4]}, claims[4]: repo.SEND}
    assert repo.claim_attempts(db, "actor-a", [], 30.0) == {}


def test_a_repeated_idempotency_key_leaves_only_the_repeat_out(db: psycopg.Connection) -> None:
    key = f"idem-{_uid()}"
    first = _notification(("email", "queued"), idempotency_key=key)
    repo.insert_batch(db, [first])
    innocent = _notification(("email", "queued"), idempotency_key=f"idem-{_uid()}")
    repeat = _notification(("email", "queued"), ("push", "queued"), idempotency_key=key)

    inserted = repo.insert_batch(db, [innocent, repeat])

    assert inserted.notification_ids == {innocent.notification_id}
    assert _exists(db, innocent.notification_id)
    assert not _exists(db, repeat.notification_id)
    assert _deliveries(db, repeat.notification_id) == {}
    stored = repo.existing(db, [repeat.notification_id], [key])
    assert stored[key]["notification_id"] == first.notification_id


def test_a_key_repeated_within_one_batch_keeps_the_first_and_the_rest_of_the_batch(
    db: psycopg.Connection,
) -> None:
    key = f"idem-{_uid()}"
    one = _notification(("email", "queued"), idempotency_key=key)
    two = _notification(("email", "queued"), idempotency_key=key)
    other = _notification(("email", "queued"))

    inserted = repo.insert_batch(db, [one, two, other])

    assert inserted.notification_ids == {one.notification_id, other.notification_id}
    assert not _exists(db, two.notification_id)


def test_inserting_a_batch_again_after_an_unacknowledged_commit_writes_nothing_twice(
    db: psycopg.Connection,
) -> None:
    batch = [_notification(("email", "queued")) for _ in range(2)]
    repo.insert_batch(db, batch)

    again = repo.insert_batch(db, batch)

    assert again.notification_ids == frozenset() and again.outbox_ids == ()
    found = repo.existing(db, [n.notification_id for n in batch], [])
    assert set(found) == {n.notification_id for n in batch}


def test_notifications_without_an_idempotency_key_never_collide(db: psycopg.Connection) -> None:
    batch = [_notification(("email", "queued")) for _ in range(3)]

    repo.insert_batch(db, batch)

    assert all(_exists(db, n.notification_id) for n in batch)


def test_an_outcome_for_an_unknown_notification_does_not_block_the_rest_of_its_run(
    db: psycopg.Connection,
) -> None:
    live = _notification(("email", "queued"))
    repo.insert_batch(db, [live])

    repo.record_outcomes(db, [_outcome(str(uuid.uuid4()), "email", True),
                              _outcome(live.notification_id, "email", True)])

    assert _status(db, live.notification_id) == "sent"


def test_recording_an_attempt_twice_writes_its_log_and_its_retry_once(
    db: psycopg.Connection,
) -> None:
    notification = _notification(("email", "queued"))
    repo.insert_batch(db, [notification])
    retry = broker.to_queue("email.retry.1s", {"notification_id": notification.notification_id,
                                               "attempt": 2}, {"x-attempt": 2})
    failed = dataclasses.replace(_outcome(notification.notification_id, "email", False),
                                 retry_in=1.0, messages=(retry,))

    first = repo.record_outcomes(db, [failed])
    second = repo.record_outcomes(db, [failed, failed])

    assert len(first) == 1 and second == []
    attempts = db.execute("SELECT count(*) FROM delivery_attempts WHERE notification_id = %s",
                          (notification.notification_id,)).fetchone()
    assert attempts is not None and attempts[0] == 1
    queued = db.execute("SELECT routing_key, body FROM broker_outbox WHERE message_id = %s",
                        (first[0],)).fetchone()
    assert queued is not None and queued[0] == "email.retry.1s"
    assert json.loads(bytes(queued[1]))["attempt"] == 2
    assert _deliveries(db, notification.notification_id) == {"email": ("retrying", 1, False)}


def test_a_notification_and_its_broker_messages_are_written_in_one_transaction(
    db: psycopg.Connection,
) -> None:
    message = broker.Outgoing("email", {"to": "ada@example.test"}, {"x-attempt": 1}).envelope()
    good = dataclasses.replace(_notification(("email", "queued")), messages=(message,))
    # A second notification that cannot be written (no such channel row type: a NULL status)
    # takes the first one's outbox row down with it.
    broken = dataclasses.replace(_notification(("email", "queued")), template_key=None)

    with pytest.raises(psycopg.errors.NotNullViolation):
        repo.insert_batch(db, [good, broken])  # type: ignore[list-item]

    assert not _exists(db, good.notification_id)
    left = db.execute("SELECT count(*) FROM broker_outbox WHERE body = %s",
                      (message.body,)).fetchone()
    assert left is not None and left[0] == 0

    inserted = repo.insert_batch(db, [good])
    assert len(inserted.outbox_ids) == 1
    row = db.execute("SELECT exchange, routing_key, headers, body FROM broker_outbox"
                     " WHERE message_id = %s", (inserted.outbox_ids[0],)).fetchone()
    assert row is not None
    assert (row[0], row[1], row[2], bytes(row[3])) == (
        "notifications", "email", {"x-attempt": 1}, message.body)


# API keys


def test_a_created_api_key_is_found_with_its_scope_until_it_is_revoked(
    db: psycopg.Connection, run_async: Callable[..., Any]
) -> None:
    name = f"key-{_uid()}"
    key = api_keys.create_api_key(db, name, scope="send")

    assert key.startswith("clk_")
    found = run_async(queries.api_key, api_keys.digest(key))
    assert found is not None and found[1:] == (name, "send")
    assert run_async(queries.api_key, api_keys.digest(key + "x")) is None

    assert api_keys.revoke_api_keys(db, name) == 1

    assert run_async(queries.api_key, api_keys.digest(key)) is None
    assert api_keys.revoke_api_keys(db, name) == 0


def test_a_key_is_created_with_an_explicit_scope_and_listed_with_it(
    db: psycopg.Connection
) -> None:
    name = f"key-{_uid()}"
    api_keys.create_api_key(db, name, scope="admin")

    with pytest.raises(ValueError, match="scope"):
        api_keys.create_api_key(db, name, scope="root")  # type: ignore[arg-type]
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO api_keys (name, prefix, key_hash, scope)"
                   " VALUES ('x', 'clk_x', %s, 'root')", (_uid(),))
    listed = [row for row in api_keys.list_api_keys(db) if row[0] == name]
    assert [row[2] for row in listed] == ["admin"]


def test_an_api_key_is_stored_only_as_its_digest(db: psycopg.Connection) -> None:
    name = f"key-{_uid()}"
    key = api_keys.create_api_key(db, name, scope="admin")

    row = db.execute("SELECT prefix, key_hash FROM api_keys WHERE name = %s", (name,)).fetchone()

    assert row is not None
    prefix, key_hash = row
    assert key_hash != key
    assert key not in key_hash
    assert key_hash == api_keys.digest(key)
    assert prefix == key[:10]
    assert any(listed[0] == name for listed in api_keys.list_api_keys(db))


# Outbox


def test_the_outbox_stores_one_row_per_recipient_and_filters_by_notification_and_channel(
    db: psycopg.Connection, run_async: Callable[..., Any]
) -> None:
    nid, other = str(uuid.uuid4()), str(uuid.uuid4())
    email = {"notification_id": nid, "channel": "email", "to": "ada@example.test",
             "subject": "Hello", "body": "Hi Ada", "html_body": "<p>Hi Ada</p>"}
    push = {"notification_id": nid, "channel": "push", "tokens": ["tok-1", "tok-2"],
            "title": "Hello", "body": "Hi", "data": {"deep_link": "/inbox"}}
    unrelated = {**email, "notification_id": other}

    ids = outbox.insert_messages(db, [email, push, unrelated])

    assert len(ids) == 4 and ids == sorted(ids)

    both = run_async(queries.outbox, nid, None, 50)
    assert [row["outbox_id"] for row in both] == sorted(ids[:3], reverse=True)
    assert {row["notification_id"] for row in both} == {nid}

    emails = run_async(queries.outbox, nid, "email", 50)
    assert len(emails) == 1
    assert emails[0] | {"created_at": None} == {
        "outbox_id": ids[0], "notification_id": nid, "channel": "email",
        "recipient": "ada@example.test", "subject": "Hello", "body": "Hi Ada",
        "html_body": "<p>Hi Ada</p>", "data": {}, "created_at": None,
    }

    pushes = run_async(queries.outbox, nid, "push", 50)
    assert sorted(row["recipient"] for row in pushes) == ["tok-1", "tok-2"]
    assert {(row["subject"], row["body"], row["html_body"]) for row in pushes} == {
        ("Hello", "Hi", None)
    }
    assert all(row["data"] == {"deep_link": "/inbox"} for row in pushes)

    assert len(run_async(queries.outbox, nid, None, 2)) == 2
    assert run_async(queries.outbox, str(uuid.uuid4()), None, 50) == []
    newest = run_async(queries.outbox, None, None, 1)
    assert len(newest) == 1 and newest[0]["outbox_id"] >= ids[3]


# Read queries


def test_the_notification_query_returns_each_channel_with_its_attempt_log(
    db: psycopg.Connection, run_async: Callable[..., Any]
) -> None:
    notification = _notification(("email", "queued"), ("push", "queued"))
    repo.insert_batch(db, [notification])
    nid = notification.notification_id
    repo.record_outcomes(db, [_outcome(nid, "email", False, attempt=1)])
    repo.record_outcomes(db, [_outcome(nid, "email", True, attempt=2),
                              _outcome(nid, "push", True, attempt=1)])

    found = run_async(queries.notification, nid)

    assert found is not None
    assert found["notification_id"] == nid
    assert found["status"] == "sent"
    assert (found["user_id"], found["template_key"], found["request_id"]) == (
        notification.user_id, "welcome", notification.request_id)
    email, push = found["channels"]["email"], found["channels"]["push"]
    assert set(found["channels"]) == {"email", "push"}
    assert (email["status"], email["attempts"], email["recipient"]) == ("sent", 2,
                                                                        "email-recipient")
    assert [(a["attempt"], a["outcome"], a["error_code"]) for a in email["attempt_log"]] == [
        (1, "failed", "rejected"), (2, "sent", None)]
    assert [(a["attempt"], a["outcome"]) for a in push["attempt_log"]] == [(1, "sent")]
    assert all(a["provider"] == "outbox" and a["started_at"] <= a["finished_at"]
               for a in email["attempt_log"] + push["attempt_log"])


def test_the_notification_query_returns_none_for_an_unknown_id(
    run_async: Callable[..., Any],
) -> None:
    assert run_async(queries.notification, str(uuid.uuid4())) is None


def test_record_hops_writes_each_timing_and_hands_back_those_of_locked_rows(
    db: psycopg.Connection, two_connections: tuple[psycopg.Connection, ...],
) -> None:
    free, busy = _notification(("email", "queued")), _notification(("email", "queued"))
    repo.insert_batch(db, [free, busy])
    assert repo.record_hops(db, "rendered", [(free.notification_id, 99.5)]) == []
    other = two_connections[0]
    with other.transaction():  # a delivery actor holds `busy` while it records an outcome
        other.execute("SELECT 1 FROM notifications WHERE notification_id = %s FOR UPDATE",
                      (busy.notification_id,))
        started = time.monotonic()
        left = repo.record_hops(db, "queued", [(free.notification_id, 100.5),
                                               (busy.notification_id, 101.5)])
        assert time.monotonic() - started < 2  # it did not wait for the lock
    assert left == [(busy.notification_id, 101.5)]
    assert repo.record_hops(db, "queued", left) == []

    def hops(nid: str) -> dict[str, Any]:
        row = db.execute("SELECT hops FROM notifications WHERE notification_id = %s",
                         (nid,)).fetchone()
        assert row is not None
        return dict(row[0])

    assert hops(free.notification_id)["queued"] == 100.5
    assert hops(busy.notification_id)["queued"] == 101.5
    assert hops(free.notification_id)["rendered"] == 99.5  # the other hops are kept
