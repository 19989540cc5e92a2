"""Outages of the services themselves: Redis, PostgreSQL and RabbitMQ stopped and started again
under a running Clarion. Each test restores the service it stopped, whatever happens."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import Stack, port_open, running_stack

pytestmark = pytest.mark.e2e


def _wait_port(port: int, up: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port, timeout=0.5) != up:
        assert time.monotonic() < deadline, f"port {port} still {'down' if up else 'up'}"
        time.sleep(0.2)


def _run(*command: str) -> None:
    subprocess.run(command, check=False, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("outages"),
                       breaker_reset_timeout=2.0) as running:
        yield running


@pytest.fixture(scope="module")
def target(stack: Stack) -> tuple[str, str]:
    return stack.code_user_and_template()


def _post(stack: Stack, target: tuple[str, str], code: str, **headers: str) -> Any:
    user_id, key = target
    return stack.client().post("/v1/notifications", headers=headers, json={
        "user_id": user_id, "template_key": key, "message_data": {"code": code}})


def test_without_redis_notifications_still_go_through_and_idempotency_holds(
    stack: Stack, target: tuple[str, str]
) -> None:
    _post(stack, target, "warm-up")  # the API key is verified and remembered
    _run("redis-cli", "-p", "6379", "shutdown", "nosave")
    try:
        _wait_port(6379, up=False, timeout=10)
        first = _post(stack, target, "no-redis", **{"Idempotency-Key": "no-redis-key"})
        assert first.status_code == 202, first.text
        again = _post(stack, target, "no-redis", **{"Idempotency-Key": "no-redis-key"})
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["data"]["notification_id"] == first.json()["data"]["notification_id"]
        final = stack.wait_for_status(first.json()["data"]["notification_id"], {"sent"})
        assert final["status"] == "sent"
    finally:
        _run("redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
             "--save", "", "--appendonly", "no")
        _wait_port(6379, up=True, timeout=20)
    assert _post(stack, target, "redis-back").status_code == 202


def test_without_postgresql_requests_fail_fast_and_recover_without_a_restart(
    stack: Stack, target: tuple[str, str]
) -> None:
    version = subprocess.run(["ls", "/etc/postgresql"], capture_output=True,
                             text=True).stdout.split()[-1]
    _post(stack, target, "warm-up")
    _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast")
    try:
        _wait_port(5432, up=False, timeout=30)
        started = time.monotonic()
        reply = _post(stack, target, "no-postgres")
        assert time.monotonic() - started < 3
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"] in ("storage_unavailable", "auth_unavailable")
        assert "retry-after" in reply.headers
        # A read the HTTP layer runs itself says the same, never a 500.
        for path in ("/v1/notifications?limit=1", "/v1/system/providers"):
            read = stack.client().get(path)
            assert read.status_code == 503, (path, read.text)
            assert read.json()["error"] in ("storage_unavailable", "auth_unavailable")
    finally:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start")
        _wait_port(5432, up=True, timeout=60)
    deadline = time.monotonic() + 20
    while (reply := _post(stack, target, "postgres-back")).status_code != 202:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.5)
    assert stack.wait_for_status(reply.json()["data"]["notification_id"], {"sent"})["status"] \
        == "sent"


def test_while_rabbitmq_is_stopped_notifications_are_still_accepted_and_all_go_out_after(
    stack: Stack, target: tuple[str, str]
) -> None:
    stack.simulator.state.update_config({"latency_ms": 200})  # leave work in the queues
    accepted = []
    for i in range(20):
        reply = _post(stack, target, f"before-outage-{i}")
        assert reply.status_code == 202
        accepted.append(reply.json()["data"]["notification_id"])
    _run("rabbitmqctl", "-q", "stop_app")
    try:
        _wait_port(5672, up=False, timeout=30)
        timings = []
        for i in range(8):
            started = time.monotonic()
            reply = _post(stack, target, f"during-outage-{i}")
            timings.append(time.monotonic() - started)
            # The transactional outbox: committed to PostgreSQL is accepted, broker or not.
            assert reply.status_code == 202, reply.text
            accepted.append(reply.json()["data"]["notification_id"])
        assert max(timings) < 2, timings
        waiting = stack.client().get(f"/v1/notifications/{accepted[-1]}").json()["data"]
        assert waiting["status"] == "queued"
    finally:
        _run("rabbitmqctl", "-q", "start_app")
        _run("rabbitmqctl", "-q", "await_startup")
        _wait_port(5672, up=True, timeout=60)
        stack.simulator.state.update_config({"latency_ms": 0})
    reply = _post(stack, target, "after-outage")
    assert reply.status_code == 202, reply.text
    accepted.append(reply.json()["data"]["notification_id"])
    for notification_id in accepted:
        final = stack.wait_for_status(notification_id, {"sent", "failed"}, timeout=40)
        assert final["status"] == "sent", final
    bodies = [m["body"] for m in stack.simulator.state.messages("email")]
    for i in range(8):  # each accepted during the outage reached the provider exactly once
        assert bodies.count(f"Your code: during-outage-{i}") == 1
