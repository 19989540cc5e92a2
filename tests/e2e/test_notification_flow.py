"""End to end over real HTTP: the running app, real PostgreSQL, Redis and RabbitMQ, and the real
sendgrid and firebase-admin clients talking to the provider simulator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pydantic import SecretStr

    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       internal_secret=SecretStr("service-secret-for-tests")) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_simulator(simulator: Any) -> None:
    simulator.state.reset()


def make_user(stack: Stack, **fields: Any) -> dict[str, Any]:
    body = {"user_id": f"u-{uuid.uuid4().hex[:10]}",
            "email_address": f"{uuid.uuid4().hex[:8]}@example.com", **fields}
    reply = stack.client().post("/v1/users", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()["data"]


@pytest.fixture(scope="module")
def welcome_template(stack: Stack) -> str:
    key = f"welcome-{uuid.uuid4().hex[:6]}"
    client = stack.client()
    for language, subject, body in (
        ("en", "Welcome, {{ name }}!", "Hello {{ name }}, your code is {{ code }}."),
        ("fr", "Bienvenue, {{ name }} !", "Bonjour {{ name }}, votre code est {{ code }}."),
    ):
        reply = client.post("/v1/templates", json={
            "template_key": key, "language": language, "subject": subject, "body": body,
            "html_body": "<p>" + body + "</p>", "push_title": subject, "push_body": body,
        })
        assert reply.status_code == 201, reply.text
    return key


def test_a_french_user_gets_the_french_email_and_push_through_the_real_clients(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack, preferred_language="fr", push_tokens=["device-token-fr-1"])
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template,
        "message_data": {"name": "Ada <3", "code": "4821"},
    }, headers={"X-Request-ID": "req-e2e-french"})

    assert reply.status_code == 202, reply.text
    assert reply.headers["x-request-id"] == "req-e2e-french"
    accepted = reply.json()["data"]
    assert accepted["language"] == "fr" and accepted["status"] == "queued"

    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed",
                                                                "partially_sent"})
    assert final["status"] == "sent", final
    assert final["channels"]["email"]["status"] == "sent"
    assert final["channels"]["email"]["provider"] == "sendgrid"
    assert final["channels"]["push"]["status"] == "sent"
    assert final["channels"]["push"]["provider"] == "fcm"
    assert final["request_id"] == "req-e2e-french"

    emails = stack.simulator.state.messages("email")
    assert len(emails) == 1
    assert emails[0]["to"] == user["email_address"]
    assert emails[0]["subject"] == "Bienvenue, Ada <3 !"
    assert emails[0]["body"] == "Bonjour Ada <3, votre code est 4821."
    # Only the HTML body is escaped.
    assert emails[0]["html_body"] == "<p>Bonjour Ada &lt;3, votre code est 4821.</p>"
    assert final["channels"]["email"]["provider_message_id"] == emails[0]["id"]

    pushes = stack.simulator.state.messages("push")
    assert len(pushes) == 1
    assert pushes[0]["to"] == "device-token-fr-1"
    assert pushes[0]["title"] == "Bienvenue, Ada <3 !"
    assert pushes[0]["data"]["notification_id"] == accepted["notification_id"]


def test_an_english_user_falls_back_to_english_and_one_channel_can_be_chosen(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack, preferred_language="de-AT")
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template, "channels": ["email"],
        "message_data": {"name": "Max", "code": "1"},
    })
    assert reply.status_code == 202, reply.text
    assert reply.json()["data"]["language"] == "en"
    final = stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent", "failed"})
    assert final["status"] == "sent"
    assert set(final["channels"]) == {"email"}
    assert stack.simulator.state.messages("email")[0]["subject"] == "Welcome, Max!"
    assert stack.simulator.state.messages("push") == []


def test_a_user_without_push_tokens_gets_email_and_the_push_is_recorded_as_skipped(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack)
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template,
        "message_data": {"name": "Lin", "code": "2"},
    })
    assert reply.status_code == 202, reply.text
    assert reply.json()["data"]["channels"] == {"email": "queued", "push": "skipped",
                                                "sms": "skipped"}
    final = stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent", "failed"})
    assert final["status"] == "sent"
    assert final["channels"]["push"]["error_code"] == "no_push_tokens"


def test_an_unregistered_push_token_fails_that_channel_with_the_providers_reason(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack, push_tokens=["unregistered-old-phone"])
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template,
        "message_data": {"name": "Sam", "code": "3"},
    })
    assert reply.status_code == 202
    final = stack.wait_for_status(reply.json()["data"]["notification_id"],
                                  {"sent", "failed", "partially_sent"})
    assert final["status"] == "partially_sent"
    assert final["channels"]["email"]["status"] == "sent"
    assert final["channels"]["push"]["status"] == "failed"
    assert final["channels"]["push"]["error_code"] == "fcm_unregistered"
    # The dead device's token is taken off the user.
    deadline = time.monotonic() + 5
    while stack.client().get(f"/v1/users/{user['user_id']}").json()["data"]["push_tokens"]:
        assert time.monotonic() < deadline, "the unregistered token is still on the user"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"user_id": "nobody-here", "template_key": "x", "message_data": {}}, 404,
         "user_not_found"),
        ({"template_key": "x"}, 422, "validation_error"),
        ({"user_id": "a", "template_key": "x", "channels": ["fax"]}, 422, "validation_error"),
        ({"user_id": "a", "template_key": "x", "surprise": 1}, 422, "validation_error"),
        ([1, 2], 422, "validation_error"),
    ],
)
def test_bad_requests_get_a_clear_error_with_a_stable_code(
    stack: Stack, body: Any, status: int, code: str
) -> None:
    reply = stack.client().post("/v1/notifications", json=body)
    assert reply.status_code == status, reply.text
    envelope = reply.json()
    assert envelope["success"] is False
    assert envelope["error"] == code
    assert envelope["message"]


def test_validation_errors_name_each_bad_field(stack: Stack) -> None:
    reply = stack.client().post("/v1/notifications", json={"template_key": "", "priority": "now"})
    fields = {f["field"] for f in reply.json()["data"]["fields"]}
    assert {"user_id", "template_key", "priority"} <= fields


def test_an_unknown_template_and_a_missing_variable_are_refused(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack)
    client = stack.client()
    unknown = client.post("/v1/notifications", json={"user_id": user["user_id"],
                                                     "template_key": "no-such-template"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "template_not_found"
    missing = client.post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template,
        "message_data": {"name": "only-name"}})
    assert missing.status_code == 422
    assert missing.json()["error"] == "template_variable_missing"
    assert "code" in missing.json()["message"]


def test_malformed_json_oversized_bodies_and_wrong_content_types_are_refused(
    stack: Stack,
) -> None:
    client = stack.client()
    bad_json = client.post("/v1/notifications", content=b"{nope",
                           headers={"Content-Type": "application/json"})
    assert (bad_json.status_code, bad_json.json()["error"]) == (400, "invalid_json")
    huge = client.post("/v1/notifications", json={
        "user_id": "a", "template_key": "b",
        "message_data": {"blob": "x" * (stack.settings.max_body_bytes + 1)}})
    assert (huge.status_code, huge.json()["error"]) == (413, "payload_too_large")
    text = client.post("/v1/notifications", content=b"hello",
                       headers={"Content-Type": "text/plain"})
    assert (text.status_code, text.json()["error"]) == (415, "unsupported_media_type")


def test_every_api_route_refuses_missing_or_wrong_credentials_alike(stack: Stack) -> None:
    import httpx

    for headers in ({}, {"Authorization": "Bearer clk_wrong"}, {"Authorization": "Basic x"}):
        for method, path in (("POST", "/v1/notifications"), ("GET", "/v1/users/x"),
                             ("GET", f"/v1/notifications/{uuid.uuid4()}"),
                             ("GET", "/v1/outbox"), ("GET", "/v1/system/actors")):
            reply = httpx.request(method, stack.base_url + path, headers=headers, json={})
            assert reply.status_code == 401, (method, path, headers)
            assert reply.json() == {"success": False, "data": None, "error": "unauthorized",
                                    "message": "missing or invalid credentials", "meta": None}


def test_an_unknown_notification_is_a_404(stack: Stack) -> None:
    client = stack.client()
    assert client.get(f"/v1/notifications/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/notifications/not-a-uuid").json()["error"] == "notification_not_found"


def test_health_reports_each_dependency_and_the_actors(stack: Stack) -> None:
    import httpx

    assert httpx.get(stack.base_url + "/health").json()["data"] == {"status": "ok"}
    reply = httpx.get(stack.base_url + "/health/ready")
    assert reply.status_code == 200
    checks = reply.json()["data"]["checks"]
    assert set(checks) == {"postgres", "redis", "rabbitmq", "actors"}
    assert all(c["status"] == "up" for c in checks.values())
    assert set(stack.actors()) == {"users", "templates", "publisher", "gateway", "events",
                                   "callbacks", "email", "push", "sms", "monitor"}


def test_a_repeated_idempotency_key_replays_the_first_answer_and_sends_once(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack)
    client = stack.client()
    body = {"user_id": user["user_id"], "template_key": welcome_template,
            "message_data": {"name": "Ida", "code": "7"}}
    key = {"X-Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = client.post("/v1/notifications", json=body, headers=key)
    second = client.post("/v1/notifications", json=body, headers=key)
    assert first.status_code == second.status_code == 202
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.json()["data"]["notification_id"] == first.json()["data"]["notification_id"]
    stack.wait_for_status(first.json()["data"]["notification_id"], {"sent"})
    assert len(stack.simulator.state.messages("email")) == 1

    other = client.post("/v1/notifications", json={**body, "message_data": {"name": "X",
                                                                            "code": "8"}},
                        headers=key)
    assert (other.status_code, other.json()["error"]) == (422, "idempotency_key_reused")
    # The standard header name works too, and keys of different clients never meet.
    standard = client.post("/v1/notifications", json=body,
                           headers={"Idempotency-Key": key["X-Idempotency-Key"]})
    assert standard.json()["data"]["notification_id"] == first.json()["data"]["notification_id"]


def test_the_database_refuses_a_second_notification_for_a_key_redis_forgot(
    stack: Stack, welcome_template: str
) -> None:
    import redis

    user = make_user(stack)
    client = stack.client()
    body = {"user_id": user["user_id"], "template_key": welcome_template,
            "message_data": {"name": "Rex", "code": "9"}}
    key = f"forgotten-{uuid.uuid4()}"
    first = client.post("/v1/notifications", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202
    cache = redis.Redis.from_url(stack.settings.redis_url)
    forgotten = [k for k in cache.scan_iter("clarion:idem:*") if k.decode().endswith(key)]
    assert len(forgotten) == 1
    cache.delete(*forgotten)

    again = client.post("/v1/notifications", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"]["notification_id"] == first.json()["data"]["notification_id"]


def test_a_channel_the_user_turned_off_is_skipped_with_the_reason(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack, push_tokens=["tok-prefs"], preferences={"email_enabled": False})
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template,
        "message_data": {"name": "Pia", "code": "5"}})
    assert reply.status_code == 202
    assert reply.json()["data"]["channels"] == {"email": "skipped", "push": "queued",
                                                "sms": "skipped"}
    final = stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent", "failed"})
    assert final["status"] == "sent"
    assert final["channels"]["email"]["error_code"] == "channel_disabled"
    assert stack.simulator.state.messages("email") == []

    only_email = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template, "channels": ["email"],
        "message_data": {"name": "Pia", "code": "6"}})
    assert only_email.status_code == 422
    assert only_email.json()["error"] == "no_deliverable_channel"
    assert "turned email notifications off" in only_email.json()["message"]


def test_inside_quiet_hours_a_notification_is_scheduled_and_released_when_they_end(
    stack: Stack, welcome_template: str
) -> None:
    import datetime as dt

    from clarion.persistence import database

    now = dt.datetime.now(dt.timezone.utc)
    start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=2)).strftime("%H:%M")
    user = make_user(stack, preferences={
        "quiet_hours": {"start": start, "end": end, "timezone": "UTC"}})
    body = {"user_id": user["user_id"], "template_key": welcome_template,
            "message_data": {"name": "Quinn", "code": "7"}}
    reply = stack.client().post("/v1/notifications", json=body)
    assert reply.status_code == 202, reply.text
    data = reply.json()["data"]
    assert data["status"] == "scheduled"
    assert data["channels"] == {"email": "scheduled", "push": "skipped", "sms": "skipped"}
    scheduled_for = dt.datetime.fromisoformat(data["scheduled_for"])
    assert dt.timedelta(hours=1, minutes=58) < scheduled_for - now < dt.timedelta(hours=2)

    shown = stack.client().get(f"/v1/notifications/{data['notification_id']}").json()["data"]
    assert shown["status"] == "scheduled"
    time.sleep(1.5)  # deliberately: long enough for an unheld delivery to have gone out
    assert stack.simulator.state.messages("email") == []

    # Move the clock: make the held delivery due now, as if the quiet hours had ended.
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE deliveries SET next_attempt_at = now() WHERE notification_id = %s",
                     (data["notification_id"],))
    final = stack.wait_for_status(data["notification_id"], {"sent", "failed"}, timeout=10)
    assert final["status"] == "sent"
    assert len(stack.simulator.state.messages("email")) == 1

    urgent = stack.client().post("/v1/notifications", json={**body, "priority": "high"})
    assert urgent.json()["data"]["status"] == "queued"
    assert stack.wait_for_status(urgent.json()["data"]["notification_id"],
                                 {"sent"})["status"] == "sent"


def test_metrics_add_up_every_worker_and_actor_process(
    stack: Stack, welcome_template: str
) -> None:
    import httpx

    assert httpx.get(stack.base_url + "/metrics").status_code == 401
    user = make_user(stack)
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template,
        "message_data": {"name": "Mo", "code": "11"}})
    stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent"})

    text = stack.client().get("/metrics").text

    def value(line_start: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(line_start)]
        assert lines, f"no sample {line_start!r}"
        return float(lines[0].rsplit(" ", 1)[1])

    assert value('clarion_http_requests_total{method="POST",route="/v1/notifications",'
                 'status="202"}') >= 1
    assert value('clarion_notifications_accepted_total{channel="email",status="queued"}') >= 1
    # Counted in the delivery actor's own process, read through the shared files.
    assert value('clarion_deliveries_total{channel="email",outcome="sent",'
                 'provider="sendgrid"}') >= 1
    assert value('clarion_delivery_latency_seconds_count{channel="email"}') >= 1
    assert value('clarion_queue_depth{queue="email.queue"}') >= 0
    assert "clarion_dlq_size" in text


def test_a_category_the_user_opted_out_of_is_not_sent(stack: Stack, welcome_template: str) -> None:
    user = make_user(stack, preferences={"opt_outs": ["marketing"]})
    body = {"user_id": user["user_id"], "template_key": welcome_template,
            "message_data": {"name": "Oz", "code": "12"}}
    refused = stack.client().post("/v1/notifications", json={**body, "category": "marketing"})
    assert refused.status_code == 422
    assert refused.json()["error"] == "no_deliverable_channel"
    assert "opted out of 'marketing'" in refused.json()["message"]
    allowed = stack.client().post("/v1/notifications", json={**body, "category": "security"})
    assert allowed.status_code == 202


def test_management_routes_take_the_internal_secret_and_public_ones_do_not(
    stack: Stack,
) -> None:
    import httpx

    secret = stack.settings.internal_secret.get_secret_value()
    good = {"X-Internal-Secret": secret}
    created = httpx.post(stack.base_url + "/v1/users", headers=good,
                         json={"user_id": f"svc-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 201
    wrong = httpx.post(stack.base_url + "/v1/users", headers={"X-Internal-Secret": "nope"},
                       json={"user_id": f"svc-{uuid.uuid4().hex[:8]}"})
    assert wrong.status_code == 401
    public = httpx.post(stack.base_url + "/v1/notifications", headers=good,
                        json={"user_id": "x", "template_key": "y"})
    assert public.status_code == 401


def test_a_notification_shows_each_hop_of_its_way_with_timings(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack, push_tokens=["tok-hops"])
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": welcome_template,
        "message_data": {"name": "Hal", "code": "13"}})
    notification_id = reply.json()["data"]["notification_id"]
    deadline = time.monotonic() + 10
    while True:  # the Gateway notes "queued" just after the broker's answer: it may trail
        final = stack.wait_for_status(notification_id, {"sent"})
        hops = [(h["hop"], h["channel"]) for h in final["hops"]]
        if ("queued", None) in hops or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert hops[:3] == [("received", None), ("user_resolved", None), ("rendered", None)]
    # "queued" is the broker's confirmation; a fast consumer may start before the Gateway hears.
    assert ("queued", None) in hops
    for channel in ("email", "push"):
        assert hops.index(("consumed", channel)) < hops.index(("provider_accepted", channel))
    times = [h["ms_since_received"] for h in final["hops"]]
    assert times == sorted(times) and times[0] == 0


def test_notifications_can_be_listed_by_user_and_status(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack)
    ids = []
    for code in ("a", "b", "c"):
        reply = stack.client().post("/v1/notifications", json={
            "user_id": user["user_id"], "template_key": welcome_template,
            "message_data": {"name": "Lu", "code": code}})
        ids.append(reply.json()["data"]["notification_id"])
    for notification_id in ids:
        stack.wait_for_status(notification_id, {"sent"})
    listed = stack.client().get("/v1/notifications", params={
        "user_id": user["user_id"], "status": "sent", "limit": 2}).json()
    assert listed["meta"]["total"] == 3 and listed["meta"]["has_next"] is True
    assert [n["notification_id"] for n in listed["data"]] == ids[::-1][:2]
    assert stack.client().get("/v1/notifications", params={"status": "bogus"}).status_code == 422


def test_a_batch_request_answers_each_notification_on_its_own(
    stack: Stack, welcome_template: str
) -> None:
    user = make_user(stack)
    good = {"user_id": user["user_id"], "template_key": welcome_template,
            "message_data": {"name": "Bo", "code": "14"}}
    reply = stack.client().post("/v1/notifications/batch", json={"notifications": [
        good, {**good, "user_id": "nobody-at-all"}, good]})
    assert reply.status_code == 200, reply.text
    results = reply.json()["data"]
    assert [r["status"] for r in results] == [202, 404, 202]
    assert results[1]["error"] == "user_not_found"
    assert reply.json()["meta"] == {"accepted": 2, "refused": 1}
    for r in (results[0], results[2]):
        assert stack.wait_for_status(r["data"]["notification_id"], {"sent"})["status"] == "sent"

    too_many = stack.client().post("/v1/notifications/batch",
                                   json={"notifications": [good] * 1001})
    assert too_many.status_code in (413, 422)


def test_every_actor_log_line_of_a_notification_carries_its_request_id(
    stack: Stack, welcome_template: str
) -> None:
    import json

    user = make_user(stack, push_tokens=["tok-logs"])
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    reply = stack.client().post("/v1/notifications", headers={"X-Request-ID": request_id},
                                json={"user_id": user["user_id"], "template_key": welcome_template,
                                      "message_data": {"name": "Lo", "code": "15"}})
    stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent"})
    log = stack.settings.state_dir / "actors.log"
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in log.read_text().splitlines()
                 if request_id in line]
        events = sorted((e["event"], e.get("channel")) for e in lines)
        if len(events) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ("notification accepted", None) in events
    assert ("delivered", "email") in events and ("delivered", "push") in events
    assert all(e["request_id"] == request_id and e["level"] in ("INFO", "WARNING", "ERROR")
               for e in lines)
    # No rendered message reaches the log.
    assert "Welcome, Lo" not in log.read_text() and "your code is 15" not in log.read_text()
