"""Fault injection on a running Clarion: a flaky provider, actors killed under load, duplicates.

Bounded in time: each test drives a fixed number of requests and waits with deadlines.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.stack import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_simulator")]


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("faults"),
                       breaker_reset_timeout=1.0) as running:
        yield running


@pytest.fixture(scope="module")
def target(stack: Stack) -> tuple[str, str]:
    return stack.code_user_and_template(push_tokens=[f"token-{uuid.uuid4().hex[:8]}"])


def delivered_ids(stack: Stack, channel: str) -> Counter[str]:
    """How many times the simulator accepted each notification on a channel."""
    counts: Counter[str] = Counter()
    for record in stack.simulator.state.messages(channel):
        raw = record["raw"]
        if channel == "email":
            notification_id = raw.get("custom_args", {}).get("notification_id")
        else:
            notification_id = raw["message"]["data"]["notification_id"]
        counts[notification_id] += 1
    return counts


def test_with_half_of_all_calls_failing_everything_ends_sent_or_dead_and_replays_to_sent(
    stack: Stack, target: tuple[str, str]
) -> None:
    user_id, key = target
    client = stack.client()
    stack.simulator.state.update_config({"fail_ratio": {"email": 0.5}, "fail_status": 500})
    ids = []
    for i in range(40):
        reply = client.post("/v1/notifications", json={
            "user_id": user_id, "template_key": key, "channels": ["email"],
            "message_data": {"code": f"flaky-{i}"}})
        assert reply.status_code == 202
        ids.append(reply.json()["data"]["notification_id"])
    finals = {i: stack.wait_for_status(i, {"sent", "failed"}, timeout=40) for i in ids}
    assert {f["status"] for f in finals.values()} <= {"sent", "failed"}
    sent = [i for i, f in finals.items() if f["status"] == "sent"]
    dead = [i for i, f in finals.items() if f["status"] == "failed"]
    assert sent, "with one call in two failing, most deliveries get through within 3 attempts"
    counts = delivered_ids(stack, "email")
    assert all(counts[i] == 1 for i in sent), "a notification reached the provider twice"
    assert all(counts[i] == 0 for i in dead)

    stack.simulator.state.update_config({"fail_ratio": {"email": 0.0}})
    if dead:
        reply = client.post("/v1/dlq/replay", json={"ids": [
            d["dead_letter_id"] for d in client.get("/v1/dlq", params={"limit": 200}).json()
            ["data"] if d["notification_id"] in dead]})
        assert reply.json()["data"]["count"] == len(dead)
    for notification_id in dead:
        assert stack.wait_for_status(notification_id, {"sent"}, timeout=20)["status"] == "sent"
    assert all(c == 1 for c in delivered_ids(stack, "email").values())


def test_fifty_parallel_requests_with_one_idempotency_key_make_one_notification(
    stack: Stack, target: tuple[str, str]
) -> None:
    user_id, key = target
    idempotency_key = f"dup-{uuid.uuid4()}"
    body = {"user_id": user_id, "template_key": key, "message_data": {"code": "dup"}}
    start = threading.Barrier(50)

    def post(_: int) -> tuple[int, str | None]:
        client = stack.client()
        start.wait()
        reply = client.post("/v1/notifications", json=body,
                            headers={"Idempotency-Key": idempotency_key})
        data = reply.json()["data"] or {}
        return reply.status_code, data.get("notification_id")

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(post, range(50)))
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {202, 409}, statuses
    ids = {nid for status, nid in results if status == 202}
    assert len(ids) == 1
    [notification_id] = ids
    assert stack.wait_for_status(notification_id, {"sent"})["status"] == "sent"
    time.sleep(0.5)  # deliberately: room for a duplicate delivery to arrive, if there were one
    assert delivered_ids(stack, "email")[notification_id] == 1
    assert delivered_ids(stack, "push")[notification_id] == 1
    # After the first finished, the key answers with it.
    again = stack.client().post("/v1/notifications", json=body,
                                headers={"Idempotency-Key": idempotency_key})
    assert again.status_code == 202
    assert again.json()["data"]["notification_id"] == notification_id


@pytest.mark.parametrize("victim", ["users", "templates", "publisher", "gateway", "email",
                                    "push"])
def test_killing_an_actor_under_a_steady_stream_loses_no_accepted_notification(
    stack: Stack, target: tuple[str, str], victim: str
) -> None:
    user_id, key = target
    accepted: list[str] = []
    refused: Counter[tuple[int, str]] = Counter()
    stop = threading.Event()

    def stream() -> None:
        client = stack.client()
        i = 0
        while not stop.is_set() and i < 400:
            i += 1
            reply = client.post("/v1/notifications", json={
                "user_id": user_id, "template_key": key,
                "message_data": {"code": f"{victim}-{i}"}})
            if reply.status_code == 202:
                accepted.append(reply.json()["data"]["notification_id"])
            else:
                refused[(reply.status_code, reply.json()["error"])] += 1
            time.sleep(0.01)

    before = stack.actors()[victim]
    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(0.5)  # deliberately: the kill lands in the middle of the stream
        os.kill(before["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            now = stack.actors()[victim]
            if now["state"] == "running" and now["pid"] != before["pid"]:
                break
            assert time.monotonic() < deadline, f"{victim} was not restarted"
            time.sleep(0.05)
        # Keep sending through the restarted actor until ten more got through.
        after_restart = len(accepted)
        deadline = time.monotonic() + 20
        while len(accepted) < after_restart + 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(accepted) >= after_restart + 10, "no notification accepted after the restart"
    finally:
        stop.set()
        thread.join(30)

    # Refusals during the restart are answers (retry), never silence or a 500.
    assert {status for status, _ in refused} <= {503, 504}, refused
    for notification_id in accepted:
        final = stack.wait_for_status(notification_id, {"sent", "failed", "partially_sent"},
                                      timeout=30)
        assert final["status"] == "sent", final
    email, push = delivered_ids(stack, "email"), delivered_ids(stack, "push")
    assert all(email[i] >= 1 and push[i] >= 1 for i in accepted)
