"""The provider simulator's state, plus an index the benchmark can read without copying.

`SimulatorState.messages()` deep-copies every record under the lock the request handlers need;
with tens of thousands of records that would stall the simulator while we measure it. This
subclass records exactly as the simulator does and also keeps, per (notification_id, channel),
the first `received_at` (the simulator's own epoch timestamp): the notification id comes from the
email's `custom_args` (SendGrid) or the push's `data.notification_id` (FCM), as the simulator
stored them in `raw`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from clarion.simulator.state import SimulatorState


def notification_id_of(record: dict[str, Any]) -> str | None:
    raw = record.get("raw")
    if not isinstance(raw, dict):
        return None
    if record.get("channel") == "email":
        args = raw.get("custom_args")
        if not isinstance(args, dict):  # SendGrid also allows them per personalization
            personalizations = raw.get("personalizations") or [{}]
            args = personalizations[0].get("custom_args") if personalizations else None
        value = args.get("notification_id") if isinstance(args, dict) else None
    else:
        message = raw.get("message")
        data = message.get("data") if isinstance(message, dict) else None
        value = data.get("notification_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


class BenchSimulatorState(SimulatorState):
    def __init__(self) -> None:
        super().__init__()
        self._index_lock = threading.Condition()
        self._received: dict[tuple[str, str], float] = {}
        self._duplicates = 0
        self._unmatched = 0

    def record_message(self, record: dict[str, Any]) -> dict[str, Any]:
        stored = super().record_message(record)
        nid = notification_id_of(stored)
        with self._index_lock:
            if nid is None:
                self._unmatched += 1
            else:
                key = (nid, str(stored["channel"]))
                if key in self._received:
                    self._duplicates += 1  # at-least-once: a redelivery reached the provider
                else:
                    self._received[key] = float(stored["received_at"])
            self._index_lock.notify_all()
        return stored

    # -- what the benchmark reads ---------------------------------------------------------

    def received(self) -> dict[tuple[str, str], float]:
        """A shallow snapshot: (notification_id, channel) → first received_at."""
        with self._index_lock:
            return dict(self._received)

    def received_count(self) -> int:
        with self._index_lock:
            return len(self._received)

    def received_at(self, notification_id: str, channel: str) -> float | None:
        with self._index_lock:
            return self._received.get((notification_id, channel))

    def wait_for_ids(self, keys: list[tuple[str, str]],
                     timeout: float) -> dict[tuple[str, str], float]:
        """Block until every key was received or `timeout` s pass; return those received."""
        deadline = time.monotonic() + timeout
        with self._index_lock:
            while True:
                found = {k: self._received[k] for k in keys if k in self._received}
                remaining = deadline - time.monotonic()
                if len(found) == len(keys) or remaining <= 0:
                    return found
                self._index_lock.wait(min(remaining, 0.5))

    def counters(self) -> dict[str, int]:
        with self._index_lock:
            return {"distinct": len(self._received), "duplicates": self._duplicates,
                    "unmatched": self._unmatched}

    def clear_messages(self) -> None:
        super().clear_messages()
        with self._index_lock:
            self._received.clear()
            self._duplicates = 0
            self._unmatched = 0
