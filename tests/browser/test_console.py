"""The admin console in a real headless Chromium (Debian's, driven by Playwright) against a whole
running Clarion: sign in through the form, watch the supervision tree recover from a `kill -9`,
replay a dead letter until its notification is sent, and read, filter and remove suppressions
(a bounce reported by the simulator's signed SendGrid events, entries added with the API key).
Screenshots of each step go to `test-artifacts/console/`.

Chromium and Playwright come from `scripts/install-browser.sh` (`make test` runs it). Without
them these tests skip locally and fail under CI.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.harness import SCREENSHOTS, WAIT_MS
from tests.stack import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_simulator")]

SECRET = "console-secret-for-tests"
ACTORS = ("users", "templates", "publisher", "gateway", "email", "push", "monitor")



@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pydantic import SecretStr

    # Plain HTTP here: a Secure cookie (the default) would never come back to the server. The
    # simulator's SendGrid events are trusted, so a bounce it reports suppresses the address.
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("console-logs"),
                       internal_secret=SecretStr(SECRET), console_insecure_cookie=True,
                       sendgrid_webhook_public_key=SecretStr(
                           simulator.state.sendgrid_public_key)) as running:
        yield running



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
        assert browserless.get("/v1/users").status_code == 200  # the Users section reads them
        # Nothing the console does not do: no batches, no user management (what a stolen
        # cookie can and cannot do: tests/security/test_console_session_scope.py).
        console = {"X-Clarion-Console": "1"}
        assert browserless.post("/v1/notifications/batch", json={},
                                headers=console).status_code == 401
        assert browserless.post("/v1/users", json={}, headers=console).status_code == 401
        # Its writes need the console's header, which a form on another site cannot send.
        assert browserless.post("/v1/notifications", json={}).status_code == 401
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
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
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


# -- suppressions ---------------------------------------------------------------------------


def suppress(stack: Stack, address: str, reason: str, note: str | None = None) -> dict[str, Any]:
    """Put `address` on the suppression list with the stack's admin key (the console cannot)."""
    reply = stack.client().post("/v1/suppressions",
                                json={"address": address, "reason": reason, "note": note})
    assert reply.status_code == 201, reply.text
    return dict(reply.json()["data"])


def bounced_address(stack: Stack) -> tuple[str, str]:
    """An address the simulator reports as bounced (a signed SendGrid event) after one email to
    it: (address, the notification whose event suppressed it)."""
    stack.simulator.state.update_config({
        "sendgrid_event_webhook": stack.base_url + "/v1/providers/sendgrid/events",
        "event_rules": [{"match": "*-bounce@example.com", "outcome": "bounce"}]})
    client = stack.client()
    user_id, template_key = stack.code_user_and_template()
    address = f"{user_id}-bounce@example.com"
    assert client.patch(f"/v1/users/{user_id}", json={"email_address": address}).status_code == 200
    reply = client.post("/v1/notifications", json={
        "user_id": user_id, "template_key": template_key, "channels": ["email"],
        "message_data": {"code": "bounce"}})
    assert reply.status_code == 202, reply.text
    return address, reply.json()["data"]["notification_id"]


def filter_suppressions(page: Any, channel: str = "all", reason: str = "all",
                        address: str = "") -> None:
    section = page.locator("#suppressions")
    section.locator("#suppression-channel").select_option(channel)
    section.locator("#suppression-reason").select_option(reason)
    section.locator("#suppression-address").fill(address)
    section.get_by_role("button", name="Filter").click()


def test_the_suppressions_section_lists_entries_as_text_and_its_filters_narrow_the_list(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    tag = uuid.uuid4().hex[:6]
    bounced, notification_id = bounced_address(stack)
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    suppress(stack, number, "unsubscribed", note="replied STOP on the phone")
    # Addresses and notes come from outside: markup in them must stay text.
    hostile = f"<b>shout<i>{tag}@evil.example.com"
    suppress(stack, hostile, "manual",
             note='<img src=x onerror="window.__pwned = 1">support ticket 4821')

    filter_suppressions(page)
    rows = page.locator("#suppression-rows")
    bounced_row = rows.locator(f'tr[data-suppression="{bounced}"]')
    number_row = rows.locator(f'tr[data-suppression="{number}"]')
    hostile_row = rows.locator(f'tr[data-suppression="{hostile}"]')
    expect(bounced_row.locator("td.reason")).to_have_text("hard_bounce")
    expect(bounced_row.locator("td.channel")).to_have_text("email")
    expect(bounced_row.locator("td.by")).to_have_text("provider:sendgrid")
    expect(bounced_row.locator("td.source")).to_contain_text("sendgrid:")
    expect(bounced_row.locator("td.source a")).to_have_attribute(
        "title", f"show notification {notification_id}")
    expect(number_row.locator("td.address")).to_have_text(number)
    expect(number_row.locator("td.reason")).to_have_text("unsubscribed")
    expect(number_row.locator("td.by")).to_have_text(re.compile(r"^key:tests-"))
    expect(hostile_row.locator("td.address")).to_have_text(hostile)
    expect(rows.locator(f'tr[data-note-for="{hostile}"]')).to_have_text(
        'Note: <img src=x onerror="window.__pwned = 1">support ticket 4821')
    assert rows.locator("b, i, img").count() == 0
    assert page.evaluate("window.__pwned") is None
    expect(page.locator("#suppressions-summary")).to_contain_text("suppressed address")
    shot(page, "10-suppressions.png")

    filter_suppressions(page, channel="sms")
    expect(bounced_row).to_have_count(0)
    expect(hostile_row).to_have_count(0)
    expect(number_row).to_be_visible()
    assert set(rows.locator("td.channel").all_inner_texts()) == {"sms"}

    filter_suppressions(page, reason="hard_bounce")
    expect(number_row).to_have_count(0)
    expect(bounced_row).to_be_visible()
    assert set(rows.locator("td.reason").all_inner_texts()) == {"hard_bounce"}

    filter_suppressions(page, address=hostile.upper())  # emails are kept lower-cased
    expect(bounced_row).to_have_count(0)
    expect(hostile_row).to_be_visible()
    expect(page.locator("#suppressions-summary")).to_have_text("1 matching address")
    shot(page, "11-suppressions-filtered.png")

    filter_suppressions(page, address="not an address")
    expect(page.locator("#suppressions-summary")).to_contain_text("is not an email address")
    expect(page.locator("#suppressions > p.error")).to_be_hidden()


def test_removing_a_suppression_needs_a_reason_and_lands_in_the_audit_under_the_consoles_name(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    number = f"+4420{uuid.uuid4().int % 10**8:08d}"  # E.164: its "+" must survive the path
    suppress(stack, number, "unsubscribed")
    filter_suppressions(page, channel="sms")
    row = page.locator(f'#suppression-rows tr[data-suppression="{number}"]')
    dialog = page.locator("#remove-suppression")

    row.get_by_role("button", name="Remove").click()
    expect(dialog).to_be_visible()
    expect(dialog.locator("#remove-suppression-address")).to_have_text(number)
    dialog.get_by_role("button", name="Remove").click()  # no reason given
    error = dialog.locator("#remove-suppression-error")
    expect(error).to_contain_text("reason_required")
    expect(error).to_contain_text("say why the address may be sent to again")
    shot(page, "12-removal-without-a-reason.png")
    listed = stack.client().get("/v1/suppressions", params={"address": number}).json()["data"]
    assert [e["address"] for e in listed] == [number]

    why = "customer opted back in by phone (ticket 7731)"
    dialog.locator("#remove-suppression-reason").fill(why)
    dialog.get_by_role("button", name="Remove").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#flash")).to_contain_text(f"Removed {number}")
    expect(row).to_have_count(0)

    who = page.locator("#who").inner_text()
    audit = page.locator(f'#removal-rows tr[data-address="{number}"]')
    expect(audit.locator("td.why")).to_have_text(why)
    expect(audit.locator("td.removed-by")).to_have_text(f"console:{who}")
    expect(audit.locator("td.reason")).to_have_text("unsubscribed")
    expect(audit.locator("td.suppressed")).to_contain_text(f"by {who}")
    audit.scroll_into_view_if_needed()
    shot(page, "13-removed-and-audited.png")

    assert stack.client().get("/v1/suppressions", params={"address": number}).json()["data"] == []
    [removal] = stack.client().get("/v1/suppressions/removals",
                                   params={"address": number}).json()["data"]
    assert (removal["removed_by"], removal["why"]) == (f"console:{who}", why)


def test_an_address_with_a_slash_is_removed_like_any_other(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    address = f"ops/{uuid.uuid4().hex[:6]}@example.com"  # a valid email, "/" and all
    suppress(stack, address, "manual")
    filter_suppressions(page, address=address)
    dialog = page.locator("#remove-suppression")

    page.locator(f'#suppression-rows tr[data-suppression="{address}"]').get_by_role(
        "button", name="Remove").click()
    dialog.locator("#remove-suppression-reason").fill("a test of the path")
    dialog.get_by_role("button", name="Remove").click()

    expect(dialog).to_be_hidden()
    expect(page.locator("#who")).to_be_visible()  # still signed in
    assert stack.client().get("/v1/suppressions",
                              params={"address": address}).json()["data"] == []


def test_the_suppression_list_turns_pages(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    tag = uuid.uuid4().hex[:6]
    for n in range(26):  # one more than a page
        suppress(stack, f"page-{tag}-{n:02d}@example.com", "invalid_address")
    filter_suppressions(page, reason="invalid_address")
    pager = page.locator("#suppression-pager")
    rows = page.locator("#suppression-rows tr[data-suppression]")
    expect(pager.locator(".pager-status")).to_have_text(re.compile(r"^page 1 of ([2-9]|[1-9][0-9]+)$"))
    expect(rows).to_have_count(25)
    expect(pager.get_by_role("button", name="Previous")).to_be_disabled()
    first = rows.first.get_attribute("data-suppression")

    pager.get_by_role("button", name="Next").click()
    expect(pager.locator(".pager-status")).to_have_text(re.compile(r"^page 2 of "))
    expect(rows.first).not_to_have_attribute("data-suppression", first)
    shot(page, "14-suppressions-page-2.png")

    pager.get_by_role("button", name="Previous").click()
    expect(pager.locator(".pager-status")).to_have_text(re.compile(r"^page 1 of "))
    expect(rows.first).to_have_attribute("data-suppression", first)
