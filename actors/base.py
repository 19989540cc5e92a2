"""What every Clarion actor shares: configuration, the parent watch, logging, unknown messages.

Life of an actor:
  created by its parent  → does nothing in __init__ (act1 of Thespian's examples)
  `Configure`            → `setup()` opens its clients, answers `ChildReady`, starts its tick
  every TICK seconds     → exits if its parent died (Thespian re-parents orphans to init instead
                           of stopping them, notes/thespian.md), or, for a child placed on
                           another host, if the host that placed it stopped beating; else
                           `on_tick()`
  `ActorExitRequest`     → `teardown()` closes its clients
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ChildActorExited,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
)

from clarion.actors.messages import BreakerChanged, ChildReady, Configure
from clarion.config.logging import log_actor_events_to_file
from clarion.config.settings import Settings, load_settings
from clarion.actors.dependencies import Dependencies
from clarion.persistence import cache
from clarion.supervision import cluster, metrics
from clarion.supervision.breaker import OPEN

_TICK = "clarion.tick"


class NotConfigured(RuntimeError):
    """An actor's settings were used before its parent's `Configure` arrived."""


class ClarionActor(ActorTypeDispatcher):
    """The life cycle every Clarion actor shares (the module docstring walks through it).

    More methods than most classes here, for a reason: six are Thespian's handlers of the
    life-cycle messages, and seven are the empty hooks a subclass overrides (`setup`,
    `teardown`, `on_tick`, `on_wakeup`, `on_child_exited`, `on_poison`, `watched_filenos`).
    What an actor reaches outside itself is in `deps` (actors/dependencies.py)."""

    TICK_SECONDS = 1.0

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any],
                                   requirements: dict[str, Any] | None) -> bool:
        """Where Thespian may create this actor: anywhere, unless its creator asked for a host
        with particular capabilities (`targetActorRequirements`, supervision/cluster.py)."""
        return all(capabilities.get(k) == v for k, v in (requirements or {}).items())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deps: Dependencies | None = None
        self.name = type(self).__name__
        self.parent: Any = None
        self._ppid: int | None = None
        self._placed_by: str | None = None
        self._stopping = False
        self._placer_watch: Any = None  # for a child placed here by another host (cluster.py)
        self.log = logging.getLogger(f"clarion.actors.{self.name.lower()}")

    @property
    def settings(self) -> Settings:
        """This host's settings, read at `Configure` (never before: an actor does nothing in
        `__init__`, act1 of Thespian's examples)."""
        return self.deps.settings

    # -- Thespian entry point ----------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        super().receiveMessage(message, sender)
        if self._stopping:
            return None
        # An actor that watches sockets must hand the watch back after *every* message, or
        # Thespian stops watching them (notes/rabbitmq.md).
        filenos = self.watched_filenos()
        return ThespianWatch(filenos) if filenos else None

    def receiveMsg_Configure(self, message: Configure, sender: Any) -> None:
        if self._deps is not None:
            return  # a duplicate; already running
        # This host's own settings (its credentials, its services' addresses), which its admin
        # passed on in the environment: no secret travels in a message (issue 12).
        self.name = message.name
        self._deps = Dependencies(load_settings(), self.log, self.breaker_changed)
        self.parent = sender
        self._placed_by = message.placed_by
        log_actor_events_to_file(self.settings.log_level,
                                 str(self.settings.state_dir.resolve() / "actors.log"))
        self._ppid = os.getppid()
        self.setup()
        # What setup made lives as long as the actor: out of the collector's sight (see
        # http/app.py), so its full collections stay short.
        gc.freeze()
        self.send(sender, ChildReady(message.name, os.getpid(), self.settings.node_name))
        self.wakeupAfter(self.TICK_SECONDS, payload=_TICK)

    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        if message.payload != _TICK:
            self.on_wakeup(message.payload)
            return
        if self._ppid is not None and os.getppid() != self._ppid:
            # Our parent died without stopping us: exit so its replacement's new child is the
            # only one (a second queue consumer, a second gateway...).
            self.log.warning("parent gone, exiting", extra={"actor": self.name})
            self._stop()
            return
        if self._placed_by and self._placer_gone():
            # Its Supervisor's host is down: that Supervisor (or its replacement) places a
            # new child; this one would otherwise live on unsupervised (notes/thespian.md).
            self.log.warning("placing host down, exiting",
                             extra={"actor": self.name, "placed_by": self._placed_by})
            self._stop()
            return
        try:
            self.on_tick()
        except Exception:  # noqa: BLE001 - a tick that raises must not end the ticking (and
            # with it the check above that the parent is alive); Thespian would retry the
            # message and re-arm twice. Say so and tick on.
            self.log.exception("tick failed", extra={"actor": self.name})
        self.wakeupAfter(self.TICK_SECONDS, payload=_TICK)

    def _placer_gone(self) -> bool:
        if self._placer_watch is None:
            self._placer_watch = cluster.PlacerWatch(cache.connect(self.settings.redis_url),
                                                     self._placed_by or "",
                                                     self.settings.host_down_after)
        return self._placer_watch.placer_gone(lambda read: self.deps.cached(read, None))

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        self._stop(request=False)

    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        self.on_child_exited(message.childAddress)

    def receiveMsg_PoisonMessage(self, message: PoisonMessage, sender: Any) -> None:
        self.log.error(
            "message failed twice in its receiver",
            extra={"actor": self.name, "poison": type(message.poisonMessage).__name__},
        )
        self.on_poison(message.poisonMessage, sender)

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        self.log.warning(
            "unrecognised message dropped",
            extra={"actor": self.name, "message_type": type(message).__name__},
        )

    def _stop(self, request: bool = True) -> None:
        if self._stopping:
            return
        self._stopping = True
        try:
            self.teardown()
            if self._deps is not None:
                self._deps.close()
        except Exception:  # noqa: BLE001 - exiting anyway; say why
            self.log.exception("teardown failed", extra={"actor": self.name})
        if request:
            self.send(self.myAddress, ActorExitRequest())

    def breaker_changed(self, dependency: str, old: str, new: str) -> None:
        """The `on_change` of every breaker an actor holds: log, count, tell the Supervisor."""
        metrics.BREAKER_STATE.labels(self.name, dependency).set(metrics.BREAKER_LEVEL[new])
        log = self.log.warning if new == OPEN else self.log.info
        log("breaker state changed", extra={"actor": self.name, "dependency": dependency,
                                            "from": old, "to": new})
        if self.parent is not None:
            self.send(self.parent, BreakerChanged(self.name, dependency, new))

    @property
    def deps(self) -> Dependencies:
        """What this actor reaches outside itself (made at Configure, actors/dependencies.py)."""
        if self._deps is None:
            raise NotConfigured(f"{self.name} used its dependencies before Configure")
        return self._deps

    # -- for subclasses ----------------------------------------------------------------------

    def setup(self) -> None:
        """Open clients (database, broker, providers). Runs once, on `Configure`."""

    def teardown(self) -> None:
        """Close what `setup` opened."""

    def on_tick(self) -> None:
        """Periodic work: heartbeats, expiring requests, reconnecting."""

    def on_wakeup(self, payload: Any) -> None:
        """A `wakeupAfter` of the subclass's own."""

    def on_child_exited(self, child: Any) -> None:
        """A child of this actor exited."""

    def on_poison(self, message: Any, receiver: Any) -> None:
        """A message this actor sent made its receiver fail twice."""

    def watched_filenos(self) -> list[int]:
        """File descriptors whose readability should wake this actor (`WatchMessage`)."""
        return []
