"""The users API over real HTTP against a running Clarion: CRUD, validation, push tokens,
pagination, and the user cache (read after write, hit and miss counters)."""

from __future__ import annotations

import time

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
import redis

from tests.stack import Stack

pytestmark = pytest.mark.e2e

Factory = Callable[..., dict[str, Any]]
DEFAULT_PREFERENCES = {"email_enabled": True, "push_enabled": True, "sms_enabled": True,
                       "quiet_hours": None, "opt_outs": []}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def email() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture(scope="module")
def template_key(api: httpx.Client) -> str:
    """A template in English and French to send notifications with."""
    key = uid("users-api")
    for language, subject in (("en", "Hello {{ name }}"), ("fr", "Bonjour {{ name }}")):
        reply = api.post("/v1/templates", json={"template_key": key, "language": language,
                                                "subject": subject, "body": subject})
        assert reply.status_code == 201, reply.text
    return key


def send(api: httpx.Client, user_id: str, key: str) -> httpx.Response:
    return api.post("/v1/notifications", json={"user_id": user_id, "template_key": key,
                                               "channels": ["email"],
                                               "message_data": {"name": "Ada"}})


# --- create and read ---------------------------------------------------------------------


def test_a_created_user_is_answered_with_201_and_read_back_with_default_preferences(
    api: httpx.Client,
) -> None:
    body = {"user_id": uid("u"), "email_address": "Ada.Lovelace@Example.COM",
            "phone_number": "+351912345678", "preferred_language": "pt-BR",
            "push_tokens": ["token-1", "token-1", "token-2"]}

    created = api.post("/v1/users", json=body)

    assert created.status_code == 201, created.text
    user = created.json()["data"]
    assert user == {"user_id": body["user_id"], "email_address": "ada.lovelace@example.com",
                    "phone_number": "+351912345678", "preferred_language": "pt-BR",
                    "preferences": DEFAULT_PREFERENCES, "push_tokens": ["token-1", "token-2"]}
    read = api.get(f"/v1/users/{body['user_id']}")
    assert read.status_code == 200
    assert read.json() == {"success": True, "data": user, "error": None, "message": "",
                           "meta": None}


def test_a_user_created_without_a_user_id_gets_a_generated_one(api: httpx.Client) -> None:
    created = api.post("/v1/users", json={"email_address": email()})

    assert created.status_code == 201, created.text
    user_id = created.json()["data"]["user_id"]
    assert len(user_id) == 32
    assert api.get(f"/v1/users/{user_id}").status_code == 200


def test_preferences_keep_quiet_hours_and_opt_outs_of_the_exact_shape(api: httpx.Client) -> None:
    preferences = {"email_enabled": False, "quiet_hours": {"start": "22:30", "end": "07:00",
                                                           "timezone": "America/Sao_Paulo"},
                   "opt_outs": ["marketing", "digest", "marketing"]}

    created = api.post("/v1/users", json={"email_address": email(), "preferences": preferences})

    assert created.status_code == 201, created.text
    assert created.json()["data"]["preferences"] == {
        "email_enabled": False, "push_enabled": True, "sms_enabled": True,
        "quiet_hours": {"start": "22:30", "end": "07:00", "timezone": "America/Sao_Paulo"},
        "opt_outs": ["marketing", "digest"],
    }


@pytest.mark.parametrize("field", ["user_id", "email_address"])
def test_a_second_user_with_the_same_id_or_email_is_409_user_exists(
    api: httpx.Client, make_user: Factory, field: str
) -> None:
    first = make_user()
    body = {"user_id": uid("u"), "email_address": email(), field: first[field]}

    reply = api.post("/v1/users", json=body)

    assert reply.status_code == 409
    assert reply.json()["error"] == "user_exists"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"phone_number": "912345678"}, ["phone_number"]),
        ({"email_address": "not-an-email"}, ["email_address"]),
        ({"preferred_language": "Portuguese"}, ["preferred_language"]),
        ({"user_id": "has spaces"}, ["user_id"]),
        ({"push_tokens": [f"t{n}" for n in range(21)]}, ["push_tokens"]),
        ({"preferences": {"email_enabled": "yes"}}, ["preferences.email_enabled"]),
        ({"preferences": {"fax_enabled": True}}, ["preferences.fax_enabled"]),
        ({"preferences": {"quiet_hours": {"start": "24:00", "end": "7:00",
                                          "timezone": "Mars/Olympus_Mons"}}},
         ["preferences.quiet_hours.start", "preferences.quiet_hours.end",
          "preferences.quiet_hours.timezone"]),
        ({"preferences": {"quiet_hours": {"start": "08:00", "end": "08:00",
                                          "timezone": "UTC"}}}, ["preferences.quiet_hours"]),
        ({"preferences": {"opt_outs": [f"c{n}" for n in range(51)]}}, ["preferences.opt_outs"]),
        ({"preferences": {"opt_outs": ["x" * 65]}}, ["preferences.opt_outs.0"]),
        ({"phone_number": "+1", "preferred_language": "x"},
         ["phone_number", "preferred_language"]),
    ],
)
def test_invalid_fields_are_422_validation_error_naming_each_field(
    api: httpx.Client, body: dict[str, Any], fields: list[str]
) -> None:
    reply = api.post("/v1/users", json={"email_address": email(), **body})

    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "validation_error"
    assert [f["field"] for f in reply.json()["data"]["fields"]] == fields


def test_an_unknown_user_is_404_user_not_found_on_every_route(api: httpx.Client) -> None:
    nobody = uid("nobody")
    replies = [
        api.get(f"/v1/users/{nobody}"),
        api.patch(f"/v1/users/{nobody}", json={"preferred_language": "fr"}),
        api.delete(f"/v1/users/{nobody}"),
        api.post(f"/v1/users/{nobody}/push-tokens", json={"token": "t"}),
        api.delete(f"/v1/users/{nobody}/push-tokens/t"),
    ]

    assert [r.status_code for r in replies] == [404] * 5
    assert {r.json()["error"] for r in replies} == {"user_not_found"}


# --- partial updates ---------------------------------------------------------------------


def test_a_patch_changes_only_the_fields_it_names_and_null_clears_an_optional_one(
    api: httpx.Client, make_user: Factory
) -> None:
    user = make_user(phone_number="+351912345678", preferred_language="fr",
                     push_tokens=["keep-me"])

    reply = api.patch(f"/v1/users/{user['user_id']}",
                      json={"phone_number": None, "preferred_language": "pt-BR"})

    assert reply.status_code == 200, reply.text
    assert reply.json()["data"] == {**user, "phone_number": None, "preferred_language": "pt-BR"}
    assert api.get(f"/v1/users/{user['user_id']}").json()["data"] == reply.json()["data"]


def test_a_patch_merges_preferences_key_by_key_and_null_clears_quiet_hours(
    api: httpx.Client, make_user: Factory
) -> None:
    quiet = {"start": "22:00", "end": "06:00", "timezone": "Europe/Lisbon"}
    user = make_user(preferences={"quiet_hours": quiet, "opt_outs": ["digest"]})
    path = f"/v1/users/{user['user_id']}"

    first = api.patch(path, json={"preferences": {"push_enabled": False}})
    second = api.patch(path, json={"preferences": {"quiet_hours": None, "opt_outs": []}})

    assert first.json()["data"]["preferences"] == {
        "email_enabled": True, "push_enabled": False, "sms_enabled": True, "quiet_hours": quiet,
        "opt_outs": ["digest"]}
    assert second.json()["data"]["preferences"] == {
        "email_enabled": True, "push_enabled": False, "sms_enabled": True, "quiet_hours": None,
        "opt_outs": []}


def test_an_empty_patch_changes_nothing(api: httpx.Client, make_user: Factory) -> None:
    user = make_user()

    reply = api.patch(f"/v1/users/{user['user_id']}", json={})

    assert reply.status_code == 200
    assert reply.json()["data"] == user


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preferred_language": None}, "preferred_language"),
        ({"preferences": None}, "preferences"),
        ({"push_tokens": None}, "push_tokens"),
        ({"preferences": {"email_enabled": None}}, "preferences.email_enabled"),
        ({"user_id": "another-id"}, "user_id"),
        ({"email_address": "nope"}, "email_address"),
    ],
)
def test_a_patch_cannot_null_a_required_field_rename_a_user_or_set_a_bad_value(
    api: httpx.Client, make_user: Factory, body: dict[str, Any], field: str
) -> None:
    user = make_user()

    reply = api.patch(f"/v1/users/{user['user_id']}", json=body)

    assert reply.status_code == 422, reply.text
    assert [f["field"] for f in reply.json()["data"]["fields"]] == [field]
    assert api.get(f"/v1/users/{user['user_id']}").json()["data"] == user


def test_a_patch_to_an_email_address_another_user_has_is_409_user_exists(
    api: httpx.Client, make_user: Factory
) -> None:
    ada, bob = make_user(), make_user()

    reply = api.patch(f"/v1/users/{bob['user_id']}",
                      json={"email_address": ada["email_address"].upper()})

    assert reply.status_code == 409
    assert reply.json()["error"] == "user_exists"
    assert api.get(f"/v1/users/{bob['user_id']}").json()["data"] == bob


def test_a_patch_is_seen_at_once_by_reads_the_cache_and_the_next_notification(
    api: httpx.Client, make_user: Factory, cache: redis.Redis, template_key: str
) -> None:
    user = make_user(preferred_language="fr")
    first = send(api, user["user_id"], template_key)
    assert first.status_code == 202, first.text
    assert first.json()["data"]["language"] == "fr"
    cache_key = f"clarion:user:{user['user_id']}"
    assert cache.exists(cache_key)  # the Gateway's lookup cached the profile

    patched = api.patch(f"/v1/users/{user['user_id']}", json={"preferred_language": "en"})

    assert patched.status_code == 200
    assert not cache.exists(cache_key)  # invalidated before the PATCH was answered
    assert api.get(f"/v1/users/{user['user_id']}").json()["data"]["preferred_language"] == "en"
    second = send(api, user["user_id"], template_key)
    assert second.status_code == 202, second.text
    assert second.json()["data"]["language"] == "en"
    assert '"preferred_language": "en"' in (cache.get(cache_key) or "")


# --- delete ------------------------------------------------------------------------------


def test_deleting_a_user_keeps_the_history_of_notifications_sent_to_them(
    api: httpx.Client, make_user: Factory, cache: redis.Redis, stack: Stack, template_key: str
) -> None:
    user = make_user()
    sent = send(api, user["user_id"], template_key)
    assert sent.status_code == 202, sent.text
    notification_id = sent.json()["data"]["notification_id"]
    stack.wait_for_status(notification_id, {"sent", "failed"})

    deleted = api.delete(f"/v1/users/{user['user_id']}")

    assert deleted.status_code == 200
    assert deleted.json()["data"] == {"user_id": user["user_id"], "deleted": True}
    assert not cache.exists(f"clarion:user:{user['user_id']}")
    assert api.get(f"/v1/users/{user['user_id']}").status_code == 404
    assert send(api, user["user_id"], template_key).json()["error"] == "user_not_found"
    history = api.get(f"/v1/notifications/{notification_id}")
    assert history.status_code == 200
    assert history.json()["data"]["user_id"] == user["user_id"]
    assert history.json()["data"]["status"] == "sent"
    assert api.delete(f"/v1/users/{user['user_id']}").status_code == 404
    # The address is free again.
    again = api.post("/v1/users", json={"email_address": user["email_address"]})
    assert again.status_code == 201


# --- push tokens -------------------------------------------------------------------------


def test_adding_a_push_token_is_idempotent_and_removing_it_takes_it_away(
    api: httpx.Client, make_user: Factory
) -> None:
    user = make_user(push_tokens=["old-phone"])
    path = f"/v1/users/{user['user_id']}/push-tokens"
    token = "fcm:APA91b-new_phone"

    added = api.post(path, json={"token": token})
    again = api.post(path, json={"token": token})

    assert added.status_code == 201, added.text
    assert again.status_code == 200
    assert added.json()["data"]["push_tokens"] == ["old-phone", token]
    assert again.json()["data"]["push_tokens"] == ["old-phone", token]

    removed = api.delete(f"{path}/{token}")

    assert removed.status_code == 200, removed.text
    assert removed.json()["data"]["push_tokens"] == ["old-phone"]
    assert api.get(f"/v1/users/{user['user_id']}").json()["data"]["push_tokens"] == ["old-phone"]
    gone = api.delete(f"{path}/{token}")
    assert gone.status_code == 404
    assert gone.json()["error"] == "push_token_not_found"


def test_a_user_holds_at_most_twenty_push_tokens(api: httpx.Client, make_user: Factory) -> None:
    user = make_user(push_tokens=[f"token-{n}" for n in range(20)])
    path = f"/v1/users/{user['user_id']}/push-tokens"

    refused = api.post(path, json={"token": "token-20"})
    known = api.post(path, json={"token": "token-3"})

    assert refused.status_code == 422
    assert refused.json()["error"] == "push_token_limit_reached"
    assert known.status_code == 200


def test_a_push_token_body_is_validated(api: httpx.Client, make_user: Factory) -> None:
    user = make_user()

    reply = api.post(f"/v1/users/{user['user_id']}/push-tokens", json={"token": ""})

    assert reply.status_code == 422
    assert [f["field"] for f in reply.json()["data"]["fields"]] == ["token"]


def test_a_new_push_token_is_used_by_the_next_notification(
    api: httpx.Client, make_user: Factory, template_key: str
) -> None:
    user = make_user()
    before = api.post("/v1/notifications", json={"user_id": user["user_id"],
                                                 "template_key": template_key,
                                                 "channels": ["push"],
                                                 "message_data": {"name": "Ada"}})
    assert before.status_code == 422
    assert before.json()["error"] == "no_deliverable_channel"

    api.post(f"/v1/users/{user['user_id']}/push-tokens", json={"token": "fresh-device"})
    after = api.post("/v1/notifications", json={"user_id": user["user_id"],
                                                "template_key": template_key,
                                                "channels": ["push"],
                                                "message_data": {"name": "Ada"}})

    assert after.status_code == 202, after.text
    assert after.json()["data"]["channels"] == {"push": "queued"}


# --- lists -------------------------------------------------------------------------------


def test_listing_users_is_paginated_with_correct_meta(api: httpx.Client, make_user: Factory,
                                                      db: psycopg.Connection) -> None:
    for _ in range(3):
        make_user()
    row = db.execute("SELECT count(*) FROM users").fetchone()
    assert row is not None
    total = int(row[0])
    pages = -(-total // 2)

    first = api.get("/v1/users", params={"limit": 2})
    last = api.get("/v1/users", params={"limit": 2, "page": pages})
    beyond = api.get("/v1/users", params={"limit": 2, "page": pages + 1})

    assert first.status_code == 200
    assert len(first.json()["data"]) == 2
    assert first.json()["meta"] == {"total": total, "limit": 2, "page": 1, "total_pages": pages,
                                    "has_next": True, "has_previous": False}
    assert len(last.json()["data"]) == total - 2 * (pages - 1)
    assert last.json()["meta"] == {"total": total, "limit": 2, "page": pages,
                                   "total_pages": pages, "has_next": False,
                                   "has_previous": True}
    assert beyond.json()["data"] == []
    # Pages do not overlap and are in creation order.
    second = api.get("/v1/users", params={"limit": 2, "page": 2}).json()["data"]
    ids = [u["user_id"] for u in first.json()["data"] + second]
    assert len(set(ids)) == 4
    assert api.get("/v1/users").json()["meta"]["limit"] == 20


@pytest.mark.parametrize("params", [{"limit": "101"}, {"limit": "0"}, {"page": "0"},
                                    {"page": "two"}])
def test_a_bad_page_or_limit_is_422_naming_it(api: httpx.Client, params: dict[str, str]) -> None:
    reply = api.get("/v1/users", params=params)

    assert reply.status_code == 422
    assert reply.json()["error"] == "validation_error"
    assert [f["field"] for f in reply.json()["data"]["fields"]] == list(params)


def test_users_can_be_found_by_email_address_whatever_its_case(
    api: httpx.Client, make_user: Factory
) -> None:
    user = make_user()

    found = api.get("/v1/users", params={"email": user["email_address"].upper()})
    none = api.get("/v1/users", params={"email": email()})

    assert found.json()["data"] == [user]
    assert found.json()["meta"] == {"total": 1, "limit": 20, "page": 1, "total_pages": 1,
                                    "has_next": False, "has_previous": False}
    assert none.json()["data"] == []
    assert none.json()["meta"]["total"] == 0


# --- cache counters and credentials ------------------------------------------------------


def test_user_cache_hits_and_misses_are_counted_in_redis(
    api: httpx.Client, make_user: Factory, template_key: str,
    counters: Callable[[], dict[str, int]],
) -> None:
    # Redis database 15 is shared with any other test run on this machine, so the counters
    # can only be seen to grow by at least our share (exact counting: test_cache_counters.py).
    user = make_user()
    before = counters()

    assert send(api, user["user_id"], template_key).status_code == 202  # a miss, then cached
    after_first = counters()
    assert send(api, user["user_id"], template_key).status_code == 202  # a hit
    # A hit may be served by the Gateway's own copy (actors/local_reads.py), which adds its
    # hits to the same counters once a second.
    deadline = time.monotonic() + 3
    while (after_second := counters())["cache:user:hit"] < after_first["cache:user:hit"] + 1:
        assert time.monotonic() < deadline, "the hit was not counted"
        time.sleep(0.1)

    assert after_first["cache:user:miss"] >= before["cache:user:miss"] + 1
    assert after_second["cache:user:hit"] >= after_first["cache:user:hit"] + 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/users"), ("GET", "/v1/users"), ("GET", "/v1/users/x"),
     ("PATCH", "/v1/users/x"), ("DELETE", "/v1/users/x"), ("POST", "/v1/users/x/push-tokens"),
     ("DELETE", "/v1/users/x/push-tokens/t")],
)
def test_every_users_route_is_401_without_credentials(
    anonymous: httpx.Client, method: str, path: str
) -> None:
    reply = anonymous.request(method, path, json={})

    assert reply.status_code == 401
    assert reply.json()["error"] == "unauthorized"


def test_a_wrong_api_key_is_401(anonymous: httpx.Client) -> None:
    reply = anonymous.get("/v1/users", headers={"Authorization": "Bearer clk_wrong"})

    assert reply.status_code == 401
