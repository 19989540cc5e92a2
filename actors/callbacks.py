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
from clarion.supervision.breaker import OPEN, CircuitBreaker

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
        # One breaker per destination host, kept here: a customer's endpoint being down is
        # theirs, not an operator's alert (the deps' breakers are reported to the Supervisor).
        self._hosts: dict[str, CircuitBreaker] = {}
        self._host_of: dict[str, str] = {}  # principal → its endpoint's host, as last leased

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
        cap = self.settings.callback_host_concurrency
        blocked = sorted({principal for principal, host in self._host_of.items()
                          if self._per_host[host] >= cap
                          or not self._breaker(host).would_allow()})
        try:
            due = self.deps.stored(lambda conn: status_callbacks.lease_due(
                conn, self._owner, room, self._lease, cap, blocked))
        except psycopg.Error as exc:
            self.log.warning("leasing callbacks failed", extra={"error": str(exc)})
            return
        held_back: dict[float, list[int]] = {}  # delay → ids
        for callback in due:
            host = _host(callback.url)
            self._host_of[callback.principal] = host
            if callback.callback_id in self._in_flight:
                continue  # our own lapsed lease, taken again: its POST is still running
            breaker = self._breaker(host)
            if self._per_host[host] >= cap or not breaker.allow():
                # Due again when the host has room (soon) or its breaker lets a trial through.
                wait = breaker.retry_after() if breaker.state == OPEN else 1.0
                held_back.setdefault(wait, []).append(callback.callback_id)
                continue
            self._per_host[host] += 1
            self._in_flight[callback.callback_id] = callback
            self._pool.submit(callback.callback_id, {
                "url": callback.url, "secret": callback.secret,
                "callback_id": f"cb_{callback.callback_id}",
                "body": json.dumps(callback.payload(), separators=(",", ":"))})
        for wait, ids in held_back.items():
            try:
                self.deps.stored(lambda conn, ids=ids, wait=wait: status_callbacks.release(
                    conn, self._owner, ids, wait))
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
        breaker = self._breaker(host)
        code = result.error_code or ""
        if result.ok or not (code in ("timeout", "connection_error", "http_429")
                             or code.startswith("http_5")):
            breaker.success()
        else:
            breaker.failure()

    def _breaker(self, host: str) -> CircuitBreaker:
        if host not in self._hosts:
            self._hosts[host] = CircuitBreaker(f"callback:{host}",
                                               self.settings.breaker_failure_threshold,
                                               self.settings.breaker_reset_timeout)
        return self._hosts[host]

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
