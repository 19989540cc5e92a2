"""Gateway actor: turns a batch of notification requests into recorded, queued notifications.

Takes:   Peers (from the Supervisor), SendBatch (from the HTTP bridge), and the answers of its
         peers: UsersResolved, Rendered.
Answers: Replies to the batch's `reply_to`: 202 for each accepted notification, once it is
         committed to PostgreSQL with its deliveries and broker messages (the transactional
         outbox); a stable error code for each refused one. Then tells the Publisher to relay
         the new outbox rows (RelayOutbox).

A batch goes through its stages (actors/batch.py: USERS → RENDER → PERSIST), each retried on the
STORAGE policy when storage fails. Several batches are in flight at once, each keyed by its id;
nothing here blocks on another actor. The parts are plain classes: `KeyGuard` (idempotency keys),
`QueuedTimings` (the "queued" hop, written behind), and `planning` (what to send). Management
commands in a SendBatch (users, templates, status) are handed to the actor that owns them
(`messages.owner_of`), which answers the bridge itself.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from typing import Any

import psycopg

from clarion.actors.base import ClarionActor
from clarion.actors.batch import PendingBatch, Stage
from clarion.actors.hop_timings import QueuedTimings
from clarion.actors.idempotency_keys import ACCEPTED, KeyGuard
from clarion.actors.local_reads import LocalReads
from clarion.actors.storage_pool import StoragePool
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
    ResolveUsers,
    SendBatch,
    UsersResolved,
    owner_of,
)
from clarion.actors.planning import fingerprint, language_candidates, plan_deliveries
from clarion.persistence import cache
from clarion.persistence import notifications as notification_repo
from clarion.persistence.delivery_message import DeliveryMessage
from clarion.persistence.idempotency import IdempotencyStore
from clarion.persistence.notifications import Inserted, NewDelivery, NewNotification
from clarion.supervision import metrics
from clarion.supervision.retry import STORAGE

# HTTP status for each way an item can be refused.
_NOT_FOUND = {"user_not_found", "template_not_found"}


class Gateway(ClarionActor):
    """One handler per message it takes (Peers, SendBatch, UsersResolved, Rendered, its
    wake-ups, poison) and one method per stage or ending: the mechanics (keys, timings,
    planning, the batch and its stages) live in plain classes beside it."""

    def setup(self) -> None:
        settings = self.settings
        self._peers: Peers | None = None
        self._pending: dict[str, PendingBatch] = {}
        self._timings = QueuedTimings(self.deps.conn)
        owner = f"{settings.node_name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._keys = KeyGuard(IdempotencyStore(cache.connect(settings.redis_url), owner,
                                               pending_ttl=2 * settings.request_timeout),
                              self.deps.cached)
        self._keys.beat()
        self._reads = LocalReads(cache.connect(settings.redis_url))
        self._reads.connect()
        # Two commits may run at once (two batches in flight from a bridge, or two bridges).
        self._storage = StoragePool(settings.database_url, 2, "gateway-commit",
                                    generic_plans=True)

    def teardown(self) -> None:
        if hasattr(self, "_timings"):
            self._timings.write()
        if hasattr(self, "_reads"):
            self._reads.close()
        if hasattr(self, "_storage"):
            self._storage.close()

    def watched_filenos(self) -> list[int]:
        if not hasattr(self, "_storage"):
            return []
        return [self._storage.fileno(), *self._reads.filenos()]

    def on_tick(self) -> None:
        self._collect_commits()  # never needed if every wake-up arrives; cheap if so
        self._reads.drain()
        self._reads.connect()
        self.deps.cached(self._reads.flush_stats, None)
        self._keys.beat()
        self._timings.write()
        now = time.monotonic()
        for batch in [b for b in self._pending.values() if b.deadline < now]:
            self._fail_open(batch, 504, "timeout", "an internal actor did not answer in time")

    # -- peers and routing --------------------------------------------------------------------

    def receiveMsg_Peers(self, message: Peers, sender: Any) -> None:
        old, self._peers = self._peers, message
        if old is None:
            return
        # A batch waiting on a peer that was replaced will never hear back: fail it now so
        # the caller can retry at once instead of waiting for the timeout.
        replaced = {Stage.USERS: old.users != message.users,
                    Stage.RENDER: old.templates != message.templates}
        for batch in list(self._pending.values()):
            if replaced.get(batch.stage):
                self._fail_open(batch, 503, "actor_restarted",
                                "an internal actor restarted; retry the request")

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        notifications: list[NotificationRequest] = []
        commands: dict[str, list[Any]] = {}
        for item in message.items:
            owner = owner_of(item)
            if owner == "gateway" and isinstance(item, NotificationRequest):
                notifications.append(item)
            elif owner and owner != "gateway":
                commands.setdefault(owner, []).append(item)
            else:
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

    # -- the stages ---------------------------------------------------------------------------

    def _start(self, message: SendBatch, items: list[NotificationRequest]) -> None:
        if self._peers is None:
            self._unavailable(message, items)
            return
        # Answer a little before the bridge gives up, so the caller gets our reason, and never
        # commit a request its caller has been told timed out: the clock starts when the HTTP
        # layer received it, not when the batch reached us.
        budget = self.settings.request_timeout * 0.9
        now, wall = time.monotonic(), time.time()
        received = min((i.received_at for i in items if i.received_at), default=wall)
        batch = PendingBatch(message.batch_id, message.reply_to, items,
                             deadline=now + min(budget, received + budget - wall))
        self._pending[batch.batch_id] = batch
        for item in items:
            if item.received_at and item.received_at + budget < wall:
                batch.refuse(item, 504, "timeout", "the request waited too long to be processed")
        self._keys.admit(batch)
        if not batch.open_items():
            self._finish(batch)
            return
        self._reads.drain()  # invalidations first, then what is held
        batch.users = self._reads.users_held({i.user_id for i in batch.open_items()})
        self._ask(batch)

    def _ask(self, batch: PendingBatch) -> None:
        """Do (again) what the batch's stage waits on: what this Gateway does not hold goes to
        the actor that owns it (LocalReads: users and templates held here)."""
        assert self._peers is not None
        batch.asked_at = self._reads.users.now()
        if batch.stage is Stage.USERS:
            missing = tuple(dict.fromkeys(i.user_id for i in batch.open_items()
                                          if i.user_id not in batch.users))
            if missing:
                self.send(self._peers.users, ResolveUsers(batch.batch_id, missing))
            else:
                self._users_resolved(batch)
        elif batch.stage is Stage.RENDER:
            self.send(self._peers.templates, RenderBatch(batch.batch_id, batch.rendering))
        else:
            self._persist(batch)

    def _retry_later(self, batch: PendingBatch, code: str, message: str,
                     retry_after: float | None = None) -> None:
        """A storage call failed: do the stage again after the STORAGE policy's delay, on a
        timer (the Gateway keeps serving meanwhile), never past the deadline; then answer 503.
        No retry while a breaker is open (`retry_after`)."""
        delay = STORAGE.next_delay(batch.attempts)
        if retry_after or delay is None or time.monotonic() + delay >= batch.deadline:
            self._fail_open(batch, 503, code, message, retry_after)
            return
        batch.attempts += 1
        self.wakeupAfter(delay, payload=("retry", batch.batch_id, batch.stage))

    def on_wakeup(self, payload: Any) -> None:
        if not (isinstance(payload, tuple) and payload[0] == "retry"):
            return
        batch = self._pending.get(payload[1])
        if batch is not None and self._peers is not None and batch.stage is payload[2]:
            self._ask(batch)

    def receiveMsg_UsersResolved(self, message: UsersResolved, sender: Any) -> None:
        batch = self._pending.get(message.batch_id)
        if batch is None or batch.stage is not Stage.USERS:
            return
        if message.error:
            self._retry_later(batch, message.error, "user storage is unavailable, try again")
            return
        self._reads.users.put_many(message.users, batch.asked_at)
        batch.users.update(message.users)
        self._users_resolved(batch)

    def _users_resolved(self, batch: PendingBatch) -> None:
        batch.attempts = 1
        batch.hops["user_resolved"] = time.time()
        render: list[RenderItem] = []
        for item in batch.open_items():
            user = batch.users.get(item.user_id)
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
        done, remote = self._reads.render(render)
        batch.rendered.update((r.correlation_id, r) for r in done)
        if not remote:
            self._rendered(batch)
            return
        batch.stage, batch.rendering = Stage.RENDER, tuple(remote)
        self._ask(batch)

    def receiveMsg_Rendered(self, message: Rendered, sender: Any) -> None:
        batch = self._pending.get(message.batch_id)
        if batch is None or batch.stage is not Stage.RENDER:
            return
        if message.error:
            self._retry_later(batch, message.error, "template storage is unavailable")
            return
        self._reads.templates.put_many(message.templates, batch.asked_at)
        batch.rendered.update((r.correlation_id, r) for r in message.results)
        self._rendered(batch)

    def _rendered(self, batch: PendingBatch) -> None:
        batch.attempts = 1
        batch.hops["rendered"] = time.time()
        by_id = {i.correlation_id: i for i in batch.items}
        for rendering in batch.rendered.values():
            item = by_id[rendering.correlation_id]
            if not rendering.ok:
                code = rendering.error_code or "template_render_error"
                batch.refuse(item, 404 if code in _NOT_FOUND else 422, code, rendering.error or "")
                continue
            notification_id = str(uuid.uuid4())
            user = batch.users[item.user_id]
            deliveries, messages = plan_deliveries(item, user, rendering, notification_id,
                                                   lanes=self.settings.lanes)
            if not any(d.status in ("queued", "scheduled") for d in deliveries):
                batch.refuse(item, 422, "no_deliverable_channel",
                             "the user can receive none of the requested channels: "
                             + "; ".join(d.error or d.channel for d in deliveries))
                continue
            batch.accepted[item.correlation_id] = _new_notification(
                item, notification_id, rendering, deliveries, messages,
                {"received": item.received_at or batch.hops["user_resolved"], **batch.hops})
        batch.stage = Stage.PERSIST
        self._ask(batch)

    def _persist(self, batch: PendingBatch) -> None:
        """Commit the accepted notifications with their deliveries and broker messages (the
        outbox), on a storage thread: the Gateway takes the next batch meanwhile."""
        if not batch.accepted:
            self._finish(batch)
            return
        if time.monotonic() >= batch.deadline:
            # The caller is about to hear 504: committing now would accept behind its back.
            self._fail_open(batch, 504, "timeout", "storage did not answer in time")
            return
        breaker = self.deps.breaker("postgresql")
        if not breaker.allow():
            self._retry_later(batch, "storage_unavailable", "storage is unavailable, retry",
                              breaker.retry_after())
            return
        notifications = list(batch.accepted.values())
        self._storage.submit(batch.batch_id, lambda conn: notification_repo.insert_batch(
            conn, notifications))

    def receiveMsg_WatchMessage(self, message: Any, sender: Any) -> None:
        self._reads.drain()  # invalidations from Users and Templates
        self._collect_commits()

    def _collect_commits(self) -> None:
        for batch_id, inserted, error in self._storage.completions():
            batch = self._pending.get(str(batch_id))
            if batch is not None and batch.stage is Stage.PERSIST:
                self._committed(batch, inserted, error)

    def _committed(self, batch: PendingBatch, inserted: Inserted | None,
                   error: BaseException | None) -> None:
        """A commit finished: answer the batch, and have the Publisher relay its messages."""
        breaker = self.deps.breaker("postgresql")
        if isinstance(error, psycopg.OperationalError):
            # Nothing committed, or (the connection broke during the commit) everything did:
            # the next try finds its own rows by id and answers them as accepted.
            breaker.failure()
            self.log.warning("notification insert failed", extra={"error": str(error),
                                                                  "attempt": batch.attempts})
            self._retry_later(batch, "storage_unavailable", "storage is unavailable, retry")
            return
        breaker.success()  # it answered: an error now is ours, not the database being away
        if error is not None or inserted is None:
            # A bug or a schema out of date. Say so in the log.
            self.log.error("notification insert refused", extra={"error": repr(error)})
            self._fail_open(batch, 500, "internal_error", "the notification could not be stored")
            return
        if len(inserted.notification_ids) < len(batch.accepted):
            self._answer_from_storage(batch, inserted)
        self._accept(batch)
        due = [d.scheduled_for.timestamp() for n in batch.accepted.values()
               for d in n.deliveries if d.scheduled_for is not None]
        if (inserted.outbox_ids or due) and self._peers is not None:
            # If this message is lost (a Publisher restart), the Publisher's sweep relays them,
            # and its tick releases what is scheduled.
            bulk = all(n.priority == "bulk" for n in batch.accepted.values())
            self.send(self._peers.publisher, RelayOutbox(
                inserted.outbox_ids, min(due) if due else None,
                bulk=bulk and self.settings.lanes))

    def _answer_from_storage(self, batch: PendingBatch, inserted: Inserted) -> None:
        """Items the insert left out: their id is stored (an earlier try of this batch whose
        commit went unacknowledged: accepted), or their idempotency key is (a replay, or 422
        for a different request under the same key)."""
        left_out = {cid: n for cid, n in batch.accepted.items()
                    if n.notification_id not in inserted.notification_ids}
        try:
            stored = notification_repo.existing(
                self.deps.conn(), [n.notification_id for n in left_out.values()],
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
        for correlation_id, n in batch.accepted.items():
            batch.replies[correlation_id] = Reply(correlation_id, 202, message=ACCEPTED,
                                                  data=_accepted_data(n))
            for d in n.deliveries:
                metrics.NOTIFICATIONS_ACCEPTED.labels(d.channel, d.status).inc()
            self.log.info("notification accepted", extra={
                "notification_id": n.notification_id, "request_id": n.request_id,
                "actor": self.name})
        self._timings.add([n.notification_id for n in batch.accepted.values()], time.time())
        self._finish(batch)

    # -- endings ------------------------------------------------------------------------------

    def _fail_open(self, batch: PendingBatch, status: int, code: str, message: str,
                   retry_after: float | None = None) -> None:
        batch.fail_open(status, code, message, retry_after)
        self._finish(batch)

    def _finish(self, batch: PendingBatch) -> None:
        self._pending.pop(batch.batch_id, None)
        # Every item gets an answer, whatever happened.
        batch.fail_open(500, "internal_error", "the request could not be completed")
        replies = tuple(batch.replies[i.correlation_id] for i in batch.items)
        self.send(batch.reply_to, Replies(batch.batch_id, replies))
        for reply in replies:
            if reply.status >= 400:
                metrics.NOTIFICATIONS_REFUSED.labels(reply.error_code or "error").inc()
        self._keys.settle(batch)

    def on_poison(self, message: Any, receiver: Any) -> None:
        batch = self._pending.get(getattr(message, "batch_id", ""))
        if batch is not None:
            self._fail_open(batch, 500, "internal_error",
                            "an internal actor failed on this request")


def _new_notification(item: NotificationRequest, notification_id: str, rendering: Rendering,
                      deliveries: tuple[NewDelivery, ...], messages: list[DeliveryMessage],
                      hops: dict[str, float]) -> NewNotification:
    notification = NewNotification(
        notification_id, item.user_id, item.template_key, rendering.template_version,
        rendering.language, item.priority, item.request_id, item.idempotency_key,
        item.message_data, deliveries, fingerprint(item) if item.idempotency_key else None,
        hops, created_by=item.principal, messages=tuple(m.to_amqp() for m in messages))
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
