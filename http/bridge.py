"""The bridge from asyncio handlers into the actor system: the only HTTP code that speaks Thespian.

One bridge per uvicorn worker. Two threads, each owning its own `private()` Thespian endpoint
(the shared ActorSystem handle mis-routes replies between threads, notes/thespian.md):

* the sender drains everything handlers queued and sends it to the Gateway as one `SendBatch`,
  naming the receiver's endpoint as `reply_to`;
* the receiver listens for `Replies` and resolves each request's future by correlation id.

Adaptive batching: the sender keeps at most `max_in_flight` Gateway batches unanswered. While the
window is full, requests wait in the queue and leave together as the next batch once a batch is
answered.

The queue is bounded (`queue_limit` items; beyond it a request is answered 503 `overloaded` at
once) and every item carries its deadline: one whose handler has already answered 504 is
dropped when the sender takes it, never sent, so a client told "timeout" never has its request
carried out later by a Gateway that was merely slow. Idle, a request leaves alone at once (lowest latency); under load batches grow until
one batch's cost is shared by many requests, which is what lets one worker pass thousands of
requests a second through ~1 ms actor hops. (Sending whatever is queued immediately keeps
batches at one or two items and every stage of the pipeline pays per message.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from clarion.actors.messages import (
    GatewayLocated,
    LocateGateway,
    Replies,
    Reply,
    SendBatch,
    owner_of,
)
from clarion.supervision.actor_system import (
    BASE,
    SUPERVISOR_CLASS,
    SUPERVISOR_NAME,
    admin_running,
)
from clarion.supervision.transport_security import Network, secure_transport

log = logging.getLogger(__name__)

SWITCH_INTERVAL = float(os.environ.get("CLARION_BRIDGE_SWITCH_INTERVAL", "0.0005"))

_MAX_BATCH = 500  # items per SendBatch: keeps one message well under Thespian's comfort size
# A batch whose replies never came (a Gateway restart loses them) stops counting against the
# window after this long, so a lost reply cannot stall the bridge.
_IN_FLIGHT_GIVE_UP = 2.0
# Ask the Supervisor where the Gateway is this often: after a Gateway restart, sends to the old
# address vanish silently, so a stale address must not live long.
_RELOCATE_EVERY = 0.5


class BridgeUnavailable(Exception):
    """The actor system is not running (or not reachable) on the configured port."""


@dataclass
class _Waiting:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Reply]


class ActorBridge:
    def __init__(self, actor_port: int, timeout: float, max_in_flight: int = 2,
                 address: str = "127.0.0.1", peers: tuple[Network, ...] = (),
                 queue_limit: int = 10_000) -> None:
        self._port = actor_port
        self._address = address  # the node's actor address: the admin's, and our endpoints'
        self._peers = peers
        self._timeout = timeout
        self._window = _Window(max_in_flight)
        # (deadline on the monotonic clock, item); None tells the sender to stop.
        self._outbox: queue.SimpleQueue[tuple[float, Any] | None] = queue.SimpleQueue()
        self._queue_limit = queue_limit
        self._queued = 0  # items accepted and not yet sent or dropped (under self._lock)
        self._waiting: dict[str, _Waiting] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reply_to: Any = None
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._system: Any = None
        self._located_at = 0.0
        self._relocate = threading.Event()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        # The bridge's threads wait on sockets and then need the GIL, which the event loop holds
        # for up to the switch interval (5 ms by default) while it serves requests: each batch
        # paid that twice, going out and coming back (py-spy, bench traces). A shorter interval
        # hands the GIL over sooner.
        sys.setswitchinterval(SWITCH_INTERVAL)
        if not admin_running(self._port, self._address):
            # Checked first: ActorSystem() with no admin on the port would silently start one
            # inside this (threaded, uvicorn) process.
            raise BridgeUnavailable(
                f"no Clarion actor system on port {self._port}: start it with `clarion run`"
                " or `clarion actors start`"
            )
        from thespian.actors import ActorSystem

        # The bridge's endpoints are actor sockets too: the replies come back to them.
        secure_transport(self._address, self._peers)
        self._system = ActorSystem(BASE, {"Admin Port": self._port})
        receiver = threading.Thread(target=self._receive, name="bridge-rx", daemon=True)
        sender = threading.Thread(target=self._send, name="bridge-tx", daemon=True)
        self._threads = [receiver, sender]
        receiver.start()
        if not self._ready.wait(10):
            raise BridgeUnavailable("the bridge's reply endpoint did not open")
        sender.start()

    def stop(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for w in waiting.values():
            w.loop.call_soon_threadsafe(_set_result, w.future,
                                        Reply("", 503, error_code="shutting_down",
                                              message="Clarion is shutting down"))

    # -- the API handlers use -----------------------------------------------------------------

    async def request(self, item: Any) -> Reply:
        """Send one item (it carries a `correlation_id`) and wait for its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        with self._lock:
            if self._queued >= self._queue_limit:
                return Reply(item.correlation_id, 503, error_code="overloaded",
                             message="too many requests are waiting for Clarion's actors;"
                                     " retry", retry_after=1)
            self._queued += 1
            self._waiting[item.correlation_id] = _Waiting(loop, future)
        self._outbox.put((time.monotonic() + self._timeout, item))
        try:
            return await asyncio.wait_for(future, self._timeout)
        except asyncio.TimeoutError:
            self._relocate.set()
            return Reply(item.correlation_id, 504, error_code="timeout",
                         message="Clarion did not answer in time; the request may still complete")
        finally:
            with self._lock:
                self._waiting.pop(item.correlation_id, None)
            self._window.answered((item.correlation_id,))

    # -- threads ------------------------------------------------------------------------------

    def _receive(self) -> None:
        with self._system.private() as endpoint:
            try:
                # A private Thespian name: the address other actors reach this endpoint at.
                self._reply_to = endpoint._systemBase.transport.myAddress
            except AttributeError:
                log.error("cannot find the bridge endpoint's address (Thespian changed?)")
                return
            self._ready.set()
            while not self._stop.is_set():
                message = endpoint.listen(0.5)
                if isinstance(message, Replies):
                    self._resolve(message.replies)
                elif message is not None:
                    log.warning("bridge dropped an unexpected message",
                                extra={"message_type": type(message).__name__})

    def _resolve(self, replies: tuple[Reply, ...]) -> None:
        self._window.answered(tuple(r.correlation_id for r in replies))
        with self._lock:
            found = [(r, self._waiting.get(r.correlation_id)) for r in replies]
        for reply, waiting in found:
            if waiting is not None:  # None: the handler gave up waiting already
                waiting.loop.call_soon_threadsafe(_set_result, waiting.future, reply)

    def _send(self) -> None:
        with self._system.private() as endpoint:
            supervisor: Any = None
            gateway: Any = None
            while not self._stop.is_set():
                first = self._outbox.get()
                if first is None:
                    return
                # Wait for room in the window; whatever queues meanwhile joins this batch.
                self._window.wait_for_room(self._stop)
                queued = [first]
                while len(queued) < _MAX_BATCH:
                    try:
                        entry = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    if entry is None:
                        self._stop.set()
                        break
                    queued.append(entry)
                with self._lock:
                    self._queued -= len(queued)
                # The handlers of expired items answered 504 already: never send those.
                now = time.monotonic()
                items = [item for deadline, item in queued if deadline > now]
                if len(items) < len(queued):
                    log.warning("bridge dropped requests that timed out while queued",
                                extra={"dropped": len(queued) - len(items)})
                if not items:
                    continue
                stale = time.monotonic() - self._located_at > _RELOCATE_EVERY
                if stale or self._relocate.is_set():
                    self._relocate.clear()
                    supervisor = gateway = None
                # Status questions go to the Supervisor itself, so they are answered even
                # while the Gateway restarts; everything else goes through the Gateway. Each
                # half fails alone: a Gateway being restarted does not refuse a status question.
                for_supervisor = [i for i in items if owner_of(i) == "supervisor"]
                for_gateway = [i for i in items if owner_of(i) != "supervisor"]
                try:
                    if supervisor is None:
                        supervisor = endpoint.createActor(SUPERVISOR_CLASS,
                                                          globalName=SUPERVISOR_NAME)
                        self._located_at = time.monotonic()
                    if for_supervisor:
                        endpoint.tell(supervisor, SendBatch(uuid.uuid4().hex,
                                                            tuple(for_supervisor),
                                                            self._reply_to))
                except Exception as exc:  # noqa: BLE001 - answer every item, then look again
                    log.error("bridge send failed", extra={"error": repr(exc)})
                    supervisor = gateway = None
                    self._unavailable(for_supervisor + for_gateway)
                    continue
                if not for_gateway:
                    continue
                try:
                    gateway = gateway or self._locate(endpoint, supervisor)
                    batch_id = uuid.uuid4().hex
                    self._window.sent(batch_id, [i.correlation_id for i in for_gateway])
                    endpoint.tell(gateway, SendBatch(batch_id, tuple(for_gateway),
                                                     self._reply_to))
                except Exception as exc:  # noqa: BLE001 - answer every item, then re-locate
                    log.error("bridge send failed", extra={"error": repr(exc)})
                    gateway = None
                    self._unavailable(for_gateway)

    def _unavailable(self, items: list[Any]) -> None:
        self._resolve(tuple(
            Reply(i.correlation_id, 503, error_code="actors_unavailable",
                  message="Clarion's actors are unavailable, retry", retry_after=1)
            for i in items))

    def _locate(self, endpoint: Any, supervisor: Any) -> Any:
        answer = endpoint.ask(supervisor, LocateGateway(), 5)
        if not isinstance(answer, GatewayLocated) or answer.address is None:
            raise BridgeUnavailable("the Supervisor did not say where the Gateway is")
        self._located_at = time.monotonic()
        return answer.address


class _Window:
    """The Gateway batches sent and not yet fully answered (a bounded window)."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._cond = threading.Condition()
        self._open: dict[str, tuple[float, set[str]]] = {}  # batch id → (sent at, unanswered)
        self._batch_of: dict[str, str] = {}  # correlation id → batch id

    def sent(self, batch_id: str, correlation_ids: list[str]) -> None:
        with self._cond:
            self._open[batch_id] = (time.monotonic(), set(correlation_ids))
            for cid in correlation_ids:
                self._batch_of[cid] = batch_id

    def answered(self, correlation_ids: tuple[str, ...]) -> None:
        with self._cond:
            freed = False
            for cid in correlation_ids:
                batch_id = self._batch_of.pop(cid, None)
                if batch_id is None or batch_id not in self._open:
                    continue
                unanswered = self._open[batch_id][1]
                unanswered.discard(cid)
                if not unanswered:
                    del self._open[batch_id]
                    freed = True
            if freed:
                self._cond.notify_all()

    def wait_for_room(self, stop: threading.Event) -> None:
        with self._cond:
            while len(self._open) >= self._size and not stop.is_set():
                oldest_id, (sent_at, unanswered) = min(self._open.items(),
                                                       key=lambda kv: kv[1][0])
                overdue = sent_at + _IN_FLIGHT_GIVE_UP - time.monotonic()
                if overdue <= 0:
                    del self._open[oldest_id]  # its late replies still resolve their requests
                    for cid in unanswered:
                        self._batch_of.pop(cid, None)
                    continue
                self._cond.wait(min(overdue, 0.5))


def _set_result(future: asyncio.Future[Reply], reply: Reply) -> None:
    if not future.done():  # it may have timed out meanwhile
        future.set_result(reply)
