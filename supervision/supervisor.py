"""The Supervisor: root of Clarion's actor tree, declared like an OTP supervisor.

    Supervisor  (globalName "clarion-supervisor", strategy one_for_one)
    ├── users       Users
    ├── templates   Templates
    ├── publisher   Publisher
    ├── gateway     Gateway      (told where users, templates and publisher are: Peers)
    ├── email       EmailDelivery
    ├── push        PushDelivery
    └── monitor     Monitor      (probes the services; its Observations feed the alerts)

Every child is permanent: when one exits (`ChildActorExited`, also after `kill -9`) it is created
again and configured, within the restart intensity (at most R restarts in T seconds; past that
the child is left down, marked failed, and an error is logged). The Supervisor answers
`StatusRequest` with the tree: each child's pid, restarts and last exit.

Takes:   Configure (from the launcher; answered with SystemReady once every child is ready),
         ChildReady, ChildActorExited, LocateGateway (from each HTTP bridge: answered with
         GatewayLocated), SendBatch of StatusRequest (via the Gateway).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from clarion.actors.base import ClarionActor
from clarion.actors.messages import (
    BreakerChanged,
    ChildReady,
    Configure,
    GatewayLocated,
    LocateGateway,
    Observations,
    Peers,
    Replies,
    Reply,
    SendBatch,
    StatusRequest,
    SystemReady,
)
from clarion.supervision import metrics
from clarion.supervision.alerts import Alert, AlertBook
from clarion.supervision.restart import RestartIntensity

GLOBAL_NAME = "clarion-supervisor"


def post_webhook(url: str, payload: dict[str, Any]) -> None:
    """POST an alert as JSON from a short-lived thread: a slow receiver never stalls us."""
    import json
    import threading
    import urllib.request

    def post() -> None:
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - operator's URL
        except OSError:
            pass  # alerts are in the log and the API too; a webhook is best effort

    threading.Thread(target=post, name="alert-webhook", daemon=True).start()


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    actor_class: str  # module path: Thespian creates it by name in a fresh process
    restart: str = "permanent"


CHILDREN: tuple[ChildSpec, ...] = (
    ChildSpec("users", "clarion.actors.users.Users"),
    ChildSpec("templates", "clarion.actors.templates.Templates"),
    ChildSpec("publisher", "clarion.actors.publisher.Publisher"),
    ChildSpec("gateway", "clarion.actors.gateway.Gateway"),
    ChildSpec("email", "clarion.actors.email_delivery.EmailDelivery"),
    ChildSpec("push", "clarion.actors.push_delivery.PushDelivery"),
    ChildSpec("monitor", "clarion.actors.monitor.Monitor"),
)


@dataclass
class Child:
    spec: ChildSpec
    address: Any = None
    pid: int | None = None
    ready: bool = False
    state: str = "starting"  # starting, running, restarting, failed
    restarts: int = 0
    started_at: float = field(default_factory=time.time)
    last_exit: float | None = None
    last_exit_reason: str | None = None
    intensity: RestartIntensity = field(default_factory=RestartIntensity)
    breakers: dict[str, str] = field(default_factory=dict)  # dependency → state


class Supervisor(ClarionActor):
    def setup(self) -> None:
        assert self.settings is not None
        self._children = {
            spec.name: Child(spec, intensity=RestartIntensity(self.settings.restart_max,
                                                              self.settings.restart_window))
            for spec in CHILDREN
        }
        self._launcher = self.parent
        self._announced = False
        self._observations = Observations({}, {}, (0, 0))
        self._alerts = AlertBook(self.settings.alert_backlog_threshold,
                                 self.settings.alert_backlog_window,
                                 on_change=self._alert_changed)
        for child in self._children.values():
            self._start(child)

    def teardown(self) -> None:
        # Thespian forwards the (recursive) ActorExitRequest to the children itself.
        if hasattr(self, "_children"):
            for child in self._children.values():
                child.state = "stopping"

    def _start(self, child: Child) -> None:
        assert self.settings is not None
        child.address = self.createActor(child.spec.actor_class)
        child.ready = False
        child.pid = None
        child.breakers = {}
        child.started_at = time.time()
        self.send(child.address, Configure(self.settings, child.spec.name))

    def receiveMsg_ChildReady(self, message: ChildReady, sender: Any) -> None:
        child = self._children.get(message.name)
        if child is None or child.address != sender:
            return
        child.ready, child.pid, child.state = True, message.pid, "running"
        if message.name in ("users", "templates", "publisher", "gateway"):
            self._tell_gateway()
        if not self._announced and all(c.ready for c in self._children.values()):
            self._announced = True
            self.log.info("actor system ready", extra={"actor": self.name})
            self.send(self._launcher, SystemReady(tuple(self._children), os.getpgid(0)))

    def _tell_gateway(self) -> None:
        c = self._children
        if all(c[n].ready for n in ("users", "templates", "publisher", "gateway")):
            self.send(c["gateway"].address,
                      Peers(c["users"].address, c["templates"].address, c["publisher"].address))

    def on_child_exited(self, address: Any) -> None:
        child = next((c for c in self._children.values() if c.address == address), None)
        # Thespian can report one exit more than once: only the current address counts.
        if child is None or child.state in ("stopping", "failed"):
            return
        child.last_exit = time.time()
        # Thespian tells us that a child exited, not why (no exit status): what we know is that
        # nobody asked it to, and which process it was.
        child.last_exit_reason = (f"process {child.pid} exited without being asked to"
                                  if child.pid else "exited before it was ready")
        child.address = None
        if child.spec.restart != "permanent":
            child.state = "stopped"
            return
        if not child.intensity.allow():
            child.state = "failed"
            child.last_exit_reason = (child.last_exit_reason or "") + \
                "; restart intensity exceeded, left down"
            self.log.error("ALERT restart intensity exceeded; child left down", extra={
                "actor": self.name, "child": child.spec.name, "restarts": child.restarts,
                "alert": "actor_down"})
            return
        child.restarts += 1
        child.state = "restarting"
        metrics.ACTOR_RESTARTS.labels(child.spec.name).inc()
        self.log.warning("child exited; restarting", extra={
            "actor": self.name, "child": child.spec.name, "restarts": child.restarts})
        self._start(child)

    def receiveMsg_Observations(self, message: Observations, sender: Any) -> None:
        self._observations = message
        self._evaluate_alerts()

    def on_tick(self) -> None:
        self._evaluate_alerts()

    def _evaluate_alerts(self) -> None:
        children = self.status()["children"]
        for child in children:
            child["recent_restarts"] = self._children[child["name"]].intensity.recent()
        self._alerts.evaluate(children, {
            "dependencies": self._observations.dependencies,
            "queues": {q: n for q, n in self._observations.queues.items()
                       if q != "failed.queue"},
            "delivery_attempts": self._observations.delivery_attempts,
        })

    def _alert_changed(self, alert: Alert) -> None:
        if alert.resolved_at is None:
            self.log.error(f"ALERT {alert.kind}: {alert.message}", extra={
                "actor": self.name, "alert": alert.kind, "alert_key": alert.key,
                "severity": alert.severity})
        else:
            self.log.warning(f"alert resolved: {alert.kind}", extra={
                "actor": self.name, "alert": alert.kind, "alert_key": alert.key})
        assert self.settings is not None
        if self.settings.alert_webhook_url:
            post_webhook(self.settings.alert_webhook_url, alert.to_json())

    def receiveMsg_BreakerChanged(self, message: BreakerChanged, sender: Any) -> None:
        child = self._children.get(message.name)
        if child is not None and child.address == sender:
            child.breakers[message.dependency] = message.state
            self._evaluate_alerts()  # raise or resolve `breaker_open` now, not on the next tick

    def receiveMsg_LocateGateway(self, message: LocateGateway, sender: Any) -> None:
        gateway = self._children["gateway"] if hasattr(self, "_children") else None
        ready = gateway is not None and gateway.ready
        self.send(sender, GatewayLocated(gateway.address if ready else None))

    def receiveMsg_SendBatch(self, message: SendBatch, sender: Any) -> None:
        replies = tuple(
            Reply(item.correlation_id, 200, data=self.status())
            for item in message.items if isinstance(item, StatusRequest)
        )
        self.send(message.reply_to, Replies(message.batch_id, replies))

    def status(self) -> dict[str, Any]:
        return {
            "supervisor": {"pid": os.getpid(), "name": GLOBAL_NAME},
            "alerts": self._alerts.snapshot(),
            "observations": {"dependencies": self._observations.dependencies,
                             "queues": self._observations.queues,
                             "consumers": self._observations.consumers},
            "children": [
                {"name": c.spec.name, "class": c.spec.actor_class.rsplit(".", 1)[1],
                 "state": c.state, "pid": c.pid, "restarts": c.restarts,
                 "started_at": c.started_at, "last_exit": c.last_exit,
                 "last_exit_reason": c.last_exit_reason,
                 "breakers": dict(c.breakers)}
                for c in self._children.values()
            ],
        }
