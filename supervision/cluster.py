"""Clarion's hosts: what each one runs, what it can do, and whether it is alive.

A host runs `clarion node --role gateway|delivery|all`. Its role and channels pick the children
its own Supervisor runs (`children_for`), so a host keeps working on its own. Hosts also join one
Thespian convention (ARCHITECTURE "Scale-out"), advertising the capabilities in
`node_capabilities`: Thespian uses them to place an actor on a host that has what it needs.

Liveness is Clarion's own: every Supervisor writes a heartbeat to the Redis hash `clarion:nodes`
(`heartbeat`), and a host whose heartbeat is older than `host_down_after` is down (`view`).
The convention is not enough for that: tuned, it drops a crashed member only after ~15 s, and the
parents of a crashed member's actors hear nothing at all (notes/thespian.md). Heartbeats in Redis
also outlive the convention leader, and every gateway host reads the same view.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from clarion.config.settings import Settings

NODES_KEY = "clarion:nodes"
# A host that has not written for a day is forgotten (its entry is removed).
FORGET_AFTER = 86_400.0

GATEWAY_CHILDREN = ("users", "templates", "publisher", "gateway", "events",
                    "callbacks")
ALWAYS = ("monitor",)

# Capability names every Clarion actor system advertises in the convention.
NODE = "clarion.node"
ROLE = "clarion.role"
CHANNELS = "clarion.channels"


def provider_capability(channel: str) -> str:
    """The capability naming the provider a host delivers `channel` with ("outbox": none)."""
    return f"clarion.provider.{channel}"


def children_for(settings: Settings) -> tuple[str, ...]:
    """The Supervisor's children on a host of this role and these channels."""
    names: list[str] = []
    if settings.node_role in ("gateway", "all"):
        names.extend(GATEWAY_CHILDREN)
    if settings.node_role in ("delivery", "all"):
        for channel in settings.channels:  # each delivery child is named after its channel,
            names.append(channel)  # and further ones after it: email-2, email-3...
            names.extend(f"{channel}-{n}" for n in range(2, settings.delivery_actors + 1))
    names.extend(ALWAYS)
    return tuple(names)


def providers(settings: Settings) -> dict[str, str]:
    """Each channel's providers on this host, in failover order ("sendgrid,smtp")."""
    return {channel: ",".join(settings.provider_names(channel))
            for channel in ("email", "push", "sms")}


def needs_placement(settings: Settings, channel: str) -> bool:
    """Must this host's delivery child for `channel` run on another host? Yes in a cluster when
    this host holds no credentials for the channel: a host that does delivers it for real,
    where a standalone node without credentials writes to the local outbox."""
    return settings.convention is not None and providers(settings)[channel] == "outbox"


def node_capabilities(settings: Settings) -> dict[str, Any]:
    """The actor system's capabilities: its admin port, the convention it joins, and ours."""
    caps: dict[str, Any] = {
        "Admin Port": settings.actor_port,
        NODE: settings.node_name,
        ROLE: settings.node_role,
        CHANNELS: settings.node_channels,
    }
    for channel, provider in providers(settings).items():
        caps[provider_capability(channel)] = provider
    if settings.convention_address is not None:
        host, port = settings.convention_address
        caps["Convention Address.IPv4"] = (host, port)
    return caps


def convention_env(settings: Settings) -> dict[str, str]:
    """Thespian reads its convention periods from the environment, as M:SS."""
    def mss(seconds: int) -> str:
        return f"{seconds // 60}:{seconds % 60:02d}"

    return {
        "CONVENTION_REREGISTRATION_PERIOD": mss(settings.convention_reregistration_period),
        "CONVENTION_RESTART_PERIOD": mss(settings.convention_restart_period),
        "CONVENTION_REGISTRATION_MISS_MAX": str(settings.convention_miss_max),
    }


def is_local_address(host: str) -> bool:
    """Does `host` name an address of this machine (so this node leads the convention)?"""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    for *_, sockaddr in infos:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((sockaddr[0], 0))
                return True
            except OSError:
                continue
    return False


def is_leader(settings: Settings) -> bool:
    address = settings.convention_address
    return (address is not None and address[1] == settings.actor_port
            and is_local_address(address[0]))


def own_address(settings: Settings) -> str:
    """The address other hosts reach this one at: the one its actor sockets listen on
    (`CLARION_NODE_ADDRESS`; loopback when standing alone)."""
    return settings.node_address


# -- heartbeats -------------------------------------------------------------------------------

def heartbeat(client: Any, beat: dict[str, Any]) -> None:
    """Write this host's heartbeat (`beat` names the node) and forget long-dead hosts."""
    beat = {**beat, "beat_at": time.time()}
    pipe = client.pipeline(transaction=False)
    pipe.hset(NODES_KEY, beat["node"], json.dumps(beat, default=str))
    pipe.hgetall(NODES_KEY)
    _, raw = pipe.execute()
    forgotten = [name for name, entry in _decode(raw).items()
                 if time.time() - float(entry.get("beat_at", 0)) > FORGET_AFTER]
    if forgotten:
        client.hdel(NODES_KEY, *forgotten)


def view(raw: dict[Any, Any], down_after: float, now: float | None = None) -> list[dict[str, Any]]:
    """Every known host from the raw `clarion:nodes` hash, each with its status (up, down or
    stopped) and heartbeat age in seconds, sorted by name."""
    now = time.time() if now is None else now
    hosts = []
    for name, entry in sorted(_decode(raw).items()):
        age = max(0.0, now - float(entry.get("beat_at", 0)))
        if entry.get("state") == "stopped":
            status = "stopped"
        else:
            status = "up" if age <= down_after else "down"
        hosts.append({**entry, "node": name, "status": status,
                      "heartbeat_age": round(age, 2)})
    return hosts


class SilenceJudge:
    """Whether a host's missing heartbeats can be believed.

    Only once the view has been readable for `grace` seconds: while Redis was unreachable no
    host could beat, so right after it returns every host looks down through no fault of its
    own, and acting on that would tear down and re-place children all over the cluster."""

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._readable_since: float | None = time.monotonic() - grace

    def saw(self, hosts: list[dict[str, Any]] | None) -> bool:
        """Note one reading of the view (None: Redis did not answer); True if silences in
        it count."""
        now = time.monotonic()
        if hosts is None:
            self._readable_since = None
            return False
        if self._readable_since is None:
            self._readable_since = now
        return now - self._readable_since >= self._grace


def read_view(client: Any, down_after: float) -> list[dict[str, Any]]:
    return view(client.hgetall(NODES_KEY), down_after)


def _decode(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    entries = {}
    for name, value in raw.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        try:
            entry = json.loads(value)
        except (TypeError, ValueError):
            continue  # not ours or damaged: ignore rather than break the view
        if isinstance(entry, dict):
            entries[key] = entry
    return entries


def placement_target(hosts: list[dict[str, Any]], channel: str, own_node: str,
                     convention: str | None) -> tuple[str, str] | None:
    """Where to place a delivery child of `channel` that this host cannot run: the first (by
    name) live convention member, other than this host, that delivers and holds the channel's
    credentials; (its node name, its provider), or None while there is none.

    Only members of our leader's convention count: Thespian places through the leader, and
    without a live leader nothing can be placed. (Two clusters sharing one Redis, test runs
    for instance, each see only their own leader.)"""
    leader = next((h for h in hosts if h.get("leader") and h["status"] == "up"
                   and h.get("convention") == convention), None)
    if leader is None:
        return None
    members = {*leader.get("convention_members", ()), leader["node"]}
    candidates = sorted(
        (h for h in hosts
         if h["status"] == "up" and h["node"] in members and h["node"] != own_node
         and h.get("role") in ("delivery", "all")  # a gateway host delivers nothing
         and h.get("providers", {}).get(channel, "outbox") != "outbox"),
        key=lambda h: h["node"])
    if not candidates:
        return None
    return candidates[0]["node"], candidates[0]["providers"][channel]


class PlacerWatch:
    """For an actor another host's Supervisor placed here: has that host stopped beating?

    Thespian re-parents orphans instead of stopping them, and a crashed member's Supervisor
    sends nothing: the placed actor must notice by itself and exit, so the replacement its
    placer's successor makes is the only one (notes/thespian.md). `read(call)` reads the view
    through the actor's Redis breaker (returns None when Redis did not answer)."""

    def __init__(self, client: Any, placed_by: str, host_down_after: float) -> None:
        self._client = client
        self._placed_by = placed_by
        # Twice the Supervisors' own limit: a placer that is merely slow is not abandoned.
        self._down_after = 2 * host_down_after
        self._judge = SilenceJudge(self._down_after)

    def placer_gone(self, read: Any) -> bool:
        hosts = read(lambda: read_view(self._client, self._down_after))
        if not self._judge.saw(hosts) or hosts is None:
            return False  # Redis unreachable, or only just back: no evidence, keep working
        placer = next((h for h in hosts if h["node"] == self._placed_by), None)
        return placer is None or placer["status"] != "up"
