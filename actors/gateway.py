"""Gateway actor: turns a batch of notification requests into recorded, queued notifications.

Takes:   Peers (from the Supervisor), SendBatch (from the HTTP bridge), and the answers of its
         peers: UsersResolved, Rendered.
Answers: Replies to the batch's `reply_to`: 202 for each accepted notification, once it is
         committed to PostgreSQL with its deliveries and broker messages (the transactional
         outbox); a stable error code for each refused one. Then tells the Publisher to relay
         the new outbox rows (RelayOutbox).

A batch goes through users → render → persist. Several batches are in flight at once, each keyed
by its id; nothing here blocks on another actor. Management commands in a SendBatch (users,
templates, status) are handed to the actor that owns them, which answers the bridge itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.preferences import blocked, quiet_hours_end
from clarion.actors.rendering import language_fallbacks
from clarion.actors.messages import (
    NotificationRequest,
    Peers,
    RelayOutbox,
    RenderBatch,
    Rendered,
    Rendering,
    RenderItem,
    Replies,
    Reply,
    SendBatch,
    UsersResolved,
    ResolveUsers,
)
from clarion.persistence import cache
from clarion.persistence import notifications as notification_repo
from clarion.persistence.idempotency import IdempotencyStore
from clarion.persistence.broker import CHANNELS, Outgoing
from clarion.persistence.notifications import Inserted, NewDelivery, NewNotification
from clarion.persistence.records import User
from clarion.supervision import metrics
from clarion.supervision.backoff import backoff_delay

MAX_ATTEMPTS = 5  # per stage, for a storage that fails (then the caller gets the 503)
ACCEPTED = "notification accepted"  # the 202's message; a replay says exactly the same
# Seconds a Gateway's "alive" mark lasts in Redis (renewed every tick): a reservation of an
# idempotency key whose Gateway has been dead this long is taken over by a retry.
ALIVE_SECONDS = 3.0

# HTTP status for each way an item can be refused.
_NOT_FOUND = {"user_not_found", "template_not_found"}


@dataclass
class PendingBatch:
    batch_id: str
    reply_to: Any
    items: list[NotificationRequest]
    deadline: float
    stage: str = "users"  # users → render → persist
    users: dict[str, User] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)
    accepted: dict[str, NewNotification] = field(default_factory=dict)  # by correlation id
    hops: dict[str, float] = field(default_factory=dict)  # the batch's hop times
    attempts: int = 1  # of the current stage, for retries of a storage that failed
    rendering: tuple[RenderItem, ...] = ()  # what was asked of Templates (to ask again)
    reserved: set[str] = field(default_factory=set)  # items whose idempotency key we reserved
    keys: set[str] = field(default_factory=set)  # idempotency keys this batch holds in memory

    def open_items(self) -> list[NotificationRequest]:
        return [i for i in self.items if i.correlation_id not in self.replies]

    def refuse(self, item: NotificationRequest, status: int, code: str, message: str,
               retry_after: float | None = None) -> None:
        self.replies[item.correlation_id] = Reply(item.correlation_id, status, error_code=code,
                                                  message=message, retry_after=retry_after)


def fingerprint(item: NotificationRequest) -> str:
    """What makes two requests "the same" for an idempotency key."""
    canonical = json.dumps(
        [item.user_id, item.template_key, item.message_data, item.channels, item.language,
         item.template_version, item.priority, item.category],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def language_candidates(requested: str | None, user: User, default: str) -> tuple[str, ...]:
    """Requested language, the user's, each one's base (pt-BR → pt), then the default."""
    return language_fallbacks(requested, user.preferred_language, default)


def plan_deliveries(item: NotificationRequest, user: User, rendering: Rendering,
                    notification_id: str, now: datetime | None = None,
                    ) -> tuple[tuple[NewDelivery, ...], list[Outgoing]]:
    """Which channels this notification goes out on, and the broker message for each.

    A channel the user cannot receive or does not want is skipped with the reason; inside the
    user's quiet hours (unless the priority is high) a channel is scheduled for their end, its
    message kept until then.
    """
    now = now or datetime.now(timezone.utc)
    wanted = item.channels or CHANNELS
    preferences = user.preferences or {}
    quiet_until = None if item.priority == "high" else quiet_hours_end(preferences, now)
    headers = {"x-request-id": item.request_id or "", "x-notification-id": notification_id,
               "x-attempt": 1}
    common = {"notification_id": notification_id, "user_id": user.user_id,
              "request_id": item.request_id, "attempt": 1, "accepted_at": now.timestamp()}
    planned: list[tuple[str, str | None, dict[str, Any], dict[str, Any]]] = []
    deliveries: list[NewDelivery] = []
    if "email" in wanted:
        if not user.email_address:
            deliveries.append(NewDelivery("email", "skipped", None, error_code="no_email_address",
                                          error="the user has no email address"))
        else:
            content = {"subject": rendering.subject, "body": rendering.body,
                       "html_body": rendering.html_body}
            planned.append(("email", user.email_address, content,
                            {**common, "channel": "email", "to": user.email_address, **content}))
    if "push" in wanted:
        if not user.push_tokens:
            deliveries.append(NewDelivery("push", "skipped", None, error_code="no_push_tokens",
                                          error="the user has no push tokens"))
        else:
            content = {"title": rendering.push_title, "body": rendering.push_body,
                       "data": {"notification_id": notification_id,
                                "template_key": item.template_key}}
            planned.append(("push", f"{len(user.push_tokens)} token(s)", content,
                            {**common, "channel": "push", "tokens": list(user.push_tokens),
                             **content}))
    outgoing: list[Outgoing] = []
    for channel, recipient, content, body in planned:
        refusal = blocked(preferences, channel, item.category)
        if refusal is not None:
            deliveries.append(NewDelivery(channel, "skipped", None, error_code=refusal[0],
                                          error=refusal[1]))
        elif quiet_until is not None:
            deliveries.append(NewDelivery(
                channel, "scheduled", recipient, content, scheduled_for=quiet_until,
                pending_message={"channel": channel, "body": body, "headers": headers}))
        else:
            deliveries.append(NewDelivery(channel, "queued", recipient, content))
            outgoing.append(Outgoing(channel, body, headers))
    return tuple(deliveries), outgoing


class Gateway(ClarionActor):
    def setup(self) -> None:
        self._peers: Peers | None = None
        self._pending: dict[str, PendingBatch] = {}
        self._queued_timings: list[tuple[str, float]] = []  # (notification id, committed at)
        # Idempotency keys held by batches in flight here, so that a repeat is refused without
        # Redis (down, or not yet told) and one duplicate never costs its batch the others.
        self._keys_in_flight: set[str] = set()
        settings = self.settings
        assert settings is not None
        owner = f"{settings.node_name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._idempotency = IdempotencyStore(cache.connect(settings.redis_url), owner,
                                             pending_ttl=2 * settings.request_timeout)
        self.cached(lambda: self._idempotency.beat(ALIVE_SECONDS), None)

    # -- peers and routing --------------------------------------------------------------------

    def receiveMsg_Peers(self, message: Peers, sender: Any) -> None:
        old, self._peers = self._peers, message
        if old is None:
            return
        # A batch waiting on a peer that was replaced will never hear back: fail it now so
        # the caller can retry at once instead of waiting for the timeout.
        waiting_on = {"users": old.users != message.users,
                      "render": old.templates != message.templates}
        for batch in list(self._pending.values()):
            if waiting_on.get(batch.stage):
                self._fail_open(batch, 503, "actor_restarted",
                                "an internal actor restarted; retry the request")

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        notifications = [i for i in message.items if isinstance(i, NotificationRequest)]
        commands: dict[str, list[Any]] = {}
        for item in message.items:
            owner = getattr(type(item), "OWNER", None)
            if owner is not None:
                commands.setdefault(owner, []).append(item)
            elif not isinstance(item, NotificationRequest):
                self.log.warning("unroutable item dropped",
                                 extra={"item_type": type(item).__name__})
        for owner, items in commands.items():
            target = self.parent if owner == "supervisor" else getattr(self._peers, owner, None)
            if target is None:
                self._unavailable(message, items)
            else:
                self.send(target, SendBatch(message.batch_id, tuple(items), message.reply_to))
        if notifications:
            self._start(message, notifications)

    def _unavailable(self, message: SendBatch, items: list[Any]) -> None:
        self.send(message.reply_to, Replies(message.batch_id, tuple(
            Reply(i.correlation_id, 503, error_code="not_ready", message="Clarion is starting")
            for i in items)))

    # -- the pipeline -------------------------------------------------------------------------

    def _start(self, message: SendBatch, items: list[NotificationRequest]) -> None:
        if self._peers is None:
            self._unavailable(message, items)
            return
        assert self.settings is not None
        # Answer a little before the bridge gives up, so the caller gets our reason, and never
        # commit a request its caller has been told timed out: the clock starts when the HTTP
        # layer received it, not when the batch reached us.
        budget = self.settings.request_timeout * 0.9
        now, wall = time.monotonic(), time.time()
        received = min((i.received_at for i in items if i.received_at), default=wall)
        deadline = now + min(budget, received + budget - wall)
        batch = PendingBatch(message.batch_id, message.reply_to, items, deadline)
        self._pending[batch.batch_id] = batch
        for item in items:
            if item.received_at and item.received_at + budget < wall:
                batch.refuse(item, 504, "timeout", "the request waited too long to be processed")
        self._hold_keys(batch)
        self._reserve_keys(batch)
        if not batch.open_items():
            self._finish(batch)
            return
        self._resolve_users(batch)

    def _hold_keys(self, batch: PendingBatch) -> None:
        """Refuse an item whose idempotency key another request here holds (this batch or one
        still in flight): only the repeat is refused, never its batch."""
        for item in batch.open_items():
            key = item.idempotency_key
            if not key:
                continue
            if key in self._keys_in_flight:
                batch.refuse(item, 409, "idempotency_in_progress",
                             "a request with this idempotency key is still being processed")
            else:
                self._keys_in_flight.add(key)
                batch.keys.add(key)

    def _resolve_users(self, batch: PendingBatch) -> None:
        assert self._peers is not None
        user_ids = tuple(dict.fromkeys(i.user_id for i in batch.open_items()))
        self.send(self._peers.users, ResolveUsers(batch.batch_id, user_ids))

    def _retry_later(self, batch: PendingBatch, stage: str, status: int, code: str,
                     message: str, retry_after: float | None = None) -> None:
        """A storage call failed: try the stage again after a backoff, on a timer (the
        Gateway keeps serving meanwhile), at most MAX_ATTEMPTS times and never past the
        deadline; then answer the error. No retry while a breaker is open (`retry_after`)."""
        delay = backoff_delay(batch.attempts)
        if (retry_after or batch.attempts >= MAX_ATTEMPTS
                or time.monotonic() + delay >= batch.deadline):
            self._fail_open(batch, status, code, message, retry_after)
            return
        batch.attempts += 1
        self.wakeupAfter(delay, payload=("retry", batch.batch_id, stage))

    def on_wakeup(self, payload: Any) -> None:
        if not (isinstance(payload, tuple) and payload[0] == "retry"):
            return
        batch = self._pending.get(payload[1])
        if batch is None or self._peers is None:
            return
        stage = payload[2]
        if stage == "users" and batch.stage == "users":
            self._resolve_users(batch)
        elif stage == "render" and batch.stage == "render":
            self.send(self._peers.templates, RenderBatch(batch.batch_id, batch.rendering))
        elif stage == "persist" and batch.stage == "persist":
            self._persist(batch)

    def _reserve_keys(self, batch: PendingBatch) -> None:
        keyed = [i for i in batch.open_items() if i.idempotency_key]
        if not keyed:
            return
        # Without Redis, PostgreSQL's unique index still refuses a second notification per key.
        found = self.cached(lambda: self._idempotency.reserve(
            [(i.idempotency_key or "", fingerprint(i)) for i in keyed]), None)
        if found is None:
            return
        for item, reservation in zip(keyed, found):
            if reservation.outcome == "reserved":
                batch.reserved.add(item.correlation_id)
            elif reservation.outcome == "replay":
                batch.replies[item.correlation_id] = Reply(
                    item.correlation_id, reservation.status, data=reservation.data,
                    message=reservation.message or ACCEPTED, replayed=True)
            elif reservation.outcome == "in_flight":
                batch.refuse(item, 409, "idempotency_in_progress",
                             "a request with this idempotency key is still being processed")
            else:
                batch.refuse(item, 422, "idempotency_key_reused",
                             "this idempotency key was used for a different request")

    def receiveMsg_UsersResolved(self, message: UsersResolved, sender: Any) -> None:
        batch = self._pending.get(message.batch_id)
        if batch is None or batch.stage != "users":
            return
        if message.error:
            self._retry_later(batch, "users", 503, message.error,
                              "user storage is unavailable, try again")
            return
        assert self.settings is not None and self._peers is not None
        batch.attempts = 1
        batch.hops["user_resolved"] = time.time()
        batch.users = message.users
        render: list[RenderItem] = []
        for item in batch.open_items():
            user = message.users.get(item.user_id)
            if user is None:
                batch.refuse(item, 404, "user_not_found", f"no user '{item.user_id}'")
                continue
            render.append(RenderItem(
                item.correlation_id, item.template_key,
                language_candidates(item.language, user, self.settings.default_language),
                item.message_data, item.template_version,
            ))
        if not render:
            self._finish(batch)
            return
        batch.stage = "render"
        batch.rendering = tuple(render)
        self.send(self._peers.templates, RenderBatch(batch.batch_id, batch.rendering))

    def receiveMsg_Rendered(self, message: Rendered, sender: Any) -> None:
        batch = self._pending.get(message.batch_id)
        if batch is None or batch.stage != "render":
            return
        if message.error:
            self._retry_later(batch, "render", 503, message.error,
                              "template storage is unavailable")
            return
        batch.attempts = 1
        batch.hops["rendered"] = time.time()
        by_id = {i.correlation_id: i for i in batch.items}
        for rendering in message.results:
            item = by_id[rendering.correlation_id]
            if not rendering.ok:
                code = rendering.error_code or "template_render_error"
                batch.refuse(item, 404 if code in _NOT_FOUND else 422, code, rendering.error or "")
                continue
            notification_id = str(uuid.uuid4())
            user = batch.users[item.user_id]
            deliveries, messages = plan_deliveries(item, user, rendering, notification_id)
            if not any(d.status in ("queued", "scheduled") for d in deliveries):
                batch.refuse(item, 422, "no_deliverable_channel",
                             "the user can receive none of the requested channels: "
                             + "; ".join(d.error or d.channel for d in deliveries))
                continue
            batch.accepted[item.correlation_id] = _new_notification(
                item, notification_id, rendering, deliveries, messages,
                {"received": item.received_at or batch.hops["user_resolved"], **batch.hops})
        batch.stage = "persist"
        self._persist(batch)

    def _persist(self, batch: PendingBatch) -> None:
        """Commit the accepted notifications with their deliveries and broker messages (the
        outbox), answer, and have the Publisher relay the messages."""
        if not batch.accepted:
            self._finish(batch)
            return
        if time.monotonic() >= batch.deadline:
            # The caller is about to hear 504: committing now would accept behind its back.
            self._fail_open(batch, 504, "timeout", "storage did not answer in time")
            return
        try:
            inserted: Inserted = self.stored(lambda conn: notification_repo.insert_batch(
                conn, list(batch.accepted.values())))
        except psycopg.OperationalError as exc:
            # Nothing committed, or (the connection broke during the commit) everything did:
            # the next try finds its own rows by id and answers them as accepted.
            self.log.warning("notification insert failed", extra={"error": str(exc),
                                                                  "attempt": batch.attempts})
            self._retry_later(batch, "persist", 503, "storage_unavailable",
                              "storage is unavailable, retry", getattr(exc, "retry_after", None))
            return
        except psycopg.Error as exc:
            # Not the database being away: a bug or a schema out of date. Say so in the log.
            self.log.error("notification insert refused", extra={"error": repr(exc)})
            self._fail_open(batch, 500, "internal_error", "the notification could not be stored")
            return
        if len(inserted.notification_ids) < len(batch.accepted):
            self._answer_from_storage(batch, inserted)
        self._accept(batch)
        if inserted.outbox_ids and self._peers is not None:
            # If this message is lost (a Publisher restart), the Publisher's sweep relays them.
            self.send(self._peers.publisher, RelayOutbox(inserted.outbox_ids))

    def _answer_from_storage(self, batch: PendingBatch, inserted: Inserted) -> None:
        """Items the insert left out: their id is stored (an earlier try of this batch whose
        commit went unacknowledged: accepted), or their idempotency key is (a replay, or 422
        for a different request under the same key)."""
        left_out = {cid: n for cid, n in batch.accepted.items()
                    if n.notification_id not in inserted.notification_ids}
        try:
            stored = notification_repo.existing(
                self._conn(), [n.notification_id for n in left_out.values()],
                [n.idempotency_key for n in left_out.values() if n.idempotency_key])
        except psycopg.Error as exc:
            self.log.warning("reading back stored notifications failed",
                             extra={"error": str(exc)})
            stored = {}
        for cid, notification in left_out.items():
            if notification.notification_id in stored:
                continue  # ours, committed by the earlier try: accepted like the others
            del batch.accepted[cid]
            row = stored.get(notification.idempotency_key or "")
            if row is None:
                batch.replies[cid] = Reply(cid, 409, error_code="idempotency_in_progress",
                                           message="a request with this idempotency key is"
                                           " being processed")
            elif row["fingerprint"] != notification.request_fingerprint:
                batch.replies[cid] = Reply(cid, 422, error_code="idempotency_key_reused",
                                           message="this idempotency key was used for a"
                                           " different request")
            else:
                batch.replies[cid] = Reply(cid, 202, data=row["accepted_reply"] or {
                    "notification_id": row["notification_id"], "status": row["status"],
                    "language": row["language"], "template_version": row["template_version"],
                    "request_id": row["request_id"],
                }, message=ACCEPTED, replayed=True)

    def _accept(self, batch: PendingBatch) -> None:
        committed_at = time.time()
        for correlation_id, n in batch.accepted.items():
            batch.replies[correlation_id] = Reply(correlation_id, 202, message=ACCEPTED,
                                                  data=_accepted_data(n))
            for d in n.deliveries:
                metrics.NOTIFICATIONS_ACCEPTED.labels(d.channel, d.status).inc()
            self.log.info("notification accepted", extra={
                "notification_id": n.notification_id, "request_id": n.request_id,
                "actor": self.name})
        # The "queued" timing is written on the next tick, for every batch of that second at
        # once (`_write_timings`), not here: the Gateway is free for the next batch at once.
        self._queued_timings.extend((n.notification_id, committed_at)
                                    for n in batch.accepted.values())
        self._finish(batch)

    # -- endings ------------------------------------------------------------------------------

    def _fail_open(self, batch: PendingBatch, status: int, code: str, message: str,
                   retry_after: float | None = None) -> None:
        for item in batch.open_items():
            batch.refuse(item, status, code, message, retry_after)
        self._finish(batch)

    def _finish(self, batch: PendingBatch) -> None:
        self._pending.pop(batch.batch_id, None)
        self._keys_in_flight -= batch.keys
        for item in batch.open_items():  # every item gets an answer, whatever happened
            batch.refuse(item, 500, "internal_error", "the request could not be completed")
        replies = tuple(batch.replies[i.correlation_id] for i in batch.items)
        self.send(batch.reply_to, Replies(batch.batch_id, replies))
        for reply in replies:
            if reply.status >= 400:
                metrics.NOTIFICATIONS_REFUSED.labels(reply.error_code or "error").inc()
        self._settle_keys(batch)

    def _settle_keys(self, batch: PendingBatch) -> None:
        """Remember accepted requests under their keys; free the keys of refused ones."""
        if not batch.reserved:
            return
        done, failed = [], []
        for item in batch.items:
            if item.correlation_id not in batch.reserved:
                continue
            reply = batch.replies[item.correlation_id]
            if reply.status == 202:
                done.append((item.idempotency_key or "", fingerprint(item), 202, reply.data,
                             reply.message))
            else:
                # Refused, or unknown (504): free the key. If the notification was written after
                # all, the database's unique key answers the retry with it.
                failed.append(item.idempotency_key or "")
        self.cached(lambda: (self._idempotency.complete(done),
                             self._idempotency.release(failed)), None)

    def teardown(self) -> None:
        if getattr(self, "_queued_timings", None):
            self._write_timings()

    def _write_timings(self) -> None:
        """Write the waiting "queued" timings; keep those whose rows were locked for the next
        tick, for a minute at most (a timing is diagnostic, a notification is not at stake)."""
        timings, self._queued_timings = self._queued_timings, []
        try:
            left = notification_repo.record_hops(self._conn(), "queued", timings)
        except psycopg.Error as exc:
            self.log.warning("recording the queued hop failed", extra={"error": str(exc)})
            left = timings
        oldest = time.time() - 60
        self._queued_timings = [t for t in left if t[1] > oldest] + self._queued_timings

    def on_tick(self) -> None:
        self.cached(lambda: self._idempotency.beat(ALIVE_SECONDS), None)
        if self._queued_timings:
            self._write_timings()
        now = time.monotonic()
        for batch in [b for b in self._pending.values() if b.deadline < now]:
            self._fail_open(batch, 504, "timeout", "an internal actor did not answer in time")

    def on_poison(self, message: Any, receiver: Any) -> None:
        batch = self._pending.get(getattr(message, "batch_id", ""))
        if batch is not None:
            self._fail_open(batch, 500, "internal_error",
                            "an internal actor failed on this request")


def _new_notification(item: NotificationRequest, notification_id: str, rendering: Rendering,
                      deliveries: tuple[NewDelivery, ...], messages: list[Outgoing],
                      hops: dict[str, float]) -> NewNotification:
    notification = NewNotification(
        notification_id, item.user_id, item.template_key, rendering.template_version,
        rendering.language, item.priority, item.request_id, item.idempotency_key,
        item.message_data, deliveries, fingerprint(item) if item.idempotency_key else None,
        hops, created_by=item.principal, messages=tuple(m.envelope() for m in messages))
    if item.idempotency_key:
        # Kept with the row: a replay answered from the database says what the 202 said.
        notification = dataclasses.replace(notification,
                                           accepted_reply=_accepted_data(notification))
    return notification


def _accepted_data(n: NewNotification) -> dict[str, Any]:
    """The data of a 202: what was accepted, and how each channel starts."""
    scheduled = [d.scheduled_for for d in n.deliveries if d.scheduled_for is not None]
    return {
        "notification_id": n.notification_id,
        "status": n.status,
        "scheduled_for": min(scheduled).isoformat() if scheduled else None,
        "channels": {d.channel: d.status for d in n.deliveries},
        "language": n.language,
        "template_version": n.template_version,
        "request_id": n.request_id,
    }
