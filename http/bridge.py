"""The bridge from asyncio handlers into the actor system: the only HTTP code that speaks Thespian.

One bridge per uvicorn worker. Two threads, each owning its own `private()` Thespian endpoint
(the shared ActorSystem handle mis-routes replies between threads, notes/thespian.md):

* the sender drains everything handlers queued while its previous send was in flight and sends
  it to the Gateway as one `SendBatch`, naming the receiver's endpoint as `reply_to`;
* the receiver listens for `Replies` and resolves each request's future by correlation id.

At low load a batch holds one item (lowest latency); under load batches grow by themselves, which
is what lets one worker pass thousands of requests a second through ~1 ms actor hops.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from clarion.actors.messages import GatewayLocated, LocateGateway, Replies, Reply, SendBatch
from clarion.supervision.launcher import BASE, SUPERVISOR_CLASS, admin_running
from clarion.supervision.supervisor import GLOBAL_NAME

log = logging.getLogger(__name__)

_MAX_BATCH = 500  # items per SendBatch: keeps one message well under Thespian's comfort size
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
    def __init__(self, actor_port: int, timeout: float) -> None:
        self._port = actor_port
        self._timeout = timeout
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
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
        if not admin_running(self._port):
            # Checked first: ActorSystem() with no admin on the port would silently start one
            # inside this (threaded, uvicorn) process.
            raise BridgeUnavailable(
                f"no Clarion actor system on port {self._port}: start it with `clarion run`"
                " or `clarion actors start`"
            )
        from thespian.actors import ActorSystem

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
            self._waiting[item.correlation_id] = _Waiting(loop, future)
        self._outbox.put(item)
        try:
            return await asyncio.wait_for(future, self._timeout)
        except asyncio.TimeoutError:
            self._relocate.set()
            return Reply(item.correlation_id, 504, error_code="timeout",
                         message="Clarion did not answer in time; the request may still complete")
        finally:
            with self._lock:
                self._waiting.pop(item.correlation_id, None)

    @staticmethod
    def correlation_id() -> str:
        return uuid.uuid4().hex

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
        with self._lock:
            found = [(r, self._waiting.get(r.correlation_id)) for r in replies]
        for reply, waiting in found:
            if waiting is not None:  # None: the handler gave up waiting already
                waiting.loop.call_soon_threadsafe(_set_result, waiting.future, reply)

    def _send(self) -> None:
        with self._system.private() as endpoint:
            targets: tuple[Any, Any] | None = None  # (supervisor, gateway)
            while not self._stop.is_set():
                first = self._outbox.get()
                if first is None:
                    return
                items = [first]
                while len(items) < _MAX_BATCH:
                    try:
                        item = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._stop.set()
                        break
                    items.append(item)
                stale = time.monotonic() - self._located_at > _RELOCATE_EVERY
                if stale or self._relocate.is_set():
                    self._relocate.clear()
                    targets = None
                # Status questions go to the Supervisor itself, so they are answered even
                # while the Gateway restarts; everything else goes through the Gateway.
                for_supervisor = [i for i in items if _owner(i) == "supervisor"]
                for_gateway = [i for i in items if _owner(i) != "supervisor"]
                try:
                    targets = targets or self._locate(endpoint)
                    for target, batch in zip(targets, (for_supervisor, for_gateway)):
                        if batch:
                            endpoint.tell(target, SendBatch(uuid.uuid4().hex, tuple(batch),
                                                            self._reply_to))
                except Exception as exc:  # noqa: BLE001 - answer every item, then re-locate
                    log.error("bridge send failed", extra={"error": repr(exc)})
                    targets = None
                    self._resolve(tuple(
                        Reply(i.correlation_id, 503, error_code="actors_unavailable",
                              message="Clarion's actors are unavailable, retry",
                              retry_after=1) for i in items))

    def _locate(self, endpoint: Any) -> tuple[Any, Any]:
        supervisor = endpoint.createActor(SUPERVISOR_CLASS, globalName=GLOBAL_NAME)
        answer = endpoint.ask(supervisor, LocateGateway(), 5)
        if not isinstance(answer, GatewayLocated) or answer.address is None:
            raise BridgeUnavailable("the Supervisor did not say where the Gateway is")
        self._located_at = time.monotonic()
        return supervisor, answer.address


def _owner(item: Any) -> str:
    return str(getattr(type(item), "OWNER", ""))


def _set_result(future: asyncio.Future[Reply], reply: Reply) -> None:
    if not future.done():  # it may have timed out meanwhile
        future.set_result(reply)
