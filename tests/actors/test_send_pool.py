"""Provider calls on worker threads, handed back through a watched socket (actors/send_pool.py)."""

from __future__ import annotations

import select
import threading
import time
from typing import Any

from clarion.actors.providers.base import DeliveryResult
from clarion.actors.send_pool import SendPool


class GatedProvider:
    """Each call waits until the test opens the gate; a message with "boom" raises."""

    channel, name = "email", "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()

    def send(self, message: dict[str, Any]) -> DeliveryResult:
        self.gate.wait(5)
        if message.get("boom"):
            raise RuntimeError("provider bug")
        return DeliveryResult(True, provider_message_id=f"m-{message['n']}")

    def close(self) -> None:
        pass


def _wait_readable(pool: SendPool, timeout: float = 5.0) -> bool:
    readable, _, _ = select.select([pool.fileno()], [], [], timeout)
    return bool(readable)


def test_completions_wake_the_owner_once_and_come_back_under_their_keys() -> None:
    provider = GatedProvider()
    pool = SendPool(provider, concurrency=4, name="test-send")
    try:
        for n in range(3):
            pool.submit(("n", n), {"n": n})
        assert pool.in_flight == 3
        assert not _wait_readable(pool, 0.1)  # nothing finished: the owner sleeps

        provider.gate.set()
        assert _wait_readable(pool)
        deadline = time.monotonic() + 5
        done: list[Any] = []
        while len(done) < 3 and time.monotonic() < deadline:
            done += pool.completions()
            time.sleep(0.01)

        assert sorted(key for key, _ in done) == [("n", 0), ("n", 1), ("n", 2)]
        assert all(result.ok for _, result in done)
        assert pool.in_flight == 0
        # A late wake-up may be left (one worker woke the owner after it had taken the rest):
        # harmless, and the next call drains it.
        assert pool.completions() == []
        assert not _wait_readable(pool, 0.05)
    finally:
        pool.close()


def test_a_provider_that_raises_becomes_a_failed_result_not_a_dead_thread() -> None:
    provider = GatedProvider()
    provider.gate.set()
    pool = SendPool(provider, concurrency=1, name="test-send")
    try:
        pool.submit("bad", {"n": 1, "boom": True})
        pool.submit("good", {"n": 2})
        deadline = time.monotonic() + 5
        done: dict[Any, DeliveryResult] = {}
        while len(done) < 2 and time.monotonic() < deadline:
            _wait_readable(pool, 0.5)
            done.update(pool.completions())

        assert done["bad"].error_code == "provider_exception"
        assert "provider bug" in (done["bad"].error or "")
        assert done["good"].ok
    finally:
        pool.close()


class OrderedProvider:
    """Records the order calls reach it; the first call waits for the test's gate."""

    channel, name = "email", "ordered"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.order: list[str] = []

    def send(self, message: dict[str, Any]) -> DeliveryResult:
        if message["n"] == "first":
            self.gate.wait(5)
        self.order.append(message["n"])
        return DeliveryResult(True)

    def close(self) -> None:
        pass


def test_an_urgent_call_goes_before_every_bulk_call_waiting() -> None:
    provider = OrderedProvider()
    pool = SendPool(provider, concurrency=1, name="test-send")
    try:
        pool.submit("first", {"n": "first"})  # holds the only thread
        time.sleep(0.05)
        for i in range(3):
            pool.submit(f"bulk-{i}", {"n": f"bulk-{i}"}, urgent=False)
        pool.submit("urgent", {"n": "urgent"})
        provider.gate.set()
        deadline = time.monotonic() + 5
        done: list[Any] = []
        while len(done) < 5 and time.monotonic() < deadline:
            _wait_readable(pool, 1.0)
            done.extend(pool.completions())
        assert provider.order == ["first", "urgent", "bulk-0", "bulk-1", "bulk-2"]
        assert pool.in_flight == 0
    finally:
        pool.close()


def test_threads_start_as_calls_need_them_up_to_the_concurrency() -> None:
    provider = GatedProvider()
    pool = SendPool(provider, concurrency=3, name="test-send")
    try:
        for n in range(5):
            pool.submit(n, {"n": n})
        assert len([t for t in threading.enumerate() if t.name.startswith("test-send")]) == 3
        provider.gate.set()
    finally:
        pool.close()
