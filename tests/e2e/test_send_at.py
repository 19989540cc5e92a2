"""Scheduled sends end to end: `send_at` holds a notification until its time, the Publisher
releases it then, and `DELETE /v1/notifications/{id}` cancels it before."""

from __future__ import annotations

import datetime as dt
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
    with running_stack(provider_settings, simulator,
                       tmp_path_factory.mktemp("stack-logs")) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_simulator(simulator: Any) -> None:
    simulator.state.reset()


@pytest.fixture(scope="module")
def template(stack: Stack) -> str:
    key = f"later-{uuid.uuid4().hex[:6]}"
    reply = stack.client().post("/v1/templates", json={
        "template_key": key, "subject": "Reminder", "body": "Hello {{ name }}"})
    assert reply.status_code == 201, reply.text
    return key


@pytest.fixture(scope="module")
def user(stack: Stack) -> dict[str, Any]:
    reply = stack.client().post("/v1/users", json={
        "user_id": f"u-{uuid.uuid4().hex[:10]}",
        "email_address": f"{uuid.uuid4().hex[:8]}@example.com"})
    assert reply.status_code == 201, reply.text
    return reply.json()["data"]


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)


def schedule(stack: Stack, user: dict[str, Any], template: str, at: dt.datetime,
             **fields: Any) -> dict[str, Any]:
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": template, "channels": ["email"],
        "message_data": {"name": "Ada"}, "send_at": at.isoformat(), **fields})
    assert reply.status_code == 202, reply.text
    return reply.json()["data"]


def test_a_notification_waits_for_send_at_and_goes_out_within_a_second_of_it(
    stack: Stack, user: dict[str, Any], template: str
) -> None:
    at = later(2.0)
    accepted = schedule(stack, user, template, at)
    assert accepted["status"] == "scheduled"
    assert accepted["channels"] == {"email": "scheduled"}
    assert dt.datetime.fromisoformat(accepted["scheduled_for"]) == at

    [email] = stack.simulator.state.wait_for(1, channel="email", timeout=10)
    final = stack.wait_for_status(accepted["notification_id"], {"sent", "failed"})
    assert final["status"] == "sent"
    # It left on time: not before send_at, and within the second after it.
    assert at.timestamp() <= email["started_at"] < at.timestamp() + 1.0


def test_a_scheduled_notification_can_be_cancelled_and_never_goes_out(
    stack: Stack, user: dict[str, Any], template: str
) -> None:
    at = later(2.0)
    accepted = schedule(stack, user, template, at)
    reply = stack.client().delete(f"/v1/notifications/{accepted['notification_id']}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"] == {"notification_id": accepted["notification_id"],
                                    "status": "cancelled", "cancelled_channels": ["email"]}

    time.sleep(at.timestamp() + 1.5 - time.time())  # past its time, and a release after it
    shown = stack.client().get(f"/v1/notifications/{accepted['notification_id']}").json()
    assert shown["data"]["status"] == "cancelled"
    assert shown["data"]["channels"]["email"]["status"] == "cancelled"
    assert stack.simulator.state.messages("email") == []
    again = stack.client().delete(f"/v1/notifications/{accepted['notification_id']}")
    assert (again.status_code, again.json()["error"]) == (409, "not_cancellable")


def test_a_notification_that_went_out_cannot_be_cancelled(
    stack: Stack, user: dict[str, Any], template: str
) -> None:
    reply = stack.client().post("/v1/notifications", json={
        "user_id": user["user_id"], "template_key": template, "channels": ["email"],
        "message_data": {"name": "Ada"}})
    notification_id = reply.json()["data"]["notification_id"]
    stack.wait_for_status(notification_id, {"sent"})

    refused = stack.client().delete(f"/v1/notifications/{notification_id}")
    assert refused.status_code == 409
    assert refused.json()["error"] == "not_cancellable"
    assert refused.json()["data"]["status"] == "sent"


def test_cancelling_an_unknown_notification_is_a_404(stack: Stack) -> None:
    for notification_id in (str(uuid.uuid4()), "not-a-uuid"):
        reply = stack.client().delete(f"/v1/notifications/{notification_id}")
        assert (reply.status_code, reply.json()["error"]) == (404, "notification_not_found")


def test_send_at_more_than_30_days_ahead_or_without_an_offset_is_refused(
    stack: Stack, user: dict[str, Any], template: str
) -> None:
    body = {"user_id": user["user_id"], "template_key": template, "message_data": {"name": "A"}}
    for send_at in ((later(31 * 86400)).isoformat(), "2026-12-24T09:00:00", "tomorrow"):
        reply = stack.client().post("/v1/notifications", json={**body, "send_at": send_at})
        assert reply.status_code == 422, send_at
        assert reply.json()["error"] == "validation_error"


def test_a_past_send_at_goes_out_now(stack: Stack, user: dict[str, Any], template: str) -> None:
    accepted = schedule(stack, user, template, later(-60))
    assert accepted["status"] == "queued"
    assert stack.wait_for_status(accepted["notification_id"], {"sent"})["status"] == "sent"


def test_the_batch_endpoint_schedules_each_item_at_its_own_time(
    stack: Stack, user: dict[str, Any], template: str
) -> None:
    item = {"user_id": user["user_id"], "template_key": template, "channels": ["email"],
            "message_data": {"name": "Ada"}}
    reply = stack.client().post("/v1/notifications/batch", json={"notifications": [
        {**item, "send_at": later(3600).isoformat()}, item]})
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["data"]
    assert first["data"]["status"] == "scheduled" and second["data"]["status"] == "queued"
    cancel = stack.client().delete(f"/v1/notifications/{first['data']['notification_id']}")
    assert cancel.status_code == 200


def test_a_scheduled_notification_survives_a_restart_of_the_whole_node(
    provider_settings: Any, simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Accepted by one node, which is then stopped; a new node (its own actor system and HTTP
    server, the same PostgreSQL and RabbitMQ) delivers it at its time."""
    simulator.state.reset()
    at = later(12.0)  # past the first node's stop, whatever it takes
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("first")) as first:
        user_id, template_key = first.code_user_and_template()
        reply = first.client().post("/v1/notifications", json={
            "user_id": user_id, "template_key": template_key, "channels": ["email"],
            "message_data": {"code": "after-restart"}, "send_at": at.isoformat()})
        assert reply.status_code == 202, reply.text
        notification_id = reply.json()["data"]["notification_id"]
    assert simulator.state.messages("email") == []
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("second")) as second:
        final = second.wait_for_status(notification_id, {"sent"}, timeout=30)
    assert final["status"] == "sent"
    [email] = simulator.state.messages("email")
    assert email["body"] == "Your code: after-restart"
    assert email["started_at"] >= at.timestamp()
