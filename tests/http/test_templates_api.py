"""The templates API over real HTTP against a running Clarion: versions x languages, declared
variables, previews (version pinning, language fallback, the sandbox), retirement, pagination,
and the template cache (read after write, hit and miss counters)."""

from __future__ import annotations

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


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def body(key: str, language: str = "en", **fields: Any) -> dict[str, Any]:
    return {"template_key": key, "language": language, "subject": f"[{language}] {{{{ name }}}}",
            "body": f"{language} body for {{{{ name }}}}", **fields}


def render(api: httpx.Client, key: str, **fields: Any) -> httpx.Response:
    return api.post("/v1/templates/render",
                    json={"template_key": key, "message_data": {"name": "Ada"}, **fields})


@pytest.fixture
def user_id(make_user: Factory) -> str:
    return str(make_user(preferred_language="en")["user_id"])


def send(api: httpx.Client, user_id: str, key: str, **fields: Any) -> httpx.Response:
    return api.post("/v1/notifications", json={"user_id": user_id, "template_key": key,
                                               "channels": ["email"],
                                               "message_data": {"name": "Ada"}, **fields})


# --- create and read ---------------------------------------------------------------------


def test_a_post_creates_version_1_and_a_second_post_in_that_language_is_409(
    api: httpx.Client,
) -> None:
    key = uid("t")

    created = api.post("/v1/templates", json=body(key, html_body="<p>{{ name }}</p>",
                                                  push_title="Hi", description="greeting"))
    again = api.post("/v1/templates", json=body(key))
    french = api.post("/v1/templates", json=body(key, "fr"))

    assert created.status_code == 201, created.text
    assert created.json()["data"] == {
        "template_key": key, "language": "en", "version": 1, "subject": "[en] {{ name }}",
        "body": "en body for {{ name }}", "html_body": "<p>{{ name }}</p>", "push_title": "Hi",
        "push_body": None, "description": "greeting", "sms_body": None, "variables": None,
        "fallback_channels": None}
    assert again.status_code == 409
    assert again.json()["error"] == "template_exists"
    assert french.status_code == 201
    assert french.json()["data"]["version"] == 1


def test_a_put_creates_the_next_version_and_get_pins_a_version_or_a_language(
    api: httpx.Client, make_template: Factory
) -> None:
    key = make_template()["template_key"]
    api.post("/v1/templates", json=body(key, "fr"))

    second = api.put(f"/v1/templates/{key}", json=body(key, subject="v2 {{ name }}"))

    assert second.status_code == 201, second.text
    assert second.json()["data"]["version"] == 2
    latest = api.get(f"/v1/templates/{key}").json()["data"]
    assert latest["template_key"] == key
    assert {lang: t["version"] for lang, t in latest["languages"].items()} == {"en": 2, "fr": 1}
    assert latest["languages"]["en"]["subject"] == "v2 {{ name }}"
    assert "created_at" in latest["languages"]["en"]
    pinned = api.get(f"/v1/templates/{key}", params={"version": 1}).json()["data"]
    assert {lang: t["version"] for lang, t in pinned["languages"].items()} == {"en": 1, "fr": 1}
    assert pinned["languages"]["en"]["subject"] == "Hello {{ name }}"
    french = api.get(f"/v1/templates/{key}", params={"language": "fr"}).json()["data"]
    assert list(french["languages"]) == ["fr"]
    assert api.get(f"/v1/templates/{key}", params={"version": 3}).status_code == 404
    assert api.get(f"/v1/templates/{key}", params={"version": "x"}).status_code == 422


def test_a_put_whose_key_differs_from_the_url_is_422_and_on_an_unknown_key_is_404(
    api: httpx.Client, make_template: Factory
) -> None:
    key = make_template()["template_key"]
    unknown = uid("t")

    mismatch = api.put(f"/v1/templates/{key}", json=body(uid("t")))
    missing = api.put(f"/v1/templates/{unknown}", json=body(unknown))

    assert mismatch.status_code == 422
    assert missing.status_code == 404
    assert missing.json()["error"] == "template_not_found"


def test_versions_lists_every_version_and_language_newest_first(
    api: httpx.Client, make_template: Factory
) -> None:
    key = make_template()["template_key"]
    api.post("/v1/templates", json=body(key, "fr"))
    api.put(f"/v1/templates/{key}", json=body(key))

    reply = api.get(f"/v1/templates/{key}/versions")

    assert reply.status_code == 200
    assert [(t["version"], t["language"]) for t in reply.json()["data"]] == [
        (2, "en"), (1, "en"), (1, "fr")]
    assert reply.json()["meta"] == {"total": 3}
    assert api.get(f"/v1/templates/{uid('t')}/versions").status_code == 404


def test_versions_are_immutable_a_put_never_changes_an_earlier_one(
    api: httpx.Client, make_template: Factory
) -> None:
    first = make_template()
    key = first["template_key"]

    api.put(f"/v1/templates/{key}", json=body(key, subject="changed"))

    v1 = api.get(f"/v1/templates/{key}", params={"version": 1}).json()["data"]["languages"]["en"]
    assert v1["subject"] == first["subject"]


def test_listing_templates_is_paginated_with_languages_and_latest_versions(
    api: httpx.Client, make_template: Factory, db: psycopg.Connection
) -> None:
    key = "aaaa-" + uid("list")  # sorts first: keys are listed in order
    make_template(key)
    api.post("/v1/templates", json=body(key, "pt-BR"))
    api.put(f"/v1/templates/{key}", json=body(key))
    row = db.execute("SELECT count(DISTINCT template_key) FROM templates"
                     " WHERE retired_at IS NULL").fetchone()
    assert row is not None
    total = int(row[0])

    first = api.get("/v1/templates", params={"limit": 1})
    last = api.get("/v1/templates", params={"limit": 1, "page": total})

    assert first.status_code == 200
    assert first.json()["meta"] == {"total": total, "limit": 1, "page": 1, "total_pages": total,
                                    "has_next": total > 1, "has_previous": False}
    keys = first.json()["data"] + api.get("/v1/templates", params={"limit": 100}).json()["data"]
    entry = next(k for k in keys if k["template_key"] == key)
    assert entry["languages"] == ["en", "pt-BR"]
    assert entry["latest_version"] == 2
    assert entry["versions"] == {"en": 2, "pt-BR": 1}
    assert last.json()["meta"]["has_next"] is False
    assert len(last.json()["data"]) == 1
    assert api.get("/v1/templates", params={"limit": 101}).status_code == 422


# --- validation at creation --------------------------------------------------------------


def test_a_template_with_a_syntax_error_is_422_naming_the_field_and_line(
    api: httpx.Client,
) -> None:
    source = "line one\nline two\nbroken {{ name }\nline four"

    reply = api.post("/v1/templates", json=body(uid("t"), body=source))

    assert reply.status_code == 422
    assert reply.json()["error"] == "template_syntax_error"
    assert reply.json()["message"].startswith("body: line 3")


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"template_key": "bad key"}, "template_key"), ({"language": "English"}, "language"),
     ({"subject": ""}, "subject"), ({"variables": ["ok", "not-an-identifier"]}, "variables.1"),
     ({"colour": "red"}, "colour")],
)
def test_invalid_template_fields_are_422_naming_them(
    api: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    reply = api.post("/v1/templates", json={**body(uid("t")), **fields})

    assert reply.status_code == 422
    assert [f["field"] for f in reply.json()["data"]["fields"]] == [field]


def test_declared_variables_are_stored_and_returned(api: httpx.Client) -> None:
    key = uid("t")

    created = api.post("/v1/templates", json=body(key, variables=["name", "code", "name"]))

    assert created.status_code == 201, created.text
    assert created.json()["data"]["variables"] == ["name", "code"]
    read = api.get(f"/v1/templates/{key}").json()["data"]["languages"]["en"]
    assert read["variables"] == ["name", "code"]


def test_a_template_using_a_variable_it_does_not_declare_is_422_naming_it(
    api: httpx.Client,
) -> None:
    key = uid("t")

    reply = api.post("/v1/templates", json=body(
        key, variables=["name"], push_body="{% for i in range(2) %}{{ code }}{% endfor %}",
        html_body="{% set local = 1 %}{{ local }} {{ name.first }} {{ secret }}"))

    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "template_variable_undeclared"
    assert reply.json()["data"]["variables"] == ["code", "secret"]
    assert reply.json()["data"]["fields"] == {"html_body": ["secret"], "push_body": ["code"]}
    assert "code" in reply.json()["message"] and "secret" in reply.json()["message"]
    assert api.get(f"/v1/templates/{key}").status_code == 404


# --- previews ----------------------------------------------------------------------------


def test_a_preview_renders_every_field_without_sending_anything(
    api: httpx.Client, db: psycopg.Connection
) -> None:
    key = uid("t")
    api.post("/v1/templates", json=body(key, html_body="<b>{{ name }}</b>",
                                        push_title="Hey {{ name }}"))

    reply = api.post("/v1/templates/render", json={"template_key": key,
                                                   "message_data": {"name": "<Ada>"}})

    assert reply.status_code == 200, reply.text
    assert reply.json()["data"] == {
        "template_key": key, "language": "en", "version": 1, "subject": "[en] <Ada>",
        "body": "en body for <Ada>", "html_body": "<b>&lt;Ada&gt;</b>",
        "push_title": "Hey <Ada>", "push_body": "en body for <Ada>",
        "sms_body": "en body for <Ada>",
        "sms_segments": {"encoding": "GSM-7", "characters": 17, "units": 17, "segments": 1}}
    row = db.execute("SELECT count(*) FROM notifications WHERE template_key = %s",
                     (key,)).fetchone()
    assert row is not None and row[0] == 0


def test_a_preview_pins_the_version_it_is_asked_for(
    api: httpx.Client, make_template: Factory
) -> None:
    key = make_template()["template_key"]
    api.put(f"/v1/templates/{key}", json=body(key, subject="second {{ name }}"))

    latest = render(api, key)
    pinned = render(api, key, version=1)
    missing = render(api, key, version=7)

    assert (latest.json()["data"]["version"], latest.json()["data"]["subject"]) == (
        2, "second Ada")
    assert (pinned.json()["data"]["version"], pinned.json()["data"]["subject"]) == (
        1, "Hello Ada")
    assert missing.status_code == 404
    assert missing.json()["error"] == "template_not_found"


def test_a_notification_pins_the_version_it_is_asked_for(
    api: httpx.Client, make_template: Factory, user_id: str
) -> None:
    key = make_template()["template_key"]
    api.put(f"/v1/templates/{key}", json=body(key))

    pinned = send(api, user_id, key, template_version=1)
    latest = send(api, user_id, key)

    assert pinned.json()["data"]["template_version"] == 1
    assert latest.json()["data"]["template_version"] == 2


def test_a_preview_falls_back_from_the_language_to_its_base_then_to_the_default(
    api: httpx.Client,
) -> None:
    key = uid("t")
    for language in ("en", "pt", "pt-BR"):
        api.post("/v1/templates", json=body(key, language))
    french_only = uid("t")
    api.post("/v1/templates", json=body(french_only, "fr"))

    def language_of(key: str, language: str | None) -> str:
        fields = {"language": language} if language else {}
        reply = render(api, key, **fields)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["data"]["language"])

    assert language_of(key, "pt-BR") == "pt-BR"
    assert language_of(key, "pt-PT") == "pt"
    assert language_of(key, "de-AT") == "en"
    assert language_of(key, None) == "en"
    assert language_of(french_only, "fr-CA") == "fr"
    unavailable = render(api, french_only, language="de")
    assert unavailable.status_code == 422
    assert unavailable.json()["error"] == "template_language_unavailable"


def test_a_preview_missing_a_variable_is_422_naming_it(api: httpx.Client) -> None:
    key = uid("t")
    api.post("/v1/templates", json=body(key, body="Your code is {{ verification_code }}"))

    reply = render(api, key)

    assert reply.status_code == 422
    assert reply.json()["error"] == "template_variable_missing"
    assert "verification_code" in reply.json()["message"]


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ joiner.__init__.__globals__['os'] }}",  # (lipsum is gone: tests/security)
        "{{ name|attr('__class__') }}",
        "{{ '{0.__class__}'.format(name) }}",
        "{{ name.upper.__self__ }}",
        "{{ 'x' * 100000000 }}",
    ],
)
def test_sandbox_escape_attempts_are_refused_by_the_preview_with_a_clear_code(
    api: httpx.Client, source: str
) -> None:
    key = uid("t")
    created = api.post("/v1/templates", json=body(key, body=source))
    assert created.status_code == 201, created.text

    reply = render(api, key)

    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] in {"template_unsafe", "template_output_too_large"}
    assert "Ada" not in reply.text and "uid=" not in reply.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"version": 0}, "version"), ({"language": "klingon!"}, "language"),
     ({"message_data": []}, "message_data"), ({"template_key": None}, "template_key")],
)
def test_a_bad_preview_request_is_422_naming_the_field(
    api: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    reply = api.post("/v1/templates/render", json={"template_key": "x", **fields})

    assert reply.status_code == 422
    assert [f["field"] for f in reply.json()["data"]["fields"]] == [field]


def test_a_preview_of_an_unknown_template_is_404(api: httpx.Client) -> None:
    reply = render(api, uid("t"))

    assert reply.status_code == 404
    assert reply.json()["error"] == "template_not_found"


# --- the cache ---------------------------------------------------------------------------


def test_a_new_version_is_used_at_once_by_previews_and_notifications(
    api: httpx.Client, make_template: Factory, cache: redis.Redis, user_id: str
) -> None:
    key = make_template()["template_key"]
    assert render(api, key).json()["data"]["version"] == 1
    cache_key = f"clarion:template:{key}"
    assert cache.exists(cache_key)

    api.put(f"/v1/templates/{key}", json=body(key, subject="new {{ name }}"))

    assert not cache.exists(cache_key)
    preview = render(api, key).json()["data"]
    assert (preview["version"], preview["subject"]) == (2, "new Ada")
    assert send(api, user_id, key).json()["data"]["template_version"] == 2


def test_template_cache_hits_and_misses_are_counted_in_redis(
    api: httpx.Client, make_template: Factory, counters: Callable[[], dict[str, int]]
) -> None:
    # Redis database 15 is shared with any other test run on this machine, so the counters
    # can only be seen to grow by at least our share (exact counting: test_cache_counters.py).
    key = make_template()["template_key"]
    before = counters()

    render(api, key)  # a miss, then cached
    after_first = counters()
    render(api, key)  # a hit
    after_second = counters()

    assert after_first["cache:template:miss"] >= before["cache:template:miss"] + 1
    assert after_second["cache:template:hit"] >= after_first["cache:template:hit"] + 1


# --- retirement --------------------------------------------------------------------------


def test_a_retired_template_is_404_everywhere_and_refuses_new_notifications(
    api: httpx.Client, make_template: Factory, cache: redis.Redis, stack: Stack,
    db: psycopg.Connection, user_id: str
) -> None:
    key = make_template()["template_key"]
    sent = send(api, user_id, key)
    assert sent.status_code == 202, sent.text
    notification_id = sent.json()["data"]["notification_id"]
    stack.wait_for_status(notification_id, {"sent", "failed"})
    assert cache.exists(f"clarion:template:{key}")

    retired = api.delete(f"/v1/templates/{key}")

    assert retired.status_code == 200, retired.text
    assert retired.json()["data"] == {"template_key": key, "retired": True,
                                      "versions_retired": 1}
    assert not cache.exists(f"clarion:template:{key}")
    assert api.get(f"/v1/templates/{key}").status_code == 404
    assert api.get(f"/v1/templates/{key}", params={"version": 1}).status_code == 404
    assert api.get(f"/v1/templates/{key}/versions").status_code == 404
    assert render(api, key).json()["error"] == "template_not_found"
    refused = send(api, user_id, key)
    assert refused.status_code == 404
    assert refused.json()["error"] == "template_not_found"
    assert send(api, user_id, key, template_version=1).status_code == 404
    assert api.put(f"/v1/templates/{key}", json=body(key)).status_code == 404
    assert api.delete(f"/v1/templates/{key}").status_code == 404
    listed = api.get("/v1/templates", params={"limit": 100}).json()["data"]
    assert key not in {k["template_key"] for k in listed}
    # The notification sent before keeps its history and its rendered content.
    assert api.get(f"/v1/notifications/{notification_id}").json()["data"]["status"] == "sent"
    row = db.execute("SELECT content->>'subject' FROM deliveries WHERE notification_id = %s",
                     (notification_id,)).fetchone()
    assert row == ("Hello Ada",)


def test_a_retired_key_can_be_created_again_with_version_numbers_after_the_retired_ones(
    api: httpx.Client, make_template: Factory
) -> None:
    key = make_template()["template_key"]
    api.put(f"/v1/templates/{key}", json=body(key))
    api.post("/v1/templates", json=body(key, "fr"))
    api.delete(f"/v1/templates/{key}")

    revived = api.post("/v1/templates", json=body(key, subject="revived {{ name }}"))

    assert revived.status_code == 201, revived.text
    assert revived.json()["data"]["version"] == 3
    languages = api.get(f"/v1/templates/{key}").json()["data"]["languages"]
    assert list(languages) == ["en"]  # French was retired and stays so
    assert [t["version"] for t in api.get(f"/v1/templates/{key}/versions").json()["data"]] == [3]
    preview = render(api, key).json()["data"]
    assert (preview["version"], preview["subject"]) == (3, "revived Ada")
    assert render(api, key, version=1).status_code == 404


# --- credentials -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/templates"), ("GET", "/v1/templates"), ("GET", "/v1/templates/x"),
     ("PUT", "/v1/templates/x"), ("DELETE", "/v1/templates/x"),
     ("GET", "/v1/templates/x/versions"), ("POST", "/v1/templates/render")],
)
def test_every_templates_route_is_401_without_credentials(
    anonymous: httpx.Client, method: str, path: str
) -> None:
    reply = anonymous.request(method, path, json={})

    assert reply.status_code == 401
    assert reply.json()["error"] == "unauthorized"
