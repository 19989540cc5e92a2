"""Lanes end to end: a bulk backlog never delays transactional notifications.

20,000 bulk notifications are enqueued through the batch endpoint (its default priority is
`bulk`), then 100 transactional ones are sent one by one while the backlog drains, with the
provider answering every call in 100 ms. With lanes on, each transactional email reaches the
provider within 1 s of its 202 (p99); with lanes off (one queue per channel) they wait behind
the backlog, which is what the lanes are for.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pika
import pytest

from clarion.persistence import broker
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

BULK = 20_000
TRANSACTIONAL = 100
PROVIDER_LATENCY_MS = 100


def purge_work_queues(amqp_url: str) -> None:
    """What a stack left queued would be delivered by the next stack of the session."""
    conn = broker.connect(amqp_url, "test-lanes-purge")
    try:
        channel = conn.channel()
        for name in [*broker.WORK_QUEUES.values(), *broker.BULK_QUEUES.values()]:
            channel.queue_purge(name)
    finally:
        conn.close()


@pytest.fixture(scope="module", params=[True, False], ids=["lanes-on", "lanes-off"])
def stack(request: pytest.FixtureRequest, provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       lanes=request.param, rate_limit_per_second=0) as running:
        yield running
    purge_work_queues(provider_settings.amqp_url)


def enqueue_bulk(stack: Stack, user_id: str, template_key: str) -> None:
    def batch(start: int) -> int:
        items = [{"user_id": user_id, "template_key": template_key, "channels": ["email"],
                  "message_data": {"code": f"bulk-{start + i}"}} for i in range(1000)]
        with httpx.Client(base_url=stack.base_url, timeout=60,
                          headers={"Authorization": f"Bearer {stack.api_key}"}) as client:
            reply = client.post("/v1/notifications/batch", json={"notifications": items})
        assert reply.status_code == 200, reply.text
        return int(reply.json()["meta"]["accepted"])

    with ThreadPoolExecutor(2) as pool:
        assert sum(pool.map(batch, range(0, BULK, 1000))) == BULK


def test_the_batch_endpoint_defaults_to_bulk_and_a_single_post_to_normal(stack: Stack) -> None:
    user_id, template_key = stack.code_user_and_template()
    client = stack.client()
    body = {"user_id": user_id, "template_key": template_key, "channels": ["email"],
            "message_data": {"code": "x"}}
    batch = client.post("/v1/notifications/batch", json={"notifications": [
        body, {**body, "priority": "normal"}, {**body, "priority": "low"}]})
    single = client.post("/v1/notifications", json=body)
    ids = [r["data"]["notification_id"] for r in batch.json()["data"]]
    ids.append(single.json()["data"]["notification_id"])
    priorities = [client.get(f"/v1/notifications/{i}").json()["data"]["priority"] for i in ids]
    assert priorities == ["bulk", "normal", "bulk", "normal"]
    for notification_id in ids:
        assert stack.wait_for_status(notification_id, {"sent"})["status"] == "sent"


def test_bulk_messages_travel_in_their_own_queue(stack: Stack) -> None:
    """Seen from the broker: with the delivery paused, a bulk notification waits in
    email.bulk.queue and a normal one in email.queue (lanes on), both in email.queue (off)."""
    conn = broker.connect(stack.settings.amqp_url, "test-lanes-peek")
    try:
        channel = conn.channel()
        # A queue of our own bound to both routing keys sees what the exchange routes.
        peek = channel.queue_declare("", exclusive=True).method.queue
        for key in ("email", "email.bulk"):
            channel.queue_bind(peek, broker.EXCHANGE, routing_key=key)
        user_id, template_key = stack.code_user_and_template()
        client = stack.client()
        body = {"user_id": user_id, "template_key": template_key, "channels": ["email"],
                "message_data": {"code": "peek"}}
        assert client.post("/v1/notifications", json={**body, "priority": "bulk"}).status_code \
            == 202
        assert client.post("/v1/notifications", json=body).status_code == 202
        keys: list[str] = []
        deadline = time.monotonic() + 10
        while len(keys) < 2 and time.monotonic() < deadline:
            method, _, _ = channel.basic_get(peek, auto_ack=True)
            if isinstance(method, pika.spec.Basic.GetOk):
                keys.append(method.routing_key)
            else:
                time.sleep(0.05)
    finally:
        conn.close()
    assert sorted(keys) == (["email", "email.bulk"] if stack.settings.lanes
                            else ["email", "email"])


def test_a_bulk_backlog_does_not_delay_transactional_notifications(stack: Stack) -> None:
    """Last in the module: it leaves the backlog draining (purged when the stack stops)."""
    lanes = stack.settings.lanes
    state = stack.simulator.state
    state.reset()
    state.update_config({"latency_ms": PROVIDER_LATENCY_MS})
    user_id, template_key = stack.code_user_and_template()
    enqueue_bulk(stack, user_id, template_key)
    bulk_before = len(state.messages("email"))

    accepted_at: dict[str, float] = {}
    client = stack.client()
    for i in range(TRANSACTIONAL):
        code = f"tx-{uuid.uuid4().hex[:8]}"
        reply = client.post("/v1/notifications", json={
            "user_id": user_id, "template_key": template_key, "channels": ["email"],
            "message_data": {"code": code}})
        assert reply.status_code == 202, reply.text
        accepted_at[f"Your code: {code}"] = time.time()
        time.sleep(0.05)

    deadline = time.monotonic() + 180
    reached: dict[str, float] = {}
    while len(reached) < TRANSACTIONAL and time.monotonic() < deadline:
        reached = {m["body"]: m["started_at"] for m in state.messages("email")
                   if m["body"] in accepted_at}
        time.sleep(0.2)
    assert len(reached) == TRANSACTIONAL
    delays = sorted(reached[body] - accepted_at[body] for body in accepted_at)
    p50, p99 = statistics.median(delays), delays[int(0.99 * (len(delays) - 1))]
    bulk_during = len(state.messages("email")) - bulk_before
    state.update_config({"latency_ms": 0})
    print(f"\nlanes {'on' if lanes else 'off'}: 202 → provider for {TRANSACTIONAL} transactional"
          f" emails behind {BULK} bulk: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms,"
          f" max {delays[-1] * 1000:.0f} ms; bulk emails delivered meanwhile: {bulk_during}")

    # The backlog was still there while they were sent: the lanes were tested under it.
    assert bulk_during < BULK
    if lanes:
        assert p99 <= 1.0
    else:
        # One queue: the transactional emails wait behind the backlog.
        assert p50 > 1.0
