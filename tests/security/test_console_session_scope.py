"""What a stolen console cookie can and cannot do, now that the console sends test
notifications and edits templates (issue 17).

A session is `HttpOnly` and `SameSite=Strict`, so a script or another site cannot use it; this is
about someone who holds the cookie itself. Its writes need `X-Clarion-Console: 1` too (a form on
another site cannot send it). With both, it reaches the console's calls and nothing else: it can
publish, retire and revive templates and send single notifications, recorded as
`console:<subject>`; it cannot post batches, write users or push tokens, add suppressions,
replay dead letters in bulk, register status callbacks or read /metrics. A session opened with
the internal secret cannot send at all: the secret never sends notifications, console or not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clarion.http.auth import ADMIN, CONSOLE_INTERNAL, Grant, rule_for
from clarion.persistence import database
from tests.stack import Stack, running_stack

SECRET = "console-scope-secret"
CONSOLE = {"X-Clarion-Console": "1"}

# Calls a console session may make (with the header when they write).
CONSOLE_CALLS = [
    ("GET", "/v1/templates"), ("GET", "/v1/templates/welcome"),
    ("GET", "/v1/templates/welcome/versions"), ("POST", "/v1/templates"),
    ("POST", "/v1/templates/render"), ("PUT", "/v1/templates/welcome"),
    ("DELETE", "/v1/templates/welcome"), ("POST", "/v1/notifications"),
    ("GET", "/v1/users"), ("GET", "/v1/users/demo-user"), ("GET", "/admin/api/stats"),
    ("POST", "/admin/api/templates/preview"),
    ("GET", "/v1/notifications"), ("DELETE", "/v1/notifications/x"),
    ("POST", "/v1/dlq/1/replay"), ("DELETE", "/v1/dlq/1"),
    ("DELETE", "/v1/suppressions/a@example.com"),
]
# Calls it may never make, header or not.
NEVER = [
    ("POST", "/v1/notifications/batch"), ("POST", "/v1/users"), ("PATCH", "/v1/users/demo-user"),
    ("DELETE", "/v1/users/demo-user"), ("POST", "/v1/users/demo-user/push-tokens"),
    ("DELETE", "/v1/users/demo-user/push-tokens/t"), ("POST", "/v1/suppressions"),
    ("POST", "/v1/dlq/replay"), ("PUT", "/v1/callbacks"), ("GET", "/v1/callbacks"),
    ("GET", "/metrics"), ("GET", "/v1/templates/welcome/anything/else"),
]


# -- the table, without a server ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), CONSOLE_CALLS)
def test_the_table_lets_a_console_session_make_the_consoles_calls(method: str, path: str) -> None:
    rule = rule_for(method, path)

    assert rule.console and Grant("console:key:ops", ADMIN).may(rule)


@pytest.mark.parametrize(("method", "path"), NEVER)
def test_the_table_keeps_a_console_session_from_every_other_call(method: str, path: str) -> None:
    assert not rule_for(method, path).console


def test_a_session_opened_with_the_internal_secret_may_do_all_but_send() -> None:
    internal = Grant(CONSOLE_INTERNAL, ADMIN)
    for method, path in CONSOLE_CALLS:
        assert internal.may(rule_for(method, path)) == ((method, path)
                                                        != ("POST", "/v1/notifications"))


# -- against a running Clarion --------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pydantic import SecretStr

    # Plain HTTP: the cookie must come back without TLS.
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("console-scope"),
                       internal_secret=SecretStr(SECRET),
                       console_insecure_cookie=True) as running:
        yield running


def _stolen(stack: Stack, credential: str) -> httpx.Client:
    """A client holding nothing but a console session's cookie."""
    client = httpx.Client(base_url=stack.base_url, timeout=15)
    assert client.post("/admin/login", data={"credential": credential}).status_code == 303
    assert client.cookies.get("clarion_console")
    stack.clients.append(client)
    return client


@pytest.mark.e2e
def test_a_stolen_cookie_sends_a_test_notification_only_with_the_consoles_header_and_it_is_on_record(
        stack: Stack) -> None:
    user_id, key = stack.code_user_and_template()
    body = {"user_id": user_id, "template_key": key, "message_data": {"code": "42"},
            "channels": ["email"]}
    cookie = _stolen(stack, stack.api_key)
    who = cookie.get("/admin").text.split('id="who">', 1)[1].split("<", 1)[0]

    assert cookie.post("/v1/notifications", json=body).status_code == 401  # no header
    sent = cookie.post("/v1/notifications", json=body, headers=CONSOLE)
    assert sent.status_code == 202, sent.text
    notification_id = sent.json()["data"]["notification_id"]
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        [(created_by,)] = conn.execute(
            "SELECT created_by FROM notifications WHERE notification_id = %s",
            (notification_id,)).fetchall()
    assert created_by == f"console:{who}" and who.startswith("key:tests-")
    # A batch is not a test send: refused even with the header.
    batch = cookie.post("/v1/notifications/batch", json={"notifications": [body]},
                        headers=CONSOLE)
    assert batch.status_code == 401


@pytest.mark.e2e
def test_a_stolen_cookie_edits_templates_only_with_the_consoles_header(stack: Stack) -> None:
    cookie = _stolen(stack, stack.api_key)
    key = f"stolen-{uuid.uuid4().hex[:6]}"
    template = {"template_key": key, "subject": "Hi", "body": "Hello"}

    assert cookie.post("/v1/templates", json=template).status_code == 401
    assert cookie.post("/v1/templates", json=template, headers=CONSOLE).status_code == 201
    assert cookie.put(f"/v1/templates/{key}", json=template).status_code == 401
    assert cookie.put(f"/v1/templates/{key}", json=template, headers=CONSOLE).json()["data"][
        "version"] == 2
    assert cookie.delete(f"/v1/templates/{key}").status_code == 401
    assert cookie.delete(f"/v1/templates/{key}", headers=CONSOLE).status_code == 200
    assert cookie.get("/v1/templates").status_code == 200


@pytest.mark.e2e
@pytest.mark.parametrize(("method", "path"), NEVER)
def test_a_stolen_cookie_with_the_header_still_cannot_make_any_other_call(
        stack: Stack, method: str, path: str) -> None:
    cookie = _stolen(stack, stack.api_key)

    reply = cookie.request(method, path, headers=CONSOLE, json={} if method in (
        "POST", "PUT", "PATCH") else None)

    assert reply.status_code == 401, reply.text


@pytest.mark.e2e
def test_a_session_opened_with_the_internal_secret_reads_users_but_cannot_send(
        stack: Stack) -> None:
    user_id, key = stack.code_user_and_template()
    cookie = _stolen(stack, SECRET)

    assert cookie.get(f"/v1/users/{user_id}").status_code == 200
    refused = cookie.post("/v1/notifications", headers=CONSOLE, json={
        "user_id": user_id, "template_key": key, "message_data": {"code": "1"}})
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert "internal secret" in refused.json()["message"]
