"""Delivery under provider faults: retries with backoff, dead letters and replay, the breaker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_simulator")]


class WebhookReceiver:
    """A tiny HTTP server that records what Clarion's alert webhook POSTs."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any, webhook: WebhookReceiver,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("resilience"),
                       breaker_reset_timeout=5.0, alert_webhook_url=webhook.url) as running:
        yield running


@pytest.fixture(scope="module")
def sender(stack: Stack) -> Any:
    client = stack.client()
    user_id, key = stack.code_user_and_template()

    def send(code: str) -> str:
        reply = client.post("/v1/notifications", json={
            "user_id": user_id, "template_key": key, "message_data": {"code": code}})
        assert reply.status_code == 202, reply.text
        return str(reply.json()["data"]["notification_id"])

    return send


def dead_letters_of(stack: Stack, notification_id: str) -> list[dict[str, Any]]:
    rows = stack.client().get("/v1/dlq", params={"limit": 200}).json()["data"]
    return [r for r in rows if r["notification_id"] == notification_id]


def test_a_passing_provider_failure_is_retried_after_a_delay_and_then_delivered(
    stack: Stack, sender: Any
) -> None:
    stack.simulator.state.update_config({"fail_next": {"email": 1}, "fail_status": 503})
    notification_id = sender("retry-once")
    final = stack.wait_for_status(notification_id, {"sent", "failed"}, timeout=15)

    assert final["status"] == "sent"
    email = final["channels"]["email"]
    assert email["attempts"] == 2
    outcomes = [(a["attempt"], a["outcome"], a["error_code"]) for a in email["attempt_log"]]
    assert outcomes == [(1, "failed", "sendgrid_http_503"), (2, "sent", None)]
    # The retry waited in the 1 s delay queue.
    first, second = email["attempt_log"]
    assert second["started_at"] > first["finished_at"]
    assert len(stack.simulator.state.rejected("email")) == 1
    assert len(stack.simulator.state.messages("email")) == 1


def test_a_rate_limited_delivery_waits_and_is_delivered(stack: Stack, sender: Any) -> None:
    stack.simulator.state.update_config({"rate_limit_next": {"email": 1}})
    final = stack.wait_for_status(sender("rate-limited"), {"sent", "failed"}, timeout=15)
    assert final["status"] == "sent"
    assert final["channels"]["email"]["attempt_log"][0]["error_code"] == "sendgrid_http_429"


def test_after_three_failed_attempts_a_delivery_is_a_dead_letter_that_replays_to_sent(
    stack: Stack, sender: Any
) -> None:
    stack.simulator.state.update_config({"fail_next": {"email": 3}, "fail_status": 500})
    notification_id = sender("dies-then-replays")
    final = stack.wait_for_status(notification_id, {"sent", "failed"}, timeout=20)
    assert final["status"] == "failed"
    assert final["channels"]["email"]["attempts"] == 3
    assert final["channels"]["email"]["error_code"] == "sendgrid_http_500"

    [dead] = dead_letters_of(stack, notification_id)
    assert dead["attempts"] == 3 and dead["error_code"] == "sendgrid_http_500"
    assert dead["state"] == "dead"

    replay = stack.client().post(f"/v1/dlq/{dead['dead_letter_id']}/replay")
    assert replay.status_code == 200, replay.text
    assert replay.json()["data"]["replayed"] == [dead["dead_letter_id"]]
    final = stack.wait_for_status(notification_id, {"sent"}, timeout=15)
    assert final["status"] == "sent"
    assert final["channels"]["email"]["attempts"] == 1  # a fresh count after the replay
    assert dead_letters_of(stack, notification_id) == []
    # Replaying it again finds nothing to replay.
    again = stack.client().post(f"/v1/dlq/{dead['dead_letter_id']}/replay")
    assert (again.status_code, again.json()["error"]) == (404, "dead_letter_not_found")


def test_a_permanent_failure_is_a_dead_letter_at_once_and_can_be_discarded(
    stack: Stack,
) -> None:
    client = stack.client()
    user_id, key = f"u-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:6]}"
    client.post("/v1/users", json={"user_id": user_id, "push_tokens": ["invalid-token-1"]})
    client.post("/v1/templates", json={"template_key": key, "subject": "s", "body": "b"})
    reply = client.post("/v1/notifications", json={"user_id": user_id, "template_key": key})
    notification_id = reply.json()["data"]["notification_id"]
    final = stack.wait_for_status(notification_id, {"sent", "failed"})
    assert final["status"] == "failed"
    assert final["channels"]["push"]["attempts"] == 1
    [dead] = dead_letters_of(stack, notification_id)
    assert dead["error_code"] == "fcm_invalid_argument"

    assert client.delete(f"/v1/dlq/{dead['dead_letter_id']}").status_code == 200
    assert dead_letters_of(stack, notification_id) == []
    assert client.delete(f"/v1/dlq/{dead['dead_letter_id']}").status_code == 404


def test_replay_by_filter_puts_back_every_matching_dead_letter(stack: Stack, sender: Any) -> None:
    stack.simulator.state.update_config({"fail_next": {"email": 6}, "fail_status": 502})
    ids = [sender(f"filter-{i}") for i in range(2)]
    for notification_id in ids:
        assert stack.wait_for_status(notification_id, {"failed"}, timeout=20)["status"] == \
            "failed"
    reply = stack.client().post("/v1/dlq/replay", json={"channel": "email",
                                                        "error_code": "sendgrid_http_502"})
    assert reply.status_code == 200
    assert reply.json()["data"]["count"] == 2
    for notification_id in ids:
        assert stack.wait_for_status(notification_id, {"sent"})["status"] == "sent"


def test_while_the_provider_is_down_the_breaker_pauses_delivery_without_spending_attempts(
    stack: Stack, sender: Any, webhook: WebhookReceiver
) -> None:
    rejected = stack.simulator.state.rejected
    stack.simulator.state.update_config({"fail_next": {"email": 1000}, "fail_status": 503})
    ids = [sender(f"outage-{i}") for i in range(10)]
    deadline = time.monotonic() + 10
    while len(rejected("email")) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # calls already in flight when the breaker opened come back
    calls_when_open = len(rejected("email"))
    assert 5 <= calls_when_open <= 10
    # Open: no call reaches the provider, though retries fall due after 1 s.
    time.sleep(2.5)
    assert len(rejected("email")) == calls_when_open
    # The Supervisor knows, and says so: the breaker in its tree and an active alert.
    assert stack.actors()["email"]["breakers"] == {"sendgrid": "open"}
    active = stack.client().get("/v1/alerts").json()["data"]["active"]
    assert [a["key"] for a in active if a["kind"] == "breaker_open"] == \
        ["breaker:email:sendgrid"]

    stack.simulator.state.update_config({"fail_next": {"email": 0}})
    for notification_id in ids:
        final = stack.wait_for_status(notification_id, {"sent", "failed"}, timeout=20)
        assert final["status"] == "sent", final
        # One attempt at most was spent before the breaker stopped the calls.
        assert final["channels"]["email"]["attempts"] <= 2
        assert dead_letters_of(stack, notification_id) == []
    assert stack.actors()["email"]["breakers"] == {"sendgrid": "closed"}
    alerts = stack.client().get("/v1/alerts").json()["data"]
    assert not [a for a in alerts["active"] if a["kind"] == "breaker_open"]
    assert any(a["key"] == "breaker:email:sendgrid" and a["resolved_at"]
               for a in alerts["recent"])
    # The webhook heard the alert raised, then resolved.
    posted = [(a["key"], a["resolved_at"] is None) for a in webhook.received]
    assert ("breaker:email:sendgrid", True) in posted
    assert ("breaker:email:sendgrid", False) in posted
