"""The console's authoring and looking sections in a real headless Chromium against a whole
running Clarion (issue 17): templates edited with a live preview of the draft and of each
language (a syntax error shown at its field as it is typed, then fixed and published as version
2; two versions compared; a key retired and revived), a test send whose timeline fills in beside the form, a user found by id and by email
address, and the live charts drawn from a short load. Screenshots go to `test-artifacts/console/`.

Chromium and Playwright come from `scripts/install-browser.sh` (`make test` runs it). Without
them these tests skip locally and fail under CI.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clarion.persistence import database
from tests.browser.harness import SCREENSHOTS, WAIT_MS
from tests.stack import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_simulator")]

SECRET = "console-views-secret"
SOME = re.compile(r"^[1-9][0-9]*$")  # a chart's count of readings above zero



@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pydantic import SecretStr

    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("console-views"),
                       internal_secret=SecretStr(SECRET),
                       console_insecure_cookie=True) as running:
        yield running



@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack) -> Any:
    """The console, signed in through its form with the stack's admin API key. Requests that
    leave for anywhere but this Clarion are recorded (the console must work offline)."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.elsewhere = []  # type: ignore[attr-defined]
    page.on("request", lambda r: None if r.url.startswith(stack.base_url)
            else page.elsewhere.append(r.url))
    page.goto(f"{stack.base_url}/admin")
    page.get_by_label("API key or internal secret").fill(stack.api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text(re.compile(r"^key:tests-"))
    return page


def shot(page: Any, name: str, section: str | None = None) -> None:
    """The whole page, or one section of it (without the flash, which floats over it)."""
    if section is None:
        page.screenshot(path=SCREENSHOTS / name, full_page=True)
    else:
        page.locator("#flash").evaluate("node => node.classList.add('hidden')")
        page.locator(section).screenshot(path=SCREENSHOTS / name)


def template(stack: Stack, key: str, language: str, **fields: Any) -> dict[str, Any]:
    reply = stack.client().post("/v1/templates", json={
        "template_key": key, "language": language, **fields})
    assert reply.status_code == 201, reply.text
    return dict(reply.json()["data"])


def open_template(page: Any, key: str) -> Any:
    from playwright.sync_api import expect

    section = page.locator("#templates")
    row = section.locator(f'#template-rows tr[data-template="{key}"] a')
    pager = section.locator("#template-pager")
    # The list is alphabetical, 20 a page, refreshed every 10 s: other tests' templates may push
    # this one to a later page. Walk the pages (each turn reloads it) until it shows.
    deadline = time.monotonic() + WAIT_MS / 1000
    forward = True
    while not row.count():
        assert time.monotonic() < deadline, f"template {key} is on no page of the list"
        button = pager.locator(f'[data-page="{"next" if forward else "previous"}"]')
        if not button.is_enabled():
            forward = not forward
            page.wait_for_timeout(250)
            continue
        status = pager.locator(".pager-status").inner_text()
        button.click()
        expect(pager.locator(".pager-status")).not_to_have_text(status)
    row.click()
    expect(section.locator("#template-title")).to_have_text(key)
    return section


# -- templates ------------------------------------------------------------------------------


def test_a_template_edit_shows_a_syntax_error_at_its_field_then_publishes_version_2(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    key = f"welcome-{uuid.uuid4().hex[:6]}"
    template(stack, key, "en", subject="Welcome, {{ name }}", body="Hello {{ name }},\nsee you.",
             variables=["name"])
    template(stack, key, "fr", subject="Bienvenue, {{ name }}", body="Bonjour {{ name }}",
             variables=["name"])
    section = open_template(page, key)
    previews = section.locator("#template-previews")
    # Each language renders through the API's sandbox; a sample without `name`: said inline.
    expect(section.locator("#tpl-sample")).to_have_value('{ "name": "" }')
    section.locator("#tpl-sample").fill("{}")
    for language in ("en", "fr"):
        expect(previews.locator(f'.preview[data-language="{language}"] .preview-error')
               ).to_contain_text("template_variable_missing")
    section.locator("#tpl-sample").fill('{"name": "Ada"}')
    expect(previews.locator('.preview[data-language="en"] dd.subject')).to_have_text(
        "Welcome, Ada")
    expect(previews.locator('.preview[data-language="fr"] dd.subject')).to_have_text(
        "Bienvenue, Ada")
    expect(section.locator("#template-publish")).to_have_text("Publish version 2")

    # The draft is checked and rendered as it is typed: the error shows at its field at once.
    draft = section.locator("#template-draft .preview.draft")
    section.locator("#tpl-body").fill("Hello {{ name }},\nwelcome aboard.")
    expect(draft.locator("dd.body")).to_have_text("Hello Ada,\nwelcome aboard.")
    expect(draft.locator("h5")).to_have_text("Draft in en, not published")
    section.locator("#tpl-subject").fill("Welcome aboard, {{ name }")  # the brace is missing
    error = section.locator('.field-error[data-error-for="subject"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text("Syntax error on line 1")
    expect(section.locator('.field[data-field="subject"]')).to_have_class(re.compile("invalid"))
    expect(draft.locator(".preview-error")).to_contain_text("template_syntax_error")
    section.locator("#template-publish").click()  # refused all the same
    expect(section.locator("#template-error")).to_contain_text("template_syntax_error")
    shot(page, "20-template-syntax-error.png", "#templates")
    assert stack.client().get(f"/v1/templates/{key}").json()["data"]["languages"]["en"][
        "version"] == 1  # nothing was published

    section.locator("#tpl-subject").fill("Welcome aboard, {{ name }}!")
    expect(error).to_be_hidden()
    expect(draft.locator("dd.subject")).to_have_text("Welcome aboard, Ada!")
    section.locator("#template-publish").click()
    expect(page.locator("#flash")).to_contain_text(f"Published {key}: version 2 in en")
    expect(error).to_be_hidden()
    expect(section.locator("#template-publish")).to_have_text("Publish version 3")
    expect(previews.locator('.preview[data-language="en"] h5')).to_have_text("en · version 2")
    expect(previews.locator('.preview[data-language="en"] dd.subject')).to_have_text(
        "Welcome aboard, Ada!")
    expect(previews.locator('.preview[data-language="fr"] h5')).to_have_text("fr · version 1")
    latest = stack.client().get(f"/v1/templates/{key}").json()["data"]["languages"]["en"]
    assert (latest["version"], latest["subject"]) == (2, "Welcome aboard, {{ name }}!")
    assert latest["body"] == "Hello {{ name }},\nwelcome aboard."
    shot(page, "21-template-version-2.png", "#templates")

    # The two versions of English, line by line: the subject and the second line of the body.
    diff = section.locator("#template-diff")
    expect(section.locator("#diff-from")).to_have_value("1")
    expect(section.locator("#diff-to")).to_have_value("2")
    expect(diff.locator(".diff-field")).to_have_count(2)
    subject = diff.locator('.diff-field[data-field="subject"]')
    expect(subject.locator("tr.removed td.line")).to_have_text("Welcome, {{ name }}")
    expect(subject.locator("tr.added td.line")).to_have_text("Welcome aboard, {{ name }}!")
    body = diff.locator('.diff-field[data-field="body"]')  # the first line stayed
    expect(body.locator("tr.same td.line")).to_have_text("Hello {{ name }},")
    expect(body.locator("tr.removed td.line")).to_have_text("see you.")
    expect(body.locator("tr.added td.line")).to_have_text("welcome aboard.")
    diff.scroll_into_view_if_needed()
    shot(page, "22-template-diff.png", "#templates")


def test_template_output_is_shown_as_text_never_as_markup(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    key = f"markup-{uuid.uuid4().hex[:6]}"
    template(stack, key, "en", subject="{{ who }}", body="<b>{{ who }}</b>",
             html_body="<p>{{ who }}</p>")
    section = open_template(page, key)
    hostile = '<img src=x onerror="window.__pwned = 1">'
    section.locator("#tpl-sample").fill(json.dumps({"who": hostile}))

    for card in (section.locator('#template-previews .preview[data-language="en"]'),
                 section.locator("#template-draft .preview")):
        expect(card.locator("dd.subject")).to_have_text(hostile)
        expect(card.locator("dd.body")).to_have_text(f"<b>{hostile}</b>")
        # html_body is autoescaped by the sandbox; the console shows that source as text.
        expect(card.locator("dd.html_body")).to_contain_text("&lt;img")
    assert section.locator(".previews img, .previews b").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_a_new_template_is_created_then_retired_and_revived_with_new_version_numbers(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    key = f"made-here-{uuid.uuid4().hex[:6]}"
    section = page.locator("#templates")
    section.get_by_role("button", name="New template").click()
    expect(section.locator("#template-title")).to_have_text("New template")
    section.locator("#tpl-key").fill(key)
    section.locator("#tpl-new-language").fill("en")
    section.locator("#tpl-subject").fill("Code {{ code }}")
    section.locator("#tpl-body").fill("Your code is {{ code }}.")
    section.locator("#tpl-variables").fill("code")
    section.get_by_role("button", name="Create").click()
    expect(page.locator("#flash")).to_contain_text(f"Published {key}: version 1 in en")
    expect(section.locator("#template-title")).to_have_text(key)
    expect(section.locator(f'#template-rows tr[data-template="{key}"]')).to_contain_text("en v1")
    expect(section.locator("#tpl-sample")).to_have_value('{ "code": "" }')

    section.locator('[data-action="retire-template"]').click()
    dialog = page.locator("#retire-template")
    expect(dialog.locator("#retire-template-key")).to_have_text(key)
    dialog.get_by_role("button", name="Retire").click()
    expect(page.locator("#flash")).to_contain_text(f"Retired {key} (1 version)")
    expect(section.locator(f'#template-rows tr[data-template="{key}"]')).to_have_count(0)
    expect(section.locator("#template-state")).to_contain_text("Retired")
    shot(page, "23-template-retired.png", "#templates")
    assert stack.client().get(f"/v1/templates/{key}").status_code == 404

    section.get_by_role("button", name="Revive").click()
    expect(page.locator("#flash")).to_contain_text(f"Revived {key}: version 2 in en")
    expect(section.locator(f'#template-rows tr[data-template="{key}"]')).to_contain_text("en v2")
    expect(section.locator('#template-previews .preview[data-language="en"] h5')).to_have_text(
        "en · version 2")
    assert stack.client().get(f"/v1/templates/{key}").json()["data"]["languages"]["en"][
        "version"] == 2


# -- a test send ----------------------------------------------------------------------------


def test_a_test_send_shows_its_channels_and_timeline_filling_in_beside_the_form(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    user_id, key = stack.code_user_and_template()
    section = page.locator("#send")
    section.locator("#send-template").fill(key)
    section.locator("#send-user").fill(user_id)
    section.locator('input[name="channel"][value="push"]').uncheck()
    section.locator('input[name="channel"][value="sms"]').uncheck()
    section.locator("#send-data").fill('{"code": "not json"')
    section.get_by_role("button", name="Send").click()
    expect(section.locator("#send-error")).to_contain_text("the variables are not JSON")

    section.locator("#send-data").fill('{"code": "7731"}')
    section.get_by_role("button", name="Send").click()
    expect(page.locator("#flash")).to_contain_text("Sent: notification")
    detail = section.locator("#send-detail")
    expect(detail.locator("dd.status")).to_have_text("sent")
    expect(detail.locator('tr[data-channel="email"] td.status')).to_have_text("sent")
    for hop in ("received", "rendered", "consumed", "provider_accepted"):
        expect(detail.locator(f'.timeline tr[data-hop="{hop}"]')).to_have_count(1)
    shot(page, "24-test-send.png", "#send")

    notification_id = detail.get_attribute("data-notification")
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        [(created_by,)] = conn.execute(
            "SELECT created_by FROM notifications WHERE notification_id = %s",
            (notification_id,)).fetchall()
    assert created_by == "console:" + page.locator("#who").inner_text()
    [email] = stack.simulator.state.messages("email")
    assert "7731" in json.dumps(email)

    # A refused send says why, under the form.
    section.locator("#send-user").fill("nobody-" + uuid.uuid4().hex[:6])
    section.get_by_role("button", name="Send").click()
    expect(section.locator("#send-error")).to_contain_text("user_not_found")


# -- users ----------------------------------------------------------------------------------


def test_a_user_is_found_by_id_or_email_with_preferences_devices_and_notifications(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    user_id, key = stack.code_user_and_template(push_tokens=["device-token-a"])
    client = stack.client()
    email = f"{user_id}@example.com"
    assert client.patch(f"/v1/users/{user_id}", json={
        "phone_number": "+14155550123",
        "preferences": {"sms_enabled": False, "opt_outs": ["marketing"],
                        "quiet_hours": {"start": "22:00", "end": "07:00",
                                        "timezone": "Europe/Paris"}},
    }).status_code == 200
    sent = [client.post("/v1/notifications", json={
        "user_id": user_id, "template_key": key, "channels": ["email"], "priority": "high",
        "message_data": {"code": str(n)}}).json()["data"]["notification_id"] for n in range(3)]

    section = page.locator("#users")
    section.locator("#user-query").fill(email.upper())
    section.get_by_role("button", name="Find").click()
    detail = section.locator("#user-detail")
    expect(detail.locator("#user-id")).to_have_text(user_id)
    expect(detail.locator("#user-profile dd.email")).to_have_text(email)
    expect(detail.locator("#user-profile dd.phone")).to_have_text("+14155550123")
    expect(detail.locator("#user-preferences dd.pref-sms")).to_have_text("off")
    expect(detail.locator("#user-preferences dd.pref-email")).to_have_text("on")
    expect(detail.locator("#user-preferences dd.pref-quiet")).to_have_text(
        "22:00–07:00 (Europe/Paris)")
    expect(detail.locator("#user-preferences dd.pref-opt-outs")).to_have_text("marketing")
    expect(detail.locator('#user-devices tr[data-token="device-token-a"]')).to_have_count(1)
    rows = detail.locator("#user-notifications tr[data-notification]")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.notification)") == sent[::-1]
    expect(section.locator("#user-notifications-summary")).to_have_text("3 in all")
    shot(page, "25-user.png", "#users")

    section.locator("#user-query").fill(user_id)
    section.get_by_role("button", name="Find").click()
    expect(detail.locator("#user-profile dd.email")).to_have_text(email)

    section.locator("#user-query").fill("nobody-" + uuid.uuid4().hex[:6])
    section.get_by_role("button", name="Find").click()
    expect(section.locator("#users-summary")).to_contain_text("no user with the id")
    expect(detail).to_be_hidden()

    section.locator("#user-query").fill(user_id)
    section.get_by_role("button", name="Find").click()
    detail.get_by_role("button", name="Send a test to this user").click()
    expect(page.locator("#send-user")).to_have_value(user_id)


# -- live charts ----------------------------------------------------------------------------


def test_the_live_charts_draw_a_short_load_from_clarions_own_data(
        page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    user_id, key = stack.code_user_and_template(push_tokens=["chart-token"])
    # The first email attempts fail (retried through the delay ladder): failures by code.
    stack.simulator.state.update_config({"fail_next": {"email": 3}, "fail_status": 500})
    client = stack.client()
    ids = []
    for n in range(36):
        reply = client.post("/v1/notifications", json={
            "user_id": user_id, "template_key": key, "channels": ["email", "push"],
            "priority": "high", "message_data": {"code": str(n)}})
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["data"]["notification_id"])
    for notification_id in ids:
        assert stack.wait_for_status(notification_id, {"sent"}, timeout=30)["status"] == "sent"

    charts = page.locator("#charts")
    charts.scroll_into_view_if_needed()

    def points(chart: str) -> Any:
        return charts.locator(f'figure[data-chart="{chart}"]')

    for chart in ("accepted", "delivered", "latency"):
        expect(points(chart)).to_have_attribute("data-points", SOME, timeout=30_000)
    expect(points("accepted")).to_have_attribute("data-series", "email,push,sms")
    expect(points("latency")).to_have_attribute("data-series", "p50,p99")
    expect(points("failures")).to_have_attribute("data-series", re.compile("sendgrid_http_500"))
    expect(points("failures")).to_have_attribute("data-points", SOME)
    expect(points("queues")).to_have_attribute(
        "data-series", re.compile(r"^email\.queue,push\.queue,sms\.queue,.*failed\.queue"))
    # The legend is uPlot's, the series names as text.
    expect(points("failures").locator(".u-legend")).to_contain_text("sendgrid_http_500")
    expect(charts.locator("canvas")).to_have_count(5)
    expect(charts.locator("#charts-summary")).to_contain_text("last 15 minutes")
    shot(page, "26-charts-15-minutes.png", "#charts")

    accepted = page.evaluate("""() => Number(document.querySelector(
        '#charts figure[data-chart="accepted"]').dataset.points)""")
    assert accepted >= 1
    charts.get_by_role("button", name="Last 24 hours").click()
    expect(charts).to_have_attribute("data-window", "24h")
    expect(charts.locator("#charts-summary")).to_contain_text("last 24 hours")
    expect(points("delivered")).to_have_attribute("data-points", SOME)
    shot(page, "27-charts-24-hours.png", "#charts")
    assert page.elsewhere == []  # type: ignore[attr-defined]
