"""The Supervisor: root of Clarion's actor tree, declared like an OTP supervisor.

    Supervisor  (globalName "clarion-supervisor", strategy one_for_one)
    ├── users       Users
    ├── templates   Templates
    ├── publisher   Publisher
    ├── gateway     Gateway      (told where users, templates and publisher are: Peers)
    ├── events      ProviderEvents (what providers say happened: the signed webhooks)
    ├── callbacks   Callbacks    (status changes POSTed to the callers' endpoints)
    ├── email       EmailDelivery
    ├── push        PushDelivery
    └── monitor     Monitor      (probes the services; its Observations feed the alerts)

A host runs the children of its role and channels (`cluster.children_for`): a gateway host the
first six, a delivery host its channels' delivery actors; the monitor runs everywhere. In a
cluster, a delivery child whose provider credentials this host lacks is *placed* on a live host
that has them, through the convention (`targetActorRequirements` naming that host), and placed
again elsewhere when that host's heartbeat stops.

Each tick the Supervisor writes this host's heartbeat (supervision/cluster.py); the convention
leader's Supervisor also records which members the convention holds.

Every child is permanent: when one exits (`ChildActorExited`, also after `kill -9`) it is created
again and configured, within the restart intensity (at most R restarts in T seconds; past that
the child is left down, marked failed, and an error is logged). The Supervisor answers
`StatusRequest` with the tree: each child's pid, restarts and last exit.

Takes:   Configure (from the launcher; answered with SystemReady once every child is ready or
         waiting for a host to place it on), ChildReady, ChildActorExited,
         ActorSystemConventionUpdate (members joining and leaving the convention),
         LocateGateway (from each HTTP bridge: answered with GatewayLocated), SendBatch of
         StatusRequest (via the Gateway).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import ActorExitRequest, ActorSystemConventionUpdate

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
from clarion.persistence import cache
from clarion.supervision import cluster, metrics
from clarion.supervision.actor_system import SUPERVISOR_NAME
from clarion.supervision.alerts import Alert, AlertBook, post_webhook
from clarion.supervision.restart import RestartIntensity

GLOBAL_NAME = SUPERVISOR_NAME  # this actor's globalName (supervision/actor_system.py)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    actor_class: str  # module path: Thespian creates it by name in a fresh process
    restart: str = "permanent"
    channel: str | None = None  # a delivery child: the channel whose credentials it needs


CHILDREN: tuple[ChildSpec, ...] = (
    ChildSpec("users", "clarion.actors.users.Users"),
    ChildSpec("templates", "clarion.actors.templates.Templates"),
    ChildSpec("publisher", "clarion.actors.publisher.Publisher"),
    ChildSpec("gateway", "clarion.actors.gateway.Gateway"),
    ChildSpec("events", "clarion.actors.provider_events.ProviderEvents"),
    ChildSpec("callbacks", "clarion.actors.callbacks.Callbacks"),
    ChildSpec("email", "clarion.actors.email_delivery.EmailDelivery", channel="email"),
    ChildSpec("push", "clarion.actors.push_delivery.PushDelivery", channel="push"),
    ChildSpec("sms", "clarion.actors.sms_delivery.SmsDelivery", channel="sms"),
    ChildSpec("monitor", "clarion.actors.monitor.Monitor"),
)


def _spec_for(name: str, specs: dict[str, ChildSpec]) -> ChildSpec:
    """The spec of child `name`: a further delivery actor of a channel ("email-2") is one
    more of that channel's ("email"), a competing consumer of the same queue."""
    if name in specs:
        return specs[name]
    base = specs[name.rsplit("-", 1)[0]]
    return dataclasses.replace(base, name=name)


@dataclass
class Child:
    spec: ChildSpec
    address: Any = None
    pid: int | None = None
    ready: bool = False
    # starting, running, restarting, awaiting_placement (no live host can take it), failed
    state: str = "starting"
    restarts: int = 0
    started_at: float = field(default_factory=time.time)
    last_exit: float | None = None
    last_exit_reason: str | None = None
    intensity: RestartIntensity = field(default_factory=RestartIntensity)
    breakers: dict[str, str] = field(default_factory=dict)  # dependency → state
    node: str | None = None  # the host it runs on
    placed: bool = False  # created on another host through the convention


class Supervisor(ClarionActor):
    """One handler per message it takes (ChildReady, ChildActorExited, convention updates,
    Observations, BreakerChanged, LocateGateway, SendBatch) and the few steps of starting,
    placing and restarting a child; the policies (restart intensity, alerts, placement, the
    cluster view) are plain code in restart.py, alerts.py and cluster.py."""

    def setup(self) -> None:
        wanted = cluster.children_for(self.settings)
        specs = {spec.name: spec for spec in CHILDREN}
        self._children = {
            name: Child(_spec_for(name, specs),
                        intensity=RestartIntensity(self.settings.restart_max,
                                                   self.settings.restart_window))
            for name in wanted
        }
        self._launcher = self.parent
        self._redis = cache.connect(self.settings.redis_url)
        self._started_at = time.time()
        self._address = cluster.own_address(self.settings)
        self._leader = cluster.is_leader(self.settings)
        self._members: set[str] = set()  # the convention's members, by node name (leader only)
        self._last_beat = 0.0
        self._silence = cluster.SilenceJudge(self.settings.host_down_after)
        if self.settings.convention is not None:
            self.notifyOnSystemRegistrationChanges(True)
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
                if child.placed and child.address is not None:
                    self.send(child.address, ActorExitRequest())  # it lives on another host
            self._beat(state="stopped")

    def _start(self, child: Child) -> None:
        child.ready = False
        child.pid = None
        child.breakers = {}
        child.started_at = time.time()
        channel = child.spec.channel
        if channel is not None and cluster.needs_placement(self.settings, channel):
            self._place(child, channel)
            return
        child.address = self.createActor(child.spec.actor_class)
        child.node, child.placed = self.settings.node_name, False
        self.send(child.address, Configure(child.spec.name))

    # -- placement on other hosts ------------------------------------------------------------

    def _place(self, child: Child, channel: str) -> None:
        """Create `child` on a live host holding `channel`'s credentials, or wait for one.

        Clarion picks the host itself, from the heartbeats and the leader's list of members, and
        names it in the requirements: asking Thespian for a capability no live member has
        leaves its admin unable to answer (notes/thespian.md), and a crashed member stays in the
        convention for ~15 s after its heartbeat stopped."""
        target = self._placement_target(channel)
        child.placed, child.address = True, None
        if target is None:
            if child.state != "awaiting_placement":
                self.log.warning("no live host can take this child yet; waiting", extra={
                    "actor": self.name, "child": child.spec.name, "channel": channel})
            child.state, child.node = "awaiting_placement", None
            return
        name, provider = target
        child.state, child.node = "starting", name
        child.address = self.createActor(child.spec.actor_class, targetActorRequirements={
            cluster.NODE: name, cluster.provider_capability(channel): provider})
        self.send(child.address, Configure(child.spec.name, placed_by=self.settings.node_name))
        self.log.info("child placed on another host", extra={
            "actor": self.name, "child": child.spec.name, "node": name, "provider": provider})

    def _placement_target(self, channel: str) -> tuple[str, str] | None:
        hosts = self._hosts()
        return None if hosts is None else cluster.placement_target(
            hosts, channel, self.settings.node_name, self.settings.convention)

    def _hosts(self) -> list[dict[str, Any]] | None:
        down_after = self.settings.host_down_after
        return self.deps.cached(lambda: cluster.read_view(self._redis, down_after), None)

    def _check_placed_children(self) -> None:
        """Re-place children whose host stopped beating (a crashed member's actors send no
        `ChildActorExited`), and try again for children still waiting for a host."""
        placed = [c for c in self._children.values() if c.placed]
        if not placed:
            return
        hosts = self._hosts()
        silences_count = self._silence.saw(hosts)
        if hosts is None:
            return
        status = {h["node"]: h["status"] for h in hosts}
        for child in placed:
            if child.state == "awaiting_placement":
                self._start(child)
            elif silences_count and child.state in ("starting", "running") \
                    and child.node is not None \
                    and status.get(child.node) != "up" \
                    and time.time() - child.started_at > self.settings.host_down_after:
                reason = f"its host {child.node} stopped sending heartbeats"
                if child.address is not None:
                    self.send(child.address, ActorExitRequest())  # if it is alive after all
                self._lost(child, reason)

    def receiveMsg_ActorSystemConventionUpdate(self, message: ActorSystemConventionUpdate,
                                               sender: Any) -> None:
        caps = message.remoteCapabilities or {}
        node = str(caps.get(cluster.NODE) or message.remoteAdminAddress)
        if message.remoteAdded:
            self._members.add(node)
        else:
            self._members.discard(node)
        self.log.info("convention member " + ("joined" if message.remoteAdded else "left"),
                      extra={"actor": self.name, "node": node})

    def receiveMsg_ChildReady(self, message: ChildReady, sender: Any) -> None:
        child = self._children.get(message.name)
        if child is None or child.address != sender:
            return
        child.ready, child.pid, child.state = True, message.pid, "running"
        child.node = message.node or child.node
        if message.name in cluster.GATEWAY_CHILDREN:
            self._tell_gateway()
        self._announce_when_ready()

    def _announce_when_ready(self) -> None:
        # A child waiting for a host to be placed on does not hold the node back: this host
        # serves what it can, and the child starts once such a host is up.
        settled = all(c.ready or c.state == "awaiting_placement" for c in self._children.values())
        if not self._announced and settled:
            self._announced = True
            self.log.info("actor system ready", extra={"actor": self.name})
            self.send(self._launcher, SystemReady(tuple(self._children), os.getpgid(0)))

    def _tell_gateway(self) -> None:
        c = self._children
        if "gateway" in c and all(c[n].ready for n in cluster.GATEWAY_CHILDREN):
            self.send(c["gateway"].address,
                      Peers(c["users"].address, c["templates"].address, c["publisher"].address,
                            c["events"].address))

    def on_child_exited(self, address: Any) -> None:
        child = next((c for c in self._children.values() if c.address == address), None)
        # Thespian can report one exit more than once: only the current address counts.
        if child is None or child.state in ("stopping", "failed"):
            return
        # Thespian tells us that a child exited, not why (no exit status): what we know is that
        # nobody asked it to, and which process it was.
        where = f" on {child.node}" if child.placed else ""
        self._lost(child, f"process {child.pid}{where} exited without being asked to"
                   if child.pid else "exited before it was ready")

    def _lost(self, child: Child, reason: str) -> None:
        """A child is gone (exited, or its host is down): restart it within the intensity."""
        child.last_exit = time.time()
        child.last_exit_reason = reason
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
        if time.time() - self._last_beat >= self.settings.heartbeat_interval:
            self._beat()
        self._check_placed_children()
        self._announce_when_ready()

    def _beat(self, state: str = "up") -> None:
        """Write this host's heartbeat: who it is, what it can do, and its actors."""
        settings = self.settings
        beat = {
            "node": settings.node_name, "state": state, "role": settings.node_role,
            "channels": list(settings.channels), "providers": cluster.providers(settings),
            "address": self._address, "admin_port": settings.actor_port, "pid": os.getpid(),
            "started_at": self._started_at, "leader": self._leader,
            "convention": settings.convention,
            "convention_members": sorted(self._members) if self._leader else [],
            "actors": [{"name": c.spec.name, "state": c.state, "pid": c.pid, "node": c.node,
                        "placed": c.placed} for c in self._children.values()],
        }
        self._last_beat = time.time()
        self.deps.cached(lambda: cluster.heartbeat(self._redis, beat), None)

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
        if self.settings.alert_webhook_url:
            post_webhook(self.settings.alert_webhook_url, alert.to_json())

    def receiveMsg_BreakerChanged(self, message: BreakerChanged, sender: Any) -> None:
        child = self._children.get(message.name)
        if child is not None and child.address == sender:
            child.breakers[message.dependency] = message.state
            self._evaluate_alerts()  # raise or resolve `breaker_open` now, not on the next tick

    def receiveMsg_LocateGateway(self, message: LocateGateway, sender: Any) -> None:
        gateway = self._children.get("gateway") if hasattr(self, "_children") else None
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
            "node": {"name": self.settings.node_name, "role": self.settings.node_role,
                     "channels": list(self.settings.channels), "address": self._address,
                     "convention": self.settings.convention, "leader": self._leader,
                     "convention_members": sorted(self._members)},
            "alerts": self._alerts.snapshot(),
            "observations": {"dependencies": self._observations.dependencies,
                             "queues": self._observations.queues,
                             "consumers": self._observations.consumers},
            "children": [
                {"name": c.spec.name, "class": c.spec.actor_class.rsplit(".", 1)[1],
                 "state": c.state, "pid": c.pid, "restarts": c.restarts,
                 "started_at": c.started_at, "last_exit": c.last_exit,
                 "last_exit_reason": c.last_exit_reason,
                 "breakers": dict(c.breakers), "node": c.node, "placed": c.placed}
                for c in self._children.values()
            ],
        }
