"""Supervision on a real actor system: restarts after kill -9, no orphans, nothing lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import Stack, new_stack_settings, start_stack, stop_stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(provider_settings: Any, simulator: Any, tmp_path: Path) -> Iterator[Stack]:
    simulator.state.reset()
    running = start_stack(new_stack_settings(provider_settings), simulator, tmp_path)
    yield running
    simulator.state.reset()
    stop_stack(running)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_delivery_actor_is_recreated_and_loses_nothing_it_had_accepted(
    stack: Stack,
) -> None:
    user_id, key = stack.code_user_and_template()
    client = stack.client()
    # Slow provider: the kill lands while every message is in flight, unacknowledged.
    stack.simulator.state.update_config({"latency_ms": 300})
    codes = [f"before-{i}" for i in range(30)]
    accepted = []
    for code in codes:
        reply = client.post("/v1/notifications", json={
            "user_id": user_id, "template_key": key, "message_data": {"code": code}})
        assert reply.status_code == 202, reply.text
        accepted.append(reply.json()["data"]["notification_id"])

    before = stack.actors()["email"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        email = stack.actors()["email"]
        return email["restarts"] == 1 and email["state"] == "running" \
            and email["pid"] not in (None, before["pid"])

    _wait(restarted, 15, "the Supervisor to recreate the email actor")
    assert not _alive(before["pid"])
    stack.simulator.state.update_config({"latency_ms": 0})

    after = client.post("/v1/notifications", json={
        "user_id": user_id, "template_key": key, "message_data": {"code": "after-kill"}})
    assert after.status_code == 202
    accepted.append(after.json()["data"]["notification_id"])

    for notification_id in accepted:
        final = stack.wait_for_status(notification_id, {"sent", "failed"}, timeout=30)
        assert final["status"] == "sent", final
    delivered_bodies = {m["body"] for m in stack.simulator.state.messages("email")}
    for code in [*codes, "after-kill"]:
        assert f"Your code: {code}" in delivered_bodies
    # The other actors were left alone (one_for_one).
    assert all(c["restarts"] == 0 for name, c in stack.actors().items() if name != "email")


def test_every_actor_exits_when_the_supervisor_dies_and_stopping_leaves_no_process(
    stack: Stack,
) -> None:
    children = stack.actors()
    pids = [c["pid"] for c in children.values()]
    assert all(_alive(pid) for pid in pids)
    # Every actor is in the process group the launcher reported, so stopping can reap them all.
    assert {os.getpgid(pid) for pid in pids} == {stack.pgid}
    supervisor_pid = stack.client().get("/v1/system/actors").json()["data"]["supervisor"]["pid"]

    os.kill(supervisor_pid, signal.SIGKILL)
    # Thespian re-parents orphans instead of stopping them; each of ours notices and exits.
    _wait(lambda: not any(_alive(pid) for pid in pids), 10, "the orphaned actors to exit")

    stop_stack(stack)
    with pytest.raises(ProcessLookupError):
        os.killpg(stack.pgid, 0)


def test_several_delivery_actors_per_channel_share_its_queue_and_each_is_supervised(
    provider_settings: Any, simulator: Any, tmp_path: Path,
) -> None:
    from tests.stack import running_stack

    simulator.state.reset()
    with running_stack(provider_settings, simulator, tmp_path, delivery_actors=2) as stack:
        children = stack.actors()
        assert {"email", "email-2", "push", "push-2"} <= set(children)
        user_id, key = stack.code_user_and_template()
        client = stack.client()
        ids = []
        for i in range(40):
            reply = client.post("/v1/notifications", json={
                "user_id": user_id, "template_key": key, "message_data": {"code": f"s-{i}"}})
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["data"]["notification_id"])
        for notification_id in ids:
            assert stack.wait_for_status(notification_id, {"sent"})["status"] == "sent"
        bodies = [m["body"] for m in simulator.state.messages("email")]
        assert sorted(bodies) == sorted(f"Your code: s-{i}" for i in range(40))  # once each

        second = children["email-2"]
        os.kill(second["pid"], signal.SIGKILL)
        _wait(lambda: stack.actors()["email-2"]["restarts"] == 1
              and stack.actors()["email-2"]["state"] == "running", 15,
              "the Supervisor to recreate email-2")
    simulator.state.reset()
