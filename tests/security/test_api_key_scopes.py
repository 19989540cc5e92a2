"""Finding: every API key could do everything (users, templates, dead letters, system, metrics,
the console) and read every notification. A key is now `send` or `admin`; a `send` key posts
notifications and reads only the ones created under its name; keys made before scopes are
`admin`, so nothing breaks (tests/persistence/test_migrations.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clarion.config.settings import settings_to_env
from clarion.persistence import api_keys, database
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pydantic import SecretStr

    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("scopes"),
                       internal_secret=SecretStr("scopes-test-secret")) as running:
        yield running


@pytest.fixture(scope="module")
def sender(stack: Stack) -> Iterator[tuple[str, httpx.Client]]:
    """(its principal, a client) for a fresh `send` key."""
    name = f"send-{uuid.uuid4().hex[:6]}"
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        key = api_keys.create_api_key(conn, name, scope="send")
    with httpx.Client(base_url=stack.base_url, timeout=15,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        yield f"key:{name}", client


ADMIN_CALLS = [("GET", "/v1/users"), ("POST", "/v1/users"), ("GET", "/v1/templates"),
               ("POST", "/v1/templates"), ("POST", "/v1/templates/render"), ("GET", "/v1/dlq"),
               ("POST", "/v1/dlq/replay"), ("GET", "/v1/outbox"), ("GET", "/v1/system/actors"),
               ("GET", "/v1/system/cluster"), ("GET", "/v1/system/providers"),
               ("GET", "/v1/alerts"), ("GET", "/metrics"),
               ("GET", "/admin/api/host"), ("GET", "/v1/suppressions"),
               ("POST", "/v1/suppressions"), ("GET", "/v1/suppressions/removals"),
               ("GET", "/v1/suppressions/a@example.com"),
               ("DELETE", "/v1/suppressions/a@example.com?reason=x")]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_a_send_key_is_forbidden_every_admin_call(
        sender: tuple[str, httpx.Client], method: str, path: str) -> None:
    reply = sender[1].request(method, path, json={} if method == "POST" else None)

    assert reply.status_code == 403, reply.text
    assert reply.json()["error"] == "forbidden"


def test_a_send_key_sends_and_reads_only_what_was_created_under_its_name(
        stack: Stack, sender: tuple[str, httpx.Client]) -> None:
    principal, client = sender
    user_id, key = stack.code_user_and_template()
    body = {"user_id": user_id, "template_key": key, "message_data": {"code": "1"}}
    mine = client.post("/v1/notifications", json=body)
    theirs = stack.client().post("/v1/notifications", json=body)
    assert mine.status_code == theirs.status_code == 202, (mine.text, theirs.text)
    mine_id = mine.json()["data"]["notification_id"]
    theirs_id = theirs.json()["data"]["notification_id"]
    # The Gateway recorded who created each.
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        creators = dict(conn.execute(
            "SELECT notification_id::text, created_by FROM notifications"
            " WHERE notification_id = ANY(%s::uuid[])", ([mine_id, theirs_id],)).fetchall())
    assert creators[mine_id] == principal and creators[theirs_id] != principal

    assert client.get(f"/v1/notifications/{theirs_id}").status_code == 404
    assert client.get(f"/v1/notifications/{mine_id}").status_code == 200
    listed = client.get("/v1/notifications", params={"user_id": user_id}).json()
    assert [n["notification_id"] for n in listed["data"]] == [mine_id]
    assert listed["meta"]["total"] == 1
    # An admin key still reads everything.
    everything = stack.client().get("/v1/notifications", params={"user_id": user_id}).json()
    assert {n["notification_id"] for n in everything["data"]} == {mine_id, theirs_id}


def test_a_send_key_cancels_only_what_was_created_under_its_name(
        stack: Stack, sender: tuple[str, httpx.Client]) -> None:
    import datetime as dt

    _, client = sender
    user_id, key = stack.code_user_and_template()
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    body = {"user_id": user_id, "template_key": key, "channels": ["email"],
            "message_data": {"code": "1"}, "send_at": later}
    mine = client.post("/v1/notifications", json=body).json()["data"]["notification_id"]
    theirs = stack.client().post("/v1/notifications", json=body).json()["data"]["notification_id"]

    refused = client.delete(f"/v1/notifications/{theirs}")
    assert (refused.status_code, refused.json()["error"]) == (404, "notification_not_found")
    assert client.delete(f"/v1/notifications/{mine}").status_code == 200
    still = stack.client().get(f"/v1/notifications/{theirs}").json()["data"]["status"]
    assert still == "scheduled"
    assert stack.client().delete(f"/v1/notifications/{theirs}").status_code == 200  # an admin


def test_a_send_key_cannot_open_the_console(stack: Stack) -> None:
    name = f"send-{uuid.uuid4().hex[:6]}"
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        key = api_keys.create_api_key(conn, name, scope="send")

    reply = httpx.post(stack.base_url + "/admin/login", data={"credential": key}, timeout=15)

    assert reply.status_code == 303 and reply.headers["location"] == "/admin?notice=scope"
    assert "set-cookie" not in reply.headers


def _clarion(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(settings_to_env(stack.settings))
    return subprocess.run([sys.executable, "-m", "clarion.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_command_makes_a_key_only_with_a_scope_and_lists_each_keys_scope(
        stack: Stack) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"

    refused = _clarion(stack, "apikey", "create", name)
    assert refused.returncode == 2 and "--scope" in refused.stderr
    made = _clarion(stack, "apikey", "create", name, "--scope", "send")
    assert made.returncode == 0 and made.stdout.startswith("clk_")
    listed = _clarion(stack, "apikey", "list").stdout.splitlines()
    assert listed[0].split("\t")[:3] == ["name", "prefix", "scope"]
    assert [line.split("\t")[2] for line in listed if line.startswith(name + "\t")] == ["send"]
