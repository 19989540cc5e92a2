"""What the client sends: the fields given and no others, times with their offset, path
parameters encoded whole, the request id a send names as its header."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from clarion_client import UNSET
from clarion_client.bodies import UserChanges
from fakes import ACCEPTED, Script, envelope

USER: dict[str, Any] = {"user_id": "u-1", "email_address": None, "phone_number": None,
        "preferred_language": "en", "preferences": {}, "push_tokens": []}


def test_a_send_carries_every_field_given_and_only_those() -> None:
    script = Script(envelope(ACCEPTED, 202))
    at = dt.datetime(2026, 12, 24, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))

    with script.client() as clarion:
        clarion.notifications.send("u-1", "welcome")
        clarion.notifications.send(
            "u-1", "welcome", {"name": "Ada"}, channels=["email", "sms"], language="fr",
            template_version=2, priority="high", category="security", send_at=at,
            fallback_channels=["push"], request_id="order-42")

    bare, full = script.bodies()
    assert bare == {"user_id": "u-1", "template_key": "welcome"}
    assert full == {"user_id": "u-1", "template_key": "welcome", "message_data": {"name": "Ada"},
                    "channels": ["email", "sms"], "language": "fr", "template_version": 2,
                    "priority": "high", "request_id": "order-42", "category": "security",
                    "send_at": "2026-12-24T09:00:00+01:00", "fallback_channels": ["push"]}
    assert script.requests[1].headers["x-request-id"] == "order-42"
    assert all(r.headers["authorization"] == "Bearer clk_test" for r in script.requests)


def test_a_request_id_clarion_would_refuse_as_a_header_stays_in_the_body_only() -> None:
    script = Script(envelope(ACCEPTED, 202))

    with script.client() as clarion:
        clarion.notifications.send("u-1", "welcome", request_id="order 42/ä")

    assert script.bodies()[0]["request_id"] == "order 42/ä"
    assert script.requests[0].headers["x-request-id"] != "order 42/ä"


def test_a_send_at_without_a_time_zone_is_refused_before_sending() -> None:
    script = Script(envelope(ACCEPTED, 202))

    with script.client() as clarion, pytest.raises(ValueError, match="time zone"):
        clarion.notifications.send("u-1", "welcome", send_at=dt.datetime(2026, 12, 24, 9))

    assert script.requests == []


def test_a_batch_takes_records_and_plain_dicts() -> None:
    from clarion_client import NewNotification

    results = [{"index": 0, "status": 202, "success": True, "data": ACCEPTED, "error": None,
                "message": ""},
               {"index": 1, "status": 404, "success": False, "data": None,
                "error": "user_not_found", "message": "no user 'ghost'"}]
    script = Script(envelope(results, meta={"accepted": 1, "refused": 1}))

    with script.client() as clarion:
        batch = clarion.notifications.send_batch([
            NewNotification("u-1", "welcome", {"name": "Ada"}),
            {"user_id": "ghost", "template_key": "welcome"}])

    assert script.bodies()[0] == {"notifications": [
        {"user_id": "u-1", "template_key": "welcome", "message_data": {"name": "Ada"}},
        {"user_id": "ghost", "template_key": "welcome"}]}
    assert (batch.accepted, batch.refused) == (1, 1)
    ok, refused = batch.items
    assert ok.notification is not None and ok.exception() is None
    assert refused.error == "user_not_found" and refused.notification is None
    error = refused.exception()
    assert error is not None and type(error).__name__ == "NotFound"


def test_an_update_leaves_unset_fields_out_and_sends_none_as_null() -> None:
    script = Script(envelope(USER))

    with script.client() as clarion:
        clarion.users.update("u-1", phone_number=None, preferences={"sms_enabled": False})

    assert script.requests[0].method == "PATCH"
    assert script.bodies()[0] == {"phone_number": None, "preferences": {"sms_enabled": False}}
    assert UserChanges().to_json() == {} and repr(UNSET) == "UNSET"


def test_path_parameters_are_encoded_whole() -> None:
    script = Script(envelope(USER))

    with script.client() as clarion:
        clarion.users.remove_push_token("u-1", "fcm:abc/def+1")
        script.answers = [envelope({"channel": "email", "address": "ops/x@example.com",
                                    "suppressed": None, "removals": []})]
        clarion.suppressions.get("ops/x@example.com")

    paths = [r.url.raw_path.decode() for r in script.requests]
    assert paths == ["/v1/users/u-1/push-tokens/fcm%3Aabc%2Fdef%2B1",
                     "/v1/suppressions/ops%2Fx%40example.com"]


def test_queries_carry_only_the_parameters_given() -> None:
    meta = {"total": 0, "limit": 10, "page": 1, "total_pages": 1, "has_next": False,
            "has_previous": False}
    script = Script(envelope([], meta=meta))

    with script.client() as clarion:
        clarion.notifications.list(user_id="u-1", limit=10)
        script.answers = [envelope({"removal_id": 1, "channel": "email",
                                    "address": "a@example.com", "reason": "manual",
                                    "removed_by": "ops", "why": "asked by phone",
                                    "removed_at": "2026-12-02"})]
        removal = clarion.suppressions.remove("a@example.com", reason="asked by phone")

    assert dict(script.requests[0].url.params) == {"user_id": "u-1", "page": "1",
                                                   "limit": "10"}
    assert script.requests[1].method == "DELETE"
    assert dict(script.requests[1].url.params) == {"reason": "asked by phone"}
    assert removal.why == "asked by phone"


def test_a_base_url_with_a_path_prefix_is_kept() -> None:
    import httpx

    from clarion_client import Clarion

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return envelope(USER)

    with Clarion("http://gateway.test/clarion/", "clk_test",
                 transport=httpx.MockTransport(answer)) as clarion:
        clarion.users.get("u-1")

    assert seen == ["/clarion/v1/users/u-1"]


def test_models_keep_what_they_do_not_declare() -> None:
    script = Script(envelope({**USER, "created_at": "2026-12-02 11:30:00+00:00"}))

    with script.client() as clarion:
        user = clarion.users.get("u-1")

    assert user.raw["created_at"] == "2026-12-02 11:30:00+00:00"
    assert json.dumps(dict(user.raw))  # still plain JSON
