"""The admin console in a real headless Chromium (Debian's, driven by Playwright) against a whole
running Clarion: sign in through the form, watch the supervision tree recover from a `kill -9`,
and replay a dead letter until its notification is sent. Screenshots of each step go to
`test-artifacts/console/`.

Chromium and Playwright come from `scripts/install-browser.sh` (`make test` runs it). Without
them these tests skip locally and fail under CI.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_simulator")]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
# Nothing but the page under test: no sandbox (root in a container), no GPU, no calls home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SECRET = "console-secret-for-tests"
ACTORS = ("users", "templates", "publisher", "gateway", "email", "push", "monitor")
WAIT_MS = 20_000  # every wait on the page is bounded by this (a dead letter takes ~6 s)


def _missing(reason: str) -> None:
    message = f"{reason}: run `bash scripts/install-browser.sh` (make test does)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pydantic import SecretStr

    # Plain HTTP here: a Secure cookie (the default) would never come back to the server.
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("console-logs"),
                       internal_secret=SecretStr(SECRET),
                       console_insecure_cookie=True) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium with a fresh profile; Playwright never downloads a browser of its own."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("Playwright is not installed in .venv")
    expect.set_options(timeout=WAIT_MS)
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"{CHROMIUM} is not installed")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 1000})
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack) -> Any:
    """The console, signed in through its form with the stack's API key."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{stack.base_url}/admin")
    expect(page.get_by_label("API key or internal secret")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "01-sign-in.png")
    page.get_by_label("API key or internal secret").fill(stack.api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text(re.compile(r"^key:tests-"))
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / name, full_page=True)


# -- without a browser: the session cookie and what it may do -----------------------------


def test_a_session_token_is_refused_when_tampered_with_expired_or_signed_with_another_secret(
) -> None:
    from clarion.http.routes.admin import SESSION_SECONDS, read_session, sign_session

    token = sign_session(SECRET, "key:ops", 7, now=1000.0)
    body, _, signature = token.partition(".")
    forged = sign_session(SECRET, "internal", None, now=1000.0).partition(".")[0]

    assert read_session(SECRET, token, now=1001.0) == {
        "sub": "key:ops", "kid": 7, "exp": 1000 + SESSION_SECONDS}
    assert read_session(SECRET, f"{forged}.{signature}", now=1001.0) is None
    assert read_session(SECRET, f"{body}.{signature[:-2]}", now=1001.0) is None
    assert read_session("another-secret", token, now=1001.0) is None
    assert read_session(SECRET, token, now=1000.0 + SESSION_SECONDS) is None
    assert read_session(SECRET, "not a token", now=1001.0) is None


def test_without_a_session_the_console_shows_only_the_sign_in_form(
        anonymous: httpx.Client) -> None:
    form = anonymous.get("/admin")
    assert form.status_code == 200
    assert 'name="credential"' in form.text and "data-root" not in form.text
    assert anonymous.get("/admin/api/host").status_code == 401
    assert anonymous.get("/v1/system/actors").json()["error"] == "unauthorized"


def test_a_wrong_credential_is_refused_and_sets_no_cookie(anonymous: httpx.Client) -> None:
    reply = anonymous.post("/admin/login", data={"credential": "clk_not-a-key"})

    assert reply.status_code == 303 and reply.headers["location"] == "/admin?notice=invalid"
    assert "set-cookie" not in reply.headers


def test_a_session_cookie_is_http_only_strict_and_reaches_only_the_consoles_calls(
        stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=15) as browserless:
        reply = browserless.post("/admin/login", data={"credential": SECRET})
        assert reply.status_code == 303
        cookie = reply.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie

        assert browserless.get("/v1/system/actors").status_code == 200
        assert browserless.get("/admin/api/host").json()["data"]["hostname"]
        # Nothing the console does not do: no sending, no user management.
        assert browserless.post("/v1/notifications", json={}).status_code == 401
        assert browserless.get("/v1/users").status_code == 401
        # Its writes need the console's header, which a form on another site cannot send.
        assert browserless.delete("/v1/dlq/999999999").status_code == 401
        assert browserless.delete("/v1/dlq/999999999",
                                  headers={"X-Clarion-Console": "1"}).status_code == 404

        browserless.cookies.set("clarion_console", "forged.signature")
        assert browserless.get("/v1/system/actors").status_code == 401


# -- in the browser -------------------------------------------------------------------------


def test_the_signed_in_console_shows_every_actor_of_the_supervision_tree(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    tree = stack.actors()
    for name in ACTORS:
        row = page.locator(f'#actors tr[data-actor="{name}"]')
        expect(row.locator("td.state")).to_have_text("running")
        expect(row.locator("td.pid")).to_have_text(str(tree[name]["pid"]))
        expect(row.locator("td.host")).not_to_have_text("—")
    # Each work queue has its delivery actor attached as a consumer.
    for queue in ("email.queue", "push.queue"):
        expect(page.locator(f'#queue-depths tr[data-queue="{queue}"] td.consumers')).to_have_text(
            "1", timeout=15_000)
    shot(page, "02-console.png")


def test_the_hosts_section_shows_this_host_beating_with_its_actors(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    row = page.locator(f'#host-rows tr[data-host="{stack.settings.node_name}"]')
    expect(row.locator("td.status")).to_have_text("up")
    expect(row.locator("td.heartbeat")).to_contain_text("s ago")
    expect(row.locator("td.actors")).to_contain_text("gateway running")
    expect(row.locator("td.actors")).to_contain_text("email running")
    shot(page, "02b-hosts.png")


def test_a_killed_actor_comes_back_and_its_restart_count_goes_up_on_the_page(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    before = stack.actors()["push"]
    row = page.locator('#actors tr[data-actor="push"]')
    expect(row.locator("td.restarts")).to_have_text(str(before["restarts"]))

    os.kill(before["pid"], signal.SIGKILL)

    expect(row.locator("td.restarts")).to_have_text(str(before["restarts"] + 1))
    expect(row.locator("td.state")).to_have_text("running")
    expect(row.locator("td.pid")).not_to_have_text(str(before["pid"]))
    expect(row.locator("td.last-exit")).to_contain_text(
        f"process {before['pid']} exited without being asked to")
    shot(page, "03-push-restarted.png")


def test_a_dead_letter_is_listed_and_its_replay_button_brings_the_notification_to_sent(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    client = stack.client()
    user_id, key = f"u-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:6]}"
    assert client.post("/v1/users", json={
        "user_id": user_id, "email_address": f"{user_id}@example.com"}).status_code == 201
    assert client.post("/v1/templates", json={
        "template_key": key, "subject": "Code {{ code }}", "body": "Your code: {{ code }}",
    }).status_code == 201
    stack.simulator.state.update_config({"fail_next": {"email": 3}, "fail_status": 500})
    reply = client.post("/v1/notifications", json={
        "user_id": user_id, "template_key": key, "message_data": {"code": "4821"}})
    assert reply.status_code == 202, reply.text
    notification_id = reply.json()["data"]["notification_id"]

    dead = page.locator(f'#dead-letters tr[data-notification="{notification_id}"]')
    expect(dead).to_be_visible()
    expect(dead).to_contain_text("sendgrid_http_500")
    shot(page, "04-dead-letter.png")

    stack.simulator.state.reset()
    dead.get_by_role("button", name="Replay").click()
    expect(page.locator("#flash")).to_contain_text("replayed")
    expect(dead).to_have_count(0)

    page.locator("#search-id").fill(notification_id)
    page.get_by_role("button", name="Search").click()
    listed = page.locator(f'#notification-rows tr[data-notification="{notification_id}"]')
    expect(listed.locator("td.status")).to_have_text("sent")
    detail = page.locator("#notification-detail")
    expect(detail.locator("dd.status")).to_have_text("sent")
    expect(detail.locator('tr[data-channel="email"] td.status')).to_have_text("sent")
    shot(page, "05-replayed-and-sent.png")


def test_the_providers_section_shows_each_providers_breaker_and_its_share_of_attempts(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    email = page.locator('#provider-rows tr[data-provider="email:sendgrid"]')
    expect(email.locator("td.breaker")).to_have_text("closed")
    before = int(email.locator("td.attempts").inner_text())
    user_id, template_key = stack.code_user_and_template()
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user_id, "template_key": template_key, "channels": ["email"],
        "message_data": {"code": "providers"}})
    assert stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent"})["status"] \
        == "sent"

    expect(email.locator("td.attempts")).to_have_text(str(before + 1), timeout=15_000)
    expect(email.locator("td.name")).to_have_text("1. sendgrid")
    expect(email.locator("td.share")).to_contain_text("%")
    for provider in ("push:fcm", "sms:twilio"):
        expect(page.locator(f'#provider-rows tr[data-provider="{provider}"] td.breaker')) \
            .to_have_text("closed")
    shot(page, "08-providers.png")


def test_a_scheduled_notification_can_be_cancelled_from_its_detail(
        page: Any, stack: Stack) -> None:
    import datetime as dt

    from playwright.sync_api import expect

    user_id, template_key = stack.code_user_and_template()
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user_id, "template_key": template_key, "channels": ["email"],
        "message_data": {"code": "later"}, "send_at": at.isoformat()})
    notification_id = reply.json()["data"]["notification_id"]

    page.locator("#search-id").fill(notification_id)
    page.get_by_role("button", name="Search").click()
    detail = page.locator("#notification-detail")
    expect(detail.locator("dd.status")).to_have_text("scheduled")
    detail.locator('button[data-action="cancel"]').click()
    expect(detail.locator("dd.status")).to_have_text("cancelled", timeout=15_000)
    expect(detail.locator('tr[data-channel="email"] td.status')).to_have_text("cancelled")
    expect(detail.locator('button[data-action="cancel"]')).to_have_count(0)
    shot(page, "09-cancelled.png")
    assert stack.client().get(f"/v1/notifications/{notification_id}").json()["data"]["status"] \
        == "cancelled"
