"""Finding: the HTTP bridge's queue had no bound, and a request that timed out while queued (its
client already told `504`) was still sent to the Gateway later and carried out. The queue is now
bounded (`503 overloaded` beyond it) and an expired request is dropped before it is sent. (A
request sent in time and answered late is the Gateway's to refuse: it checks `received_at`.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clarion.actors.messages import NotificationRequest, Reply
from clarion.http.bridge import ActorBridge
from clarion.persistence import database
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("bridge")) as running:
        yield running


@pytest.fixture
def bridge(stack: Stack) -> Iterator[ActorBridge]:
    """A bridge of its own (one batch in flight, 0.5 s timeout, three requests queued at most)."""
    own = ActorBridge(stack.settings.actor_port, timeout=0.5, max_in_flight=1, queue_limit=3)
    own.start()
    yield own
    own.stop()


def _created(stack: Stack, request_ids: list[str]) -> set[str]:
    with database.connect(stack.settings.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT request_id FROM notifications WHERE request_id = ANY(%s)",
                            (request_ids,)).fetchall()
    return {row[0] for row in rows}


def test_a_request_that_timed_out_in_the_queue_is_never_carried_out(
        stack: Stack, bridge: ActorBridge) -> None:
    user_id, key = stack.code_user_and_template()
    tag = uuid.uuid4().hex[:8]

    def item(i: int) -> NotificationRequest:
        return NotificationRequest(uuid.uuid4().hex, user_id, key, {"code": str(i)},
                                   request_id=f"{tag}-{i}", received_at=time.time())

    async def frozen_gateway() -> tuple[Reply, list[Reply]]:
        first = asyncio.create_task(bridge.request(item(0)))
        await asyncio.sleep(0.1)  # sent: the one batch allowed in flight is out, unanswered
        queued = [asyncio.create_task(bridge.request(item(i))) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        overflow = await bridge.request(item(4))
        return overflow, list(await asyncio.gather(first, *queued))

    gateway = stack.actors()["gateway"]["pid"]
    os.kill(gateway, signal.SIGSTOP)
    try:
        overflow, replies = asyncio.run(frozen_gateway())
    finally:
        os.kill(gateway, signal.SIGCONT)

    assert (overflow.status, overflow.error_code) == (503, "overloaded")
    assert [r.status for r in replies] == [504, 504, 504, 504]
    # The Gateway is back: the bridge takes its queue again (dropping the expired requests)
    # and carries on. A refused request was never queued, so asking again makes no duplicate.
    deadline = time.monotonic() + 10
    while (after := asyncio.run(bridge.request(item(5)))).error_code == "overloaded" \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after.status == 202, after
    assert _created(stack, [f"{tag}-{i}" for i in (1, 2, 3, 4, 5)]) == {f"{tag}-5"}
