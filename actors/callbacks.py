"""Callbacks actor: POSTs each status change of a notification to the endpoint its API key
registered (README "Status callbacks"), signed, in order per notification, retried with backoff
for `CLARION_CALLBACK_RETRY_WINDOW` seconds (a day), then dead-lettered.

    status_callbacks (rows the triggers wrote) ──lease due heads──▶ actor ──▶ SendPool ──▶ POST
                                                 ▲                              │
                                                 └───── record (delivered / retry / dead) ◀┘

Its own actor and its own threads, so that a slow or failing customer endpoint never slows a
delivery: each destination host has its own circuit breaker and at most
`CLARION_CALLBACK_HOST_CONCURRENCY` POSTs in flight; one host's backlog waits while the others'
callbacks go out. Runs on every gateway host; leases keep two hosts off the same change.

Takes:   nothing but its tick and its pool's wake-ups. The endpoints' secrets are read from
         PostgreSQL here, never carried in a message.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.providers.base import DeliveryResult
from clarion.actors.providers.callback_poster import CallbackPoster
from clarion.actors.send_pool import SendPool
from clarion.persistence import status_callbacks
from clarion.persistence.status_callbacks import Attempted, DueCallback
from clarion.supervision import metrics
from clarion.supervision.backoff import backoff_delay

MAX_BACKOFF = 3600.0  # the longest wait between two attempts of one callback


def retry_delay(attempt: int, first: float, retry_after: float | None = None) -> float:
    """Seconds before the attempt after `attempt` (1-based): doubling from `first`, at most an
    hour, with jitter; at least what the endpoint asked for (Retry-After)."""
    wait = backoff_delay(attempt, base=first, cap=MAX_BACKOFF)
    return max(wait, min(retry_after or 0.0, MAX_BACKOFF))


class Callbacks(ClarionActor):
    TICK_SECONDS = 0.25  # how soon a new change is noticed

    def setup(self) -> None:
        settings = self.settings
        self._poster = CallbackPoster(settings.callback_timeout, settings.callbacks_allow_private,
                                      settings.callback_concurrency)
        self._pool = SendPool(self._poster, settings.callback_concurrency, "callbacks")
        self._owner = f"{settings.node_name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = settings.callback_timeout * 2 + 5
        self._in_flight: dict[int, DueCallback] = {}
        self._per_host: Counter[str] = Counter()
        self._finished: list[Attempted] = []  # not yet recorded

    def teardown(self) -> None:
        if hasattr(self, "_pool"):
            self._pool.close()
            self._poster.close()

    def watched_filenos(self) -> list[int]:
        return [self._pool.fileno()] if hasattr(self, "_pool") else []

    def receiveMsg_WatchMessage(self, message: Any, sender: Any) -> None:
        self._collect()
        self._record()

    def on_tick(self) -> None:
        self._collect()
        self._record()
        self._start_due()

    # -- steps --------------------------------------------------------------------------------

    def _start_due(self) -> None:
        room = self.settings.callback_concurrency - len(self._in_flight)
        if room <= 0 or not self.deps.breaker("postgresql").allow():
            return
        try:
            due = self.deps.stored(lambda conn: status_callbacks.lease_due(
                conn, self._owner, room, self._lease))
        except psycopg.Error as exc:
            self.log.warning("leasing callbacks failed", extra={"error": str(exc)})
            return
        held_back: list[int] = []
        for callback in due:
            host = _host(callback.url)
            if (self._per_host[host] >= self.settings.callback_host_concurrency
                    or not self.deps.breaker(f"callback:{host}").allow()):
                held_back.append(callback.callback_id)  # due again on a later tick
                continue
            self._per_host[host] += 1
            self._in_flight[callback.callback_id] = callback
            self._pool.submit(callback.callback_id, {
                "url": callback.url, "secret": callback.secret,
                "callback_id": f"cb_{callback.callback_id}",
                "body": json.dumps(callback.payload(), separators=(",", ":"))})
        if held_back:
            try:
                self.deps.stored(lambda conn: status_callbacks.release(conn, self._owner,
                                                                      held_back))
            except psycopg.Error:
                pass  # the leases lapse on their own

    def _collect(self) -> None:
        for callback_id, result in self._pool.completions():
            callback = self._in_flight.pop(int(callback_id), None)  # type: ignore[call-overload]
            if callback is None:
                continue
            host = _host(callback.url)
            self._per_host[host] -= 1
            self._judge(host, result)
            metrics.CALLBACKS.labels("delivered" if result.ok else "failed").inc()
            self._finished.append(Attempted(
                callback.callback_id, result.ok, result.error_code, result.error,
                None if result.ok else retry_delay(callback.attempts + 1,
                                                   self.settings.callback_backoff,
                                                   result.retry_after)))

    def _judge(self, host: str, result: DeliveryResult) -> None:
        """Only the endpoint's own trouble (no answer, 5xx, 429) counts against its host."""
        breaker = self.deps.breaker(f"callback:{host}")
        code = result.error_code or ""
        if result.ok or not (code in ("timeout", "connection_error", "http_429")
                             or code.startswith("http_5")):
            breaker.success()
        else:
            breaker.failure()

    def _record(self) -> None:
        if not self._finished or not self.deps.breaker("postgresql").allow():
            return
        finished = self._finished
        try:
            dead = self.deps.stored(lambda conn: status_callbacks.record_attempts(
                conn, self._owner, self.settings.callback_retry_window, finished))
        except psycopg.Error as exc:
            self.log.warning("recording callbacks failed; will retry", extra={
                "error": str(exc)})
            return  # kept: recorded on a later pump (the leases may lapse: then sent again)
        self._finished = []
        for a in finished:
            if not a.ok:
                self.log.warning("status callback failed", extra={
                    "callback_id": a.callback_id, "error_code": a.error_code,
                    "retry_in": a.retry_in})
        if dead:
            metrics.CALLBACKS.labels("dead_lettered").inc(len(dead))
            self.log.error("status callbacks dead-lettered", extra={"callback_ids": dead})


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
