"""The Gateway's pure planning functions: language fallback and the deliveries of a notification."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from clarion.actors.planning import fingerprint, hold_until, language_candidates, plan_deliveries
from clarion.actors.messages import NotificationRequest, Rendering
from clarion.persistence.notifications import NewDelivery
from clarion.persistence.records import User

NOTIFICATION_ID = "6f1c2a52-0000-4000-8000-000000000001"


def user(**changes: Any) -> User:
    fields: dict[str, Any] = {"user_id": "user-1", "email_address": "ada@example.com",
                              "preferred_language": "en", "push_tokens": ("token-a", "token-b")}
    return User(**{**fields, **changes})


def request(**changes: Any) -> NotificationRequest:
    fields: dict[str, Any] = {"correlation_id": "corr-1", "user_id": "user-1",
                              "template_key": "welcome", "message_data": {"name": "Ada"},
                              "request_id": "req-1"}
    return NotificationRequest(**{**fields, **changes})


RENDERING = Rendering("corr-1", True, template_version=3, language="en", subject="Hi Ada",
                      body="Welcome, Ada", html_body="<p>Welcome, Ada</p>",
                      push_title="Hi!", push_body="Welcome aboard")


def subset(mapping: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {key: mapping.get(key) for key in keys}


# --- language_candidates ------------------------------------------------------------------------


def test_languages_are_requested_its_base_the_users_its_base_then_the_default() -> None:
    candidates = language_candidates("pt-BR", user(preferred_language="fr-CA"), "en")

    assert candidates == ("pt-BR", "pt", "fr-CA", "fr", "en")


def test_a_regional_tag_falls_back_to_its_base_language() -> None:
    assert language_candidates("pt-BR", user(preferred_language="pt-BR"), "pt") == ("pt-BR", "pt")


def test_language_candidates_hold_no_duplicates() -> None:
    assert language_candidates("en", user(preferred_language="en"), "en") == ("en",)
    assert language_candidates("en-GB", user(preferred_language="en-US"), "en") == (
        "en-GB", "en", "en-US")


def test_without_a_requested_language_the_users_comes_first() -> None:
    assert language_candidates(None, user(preferred_language="de-AT"), "en") == (
        "de-AT", "de", "en")


# --- plan_deliveries ----------------------------------------------------------------------------


def test_email_and_push_are_planned_for_a_user_who_has_both() -> None:
    deliveries, outgoing = plan_deliveries(request(), user(), RENDERING, NOTIFICATION_ID)

    assert {d.channel: d.status for d in deliveries} == {"email": "queued", "push": "queued",
                                                         "sms": "skipped"}
    assert [m.channel for m in outgoing] == ["email", "push"]
    email, push = (d for d in deliveries if d.status == "queued")
    assert email.recipient == "ada@example.com"
    assert email.content == {"subject": "Hi Ada", "body": "Welcome, Ada",
                             "html_body": "<p>Welcome, Ada</p>"}
    assert push.recipient == "2 token(s)"
    assert (push.content["title"], push.content["body"]) == ("Hi!", "Welcome aboard")


def test_every_broker_message_carries_the_tracing_headers() -> None:
    _, outgoing = plan_deliveries(request(), user(), RENDERING, NOTIFICATION_ID)

    for message in outgoing:
        assert message.headers == {"x-request-id": "req-1", "x-notification-id": NOTIFICATION_ID,
                                   "x-attempt": 1}


def test_the_email_message_carries_ids_attempt_recipient_and_rendered_content() -> None:
    _, outgoing = plan_deliveries(request(), user(), RENDERING, NOTIFICATION_ID)
    email = next(m for m in outgoing if m.channel == "email")

    expected = {"notification_id": NOTIFICATION_ID, "request_id": "req-1", "attempt": 1,
                "user_id": "user-1", "channel": "email", "to": "ada@example.com",
                "subject": "Hi Ada", "body": "Welcome, Ada", "html_body": "<p>Welcome, Ada</p>"}
    assert subset(email.body, expected) == expected


def test_the_push_message_carries_ids_attempt_tokens_and_rendered_content() -> None:
    _, outgoing = plan_deliveries(request(), user(), RENDERING, NOTIFICATION_ID)
    push = next(m for m in outgoing if m.channel == "push")

    expected = {"notification_id": NOTIFICATION_ID, "request_id": "req-1", "attempt": 1,
                "user_id": "user-1", "channel": "push", "tokens": ["token-a", "token-b"],
                "title": "Hi!", "body": "Welcome aboard",
                "data": {"notification_id": NOTIFICATION_ID, "template_key": "welcome"}}
    assert subset(push.body, expected) == expected


def test_broker_messages_are_json_serialisable() -> None:
    _, outgoing = plan_deliveries(request(), user(), RENDERING, NOTIFICATION_ID)

    for message in outgoing:
        assert json.loads(json.dumps(message.body)) == message.body


def test_a_user_without_email_gets_email_skipped_and_push_still_planned() -> None:
    deliveries, outgoing = plan_deliveries(request(), user(email_address=None), RENDERING,
                                           NOTIFICATION_ID)

    email = next(d for d in deliveries if d.channel == "email")
    assert (email.status, email.error_code, email.recipient) == ("skipped", "no_email_address",
                                                                 None)
    assert email.error
    assert [m.channel for m in outgoing] == ["push"]


def test_a_user_without_push_tokens_gets_push_skipped_and_email_still_planned() -> None:
    deliveries, outgoing = plan_deliveries(request(), user(push_tokens=()), RENDERING,
                                           NOTIFICATION_ID)

    push = next(d for d in deliveries if d.channel == "push")
    assert (push.status, push.error_code, push.recipient) == ("skipped", "no_push_tokens", None)
    assert push.error
    assert [m.channel for m in outgoing] == ["email"]


def test_a_user_with_neither_gets_both_skipped_and_nothing_to_publish() -> None:
    deliveries, outgoing = plan_deliveries(request(), user(email_address=None, push_tokens=()),
                                           RENDERING, NOTIFICATION_ID)

    assert [(d.channel, d.status) for d in deliveries] == [("email", "skipped"),
                                                           ("push", "skipped"),
                                                           ("sms", "skipped")]
    assert outgoing == []


def test_asking_only_for_push_plans_only_push() -> None:
    deliveries, outgoing = plan_deliveries(request(channels=("push",)), user(), RENDERING,
                                           NOTIFICATION_ID)

    assert [d.channel for d in deliveries] == ["push"]
    assert [m.channel for m in outgoing] == ["push"]


def test_asking_only_for_email_plans_only_email() -> None:
    deliveries, outgoing = plan_deliveries(request(channels=("email",)), user(), RENDERING,
                                           NOTIFICATION_ID)

    assert deliveries == (NewDelivery("email", "queued", "ada@example.com",
                                      {"subject": "Hi Ada", "body": "Welcome, Ada",
                                       "html_body": "<p>Welcome, Ada</p>"}),)
    assert [m.channel for m in outgoing] == ["email"]


def test_a_request_without_a_request_id_sends_an_empty_header_not_none() -> None:
    _, outgoing = plan_deliveries(request(request_id=None), user(), RENDERING, NOTIFICATION_ID)

    for message in outgoing:
        assert message.headers["x-request-id"] == ""
        assert message.body["request_id"] is None


def test_an_email_without_html_carries_html_body_none() -> None:
    rendering = Rendering("corr-1", True, subject="Hi", body="Text only", push_title="Hi",
                          push_body="Text only")

    _, outgoing = plan_deliveries(request(channels=("email",)), user(), rendering,
                                  NOTIFICATION_ID)

    assert outgoing[0].body["html_body"] is None
    assert outgoing[0].body["body"] == "Text only"


# --- SMS ----------------------------------------------------------------------------------------

SMS_RENDERING = Rendering("corr-1", True, template_version=3, language="en", subject="Hi Ada",
                          body="Welcome, Ada", push_title="Hi!", push_body="Welcome aboard",
                          sms_body="Ada, your code is 123456")


def test_a_user_with_a_phone_number_gets_an_sms_with_the_rendered_text() -> None:
    deliveries, outgoing = plan_deliveries(request(), user(phone_number="+14155550100"),
                                           SMS_RENDERING, NOTIFICATION_ID)

    assert [(d.channel, d.status) for d in deliveries] == [
        ("email", "queued"), ("push", "queued"), ("sms", "queued")]
    sms = deliveries[2]
    assert (sms.recipient, sms.content) == ("+14155550100", {"body": "Ada, your code is 123456"})
    message = outgoing[2]
    assert message.channel == "sms"
    assert subset(message.content, {"to": 0, "body": 0}) == {
        "to": "+14155550100", "body": "Ada, your code is 123456"}


def test_a_user_without_a_phone_number_gets_sms_skipped_with_its_reason() -> None:
    deliveries, outgoing = plan_deliveries(request(channels=("sms",)), user(), SMS_RENDERING,
                                           NOTIFICATION_ID)

    assert [(d.channel, d.status, d.error_code) for d in deliveries] == [
        ("sms", "skipped", "no_phone_number")]
    assert outgoing == []


def test_a_user_who_turned_sms_off_gets_it_skipped_and_the_others_planned() -> None:
    deliveries, outgoing = plan_deliveries(
        request(), user(phone_number="+14155550100", preferences={"sms_enabled": False}),
        SMS_RENDERING, NOTIFICATION_ID)

    assert [(d.channel, d.status, d.error_code) for d in deliveries] == [
        ("email", "queued", None), ("push", "queued", None),
        ("sms", "skipped", "channel_disabled")]
    assert [m.channel for m in outgoing] == ["email", "push"]


def test_an_sms_longer_than_an_sms_can_carry_is_skipped_not_sent() -> None:
    long = Rendering("corr-1", True, template_version=1, language="en", subject="s", body="b",
                     sms_body="x" * 1601)
    deliveries, outgoing = plan_deliveries(request(channels=("sms", "email")),
                                           user(phone_number="+14155550100"), long,
                                           NOTIFICATION_ID)

    assert sorted((d.channel, d.status, d.error_code) for d in deliveries) == [
        ("email", "queued", None), ("sms", "skipped", "sms_too_long")]
    assert [m.channel for m in outgoing] == ["email"]


# --- send_at and quiet hours --------------------------------------------------------------------

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
QUIET = {"quiet_hours": {"start": "11:00", "end": "13:00", "timezone": "UTC"}}  # ends at 13:00


def test_without_send_at_or_quiet_hours_nothing_waits() -> None:
    assert hold_until(request(), {}, NOW) is None


def test_send_at_holds_the_notification_until_then() -> None:
    at = NOW + timedelta(minutes=5)
    assert hold_until(request(send_at=at.timestamp()), {}, NOW) == at


def test_a_send_at_in_the_past_means_now() -> None:
    assert hold_until(request(send_at=(NOW - timedelta(seconds=1)).timestamp()), {}, NOW) is None


def test_the_later_of_send_at_and_the_end_of_quiet_hours_wins() -> None:
    early, late = NOW + timedelta(minutes=5), NOW + timedelta(hours=3)
    assert hold_until(request(send_at=early.timestamp()), QUIET, NOW) == NOW + timedelta(hours=1)
    assert hold_until(request(send_at=late.timestamp()), QUIET, NOW) == late


def test_high_priority_skips_quiet_hours_but_keeps_send_at() -> None:
    at = NOW + timedelta(minutes=5)
    assert hold_until(request(priority="high"), QUIET, NOW) is None
    assert hold_until(request(priority="high", send_at=at.timestamp()), QUIET, NOW) == at


def test_a_scheduled_notification_keeps_its_message_until_it_is_due() -> None:
    at = NOW + timedelta(minutes=5)
    deliveries, outgoing = plan_deliveries(request(channels=("email",), send_at=at.timestamp()),
                                           user(), RENDERING, NOTIFICATION_ID, now=NOW)
    [email] = deliveries
    assert (email.status, email.scheduled_for) == ("scheduled", at)
    assert email.pending_message is not None and outgoing == []


def test_send_at_is_part_of_what_makes_two_requests_the_same() -> None:
    assert fingerprint(request()) != fingerprint(request(send_at=NOW.timestamp()))
    assert fingerprint(request(send_at=1.0)) == fingerprint(request(send_at=1.0))


# --- lanes --------------------------------------------------------------------------------------


def test_a_bulk_notification_travels_in_the_bulk_lane() -> None:
    _, outgoing = plan_deliveries(request(priority="bulk"), user(), RENDERING, NOTIFICATION_ID)
    assert [m.lane for m in outgoing] == ["bulk", "bulk"]
    assert [m.to_amqp().routing_key for m in outgoing] == ["email.bulk", "push.bulk"]


def test_normal_and_high_travel_in_the_transactional_lane_and_lanes_can_be_off() -> None:
    for priority in ("normal", "high"):
        _, outgoing = plan_deliveries(request(priority=priority), user(), RENDERING,
                                      NOTIFICATION_ID)
        assert [m.to_amqp().routing_key for m in outgoing] == ["email", "push"]
    _, outgoing = plan_deliveries(request(priority="bulk"), user(), RENDERING, NOTIFICATION_ID,
                                  lanes=False)
    assert [m.lane for m in outgoing] == [None, None]


# --- fallback channels --------------------------------------------------------------------------


def test_the_first_fallback_the_user_can_receive_waits_on_standby_with_its_message() -> None:
    deliveries, messages = plan_deliveries(
        request(channels=("email",), fallback_channels=("push", "sms")),
        user(phone_number="+14155550100"), RENDERING, NOTIFICATION_ID)

    assert [(d.channel, d.status) for d in deliveries] == [("email", "queued"),
                                                           ("push", "standby")]
    assert [m.channel for m in messages] == ["email"]  # nothing published for the standby
    standby = deliveries[1]
    assert standby.pending_message is not None
    assert standby.pending_message["body"]["tokens"] == ["token-a", "token-b"]


def test_a_fallback_the_user_cannot_receive_or_turned_off_is_passed_over() -> None:
    no_tokens = user(push_tokens=(), phone_number="+14155550100")
    deliveries, _ = plan_deliveries(request(channels=("email",), fallback_channels=("push", "sms")),
                                    no_tokens, RENDERING, NOTIFICATION_ID)
    assert [(d.channel, d.status) for d in deliveries] == [("email", "queued"),
                                                           ("sms", "standby")]
    sms_off = user(push_tokens=(), phone_number="+14155550100",
                   preferences={"sms_enabled": False})
    deliveries, _ = plan_deliveries(request(channels=("email",), fallback_channels=("sms",)),
                                    sms_off, RENDERING, NOTIFICATION_ID)
    assert [d.channel for d in deliveries] == ["email"]


def test_a_fallback_already_asked_for_is_no_fallback() -> None:
    deliveries, _ = plan_deliveries(request(channels=("email", "push"), fallback_channels=("push",)),
                                    user(), RENDERING, NOTIFICATION_ID)
    assert [(d.channel, d.status) for d in deliveries] == [("email", "queued"),
                                                           ("push", "queued")]


def test_without_fallback_channels_nothing_waits() -> None:
    deliveries, _ = plan_deliveries(request(channels=("email",)), user(phone_number="+14155550100"),
                                    RENDERING, NOTIFICATION_ID)
    assert [d.channel for d in deliveries] == ["email"]


def test_fallback_channels_make_a_different_request_for_an_idempotency_key() -> None:
    assert fingerprint(request()) != fingerprint(request(fallback_channels=("sms",)))


def test_the_templates_fallback_applies_unless_the_request_names_its_own() -> None:
    from dataclasses import replace

    rendering = replace(RENDERING, fallback_channels=("sms",))
    someone = user(phone_number="+14155550100")
    deliveries, _ = plan_deliveries(request(channels=("email",)), someone, rendering,
                                    NOTIFICATION_ID)
    assert [(d.channel, d.status) for d in deliveries] == [("email", "queued"),
                                                           ("sms", "standby")]
    deliveries, _ = plan_deliveries(request(channels=("email",), fallback_channels=("push",)),
                                    someone, rendering, NOTIFICATION_ID)
    assert [(d.channel, d.status) for d in deliveries] == [("email", "queued"),
                                                           ("push", "standby")]
