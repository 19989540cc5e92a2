"""Where Clarion's actor transport listens, and whom it lets in.

Thespian's TCP transport unpickles whatever reaches its sockets, unauthenticated: anyone who can
connect to the admin port or to one of the actor processes' ports runs code as Clarion, or sends
the Gateway a `SendBatch` past the HTTP auth. Thespian 4.0.1 has no setting for either problem
(notes/thespian.md, "Binding and admitting connections"):

* Every socket binds `('', port)`, all interfaces, whenever its address is "external", which it
  is for the admin and every actor (`IPActorAddress.bindname` in thespian/system/transport/
  IPBase.py). `THESPIAN_BASE_IPADDR` only changes the address advertised to others.
* Nothing checks who connects.

`secure_transport(bind_address, peers)` closes both, for the process that calls it and every
process it forks afterwards (the admin and all actors: Thespian starts them with the `fork`
method, so they inherit these class patches; under `spawn` they would not, and Clarion never asks
for it):

1. It sets `THESPIAN_BASE_IPADDR` to `bind_address` and makes every Thespian socket bind exactly
   the address it advertises. Both are needed: without the variable Thespian advertises (and
   with the override binds) an address found by a UDP "connect" towards 8.8.8.8.
2. It wraps `TCPTransport.new_socket`, the one call through which Thespian accepts connections:
   a connection from a peer outside the allow-list is shut down there, before a byte of it is
   read, and handed back to Thespian as a socket that reads as closed, so Thespian drops it.
   Shutting it down alone does not do: bytes that arrived with the connection stay readable
   after `shutdown()` on Linux, and Thespian unpickled them (a marker file appeared in the
   cluster test). It must not raise either: an `OSError` out of accept crashed the admin and
   orphaned its actors.

Loopback and `bind_address` itself are always allowed (a host's own processes). On a single host
the bind address is 127.0.0.1, so nothing else can even connect; in a cluster it is the host's
cluster address and `peers` lists the other hosts (addresses or CIDR networks).

What remains trusted: a peer on the list can still send any pickle. Cluster peers trust each
other fully, so the cluster network must be private (README, "Security model").

This module imports nothing of Clarion: the launcher, `clarion node` and the HTTP bridge call it
before they first touch Thespian.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

_policy: PeerPolicy | None = None  # this process's, set by secure_transport


class PeerPolicy:
    """Who may open a connection to this host's actor sockets."""

    def __init__(self, bind_address: str, peers: Iterable[Network]) -> None:
        self.own = ipaddress.ip_address(bind_address)
        self.peers = tuple(peers)

    def admits(self, address: str) -> bool:
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False  # not an IP peer at all: refuse (fail closed)
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        return (peer in LOOPBACK or peer == self.own
                or any(peer.version == net.version and peer in net for net in self.peers))


def secure_transport(bind_address: str, peers: Iterable[Network] = ()) -> None:
    """Bind every Thespian socket this process opens from now on (and those of the processes it
    forks) to `bind_address`, and drop at accept time any connection whose peer is not loopback,
    `bind_address` or in `peers`. Call it before the first `ActorSystem(...)`.

    Calling it again changes the address and the list for this process's new sockets and
    children; processes already forked keep what they were started with."""
    global _policy
    if ipaddress.ip_address(bind_address).is_unspecified:
        raise ValueError("the actor transport must bind one address, not 0.0.0.0")
    from thespian.system.transport import IPBase, TCPTransport

    # Thespian reads this each time it makes an address of its own (IPBase.IPActorAddress).
    os.environ["THESPIAN_BASE_IPADDR"] = bind_address
    IPBase.thisSystem.add_local_addr(bind_address)
    _policy = PeerPolicy(bind_address, peers)
    if _policy_checked_at_accept():
        return  # the class patches below are in place already
    # Bind what is advertised (`sockname`: bind_address and the port) instead of ('', port).
    IPBase.IPActorAddress.bindArgs = property(lambda self: (self.sockname,))  # type: ignore
    transport = TCPTransport.TCPTransport
    transport.new_socket = _admitting(transport.new_socket)  # type: ignore[method-assign]


def _policy_checked_at_accept() -> bool:
    from thespian.system.transport import TCPTransport

    return getattr(TCPTransport.TCPTransport.new_socket, "_clarion_admitting", False)


_REFUSALS_LOGGED: dict[str, float] = {}


def _note_refusal(peer: str) -> None:
    """Log a refused peer at most once a minute: a flood of connections must not become a flood
    of log messages (an actor's log lines travel to Thespian's logger as messages too)."""
    now = time.monotonic()
    if now - _REFUSALS_LOGGED.get(peer, -60.0) < 60.0:
        return
    if len(_REFUSALS_LOGGED) > 1000:
        _REFUSALS_LOGGED.clear()
    _REFUSALS_LOGGED[peer] = now
    log.warning("actor transport refused a connection from outside the cluster peers",
                extra={"peer": peer})


class _Refused(socket.socket):
    """An accepted connection from a refused peer, as Thespian is handed it: shut down, and
    reading as closed. Shutting it down alone is not enough: Linux keeps the bytes that arrived
    before the shutdown readable, so Thespian would still unpickle a payload sent together with
    the connection (seen in tests/cluster/test_hosts.py)."""

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        return b""

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        return 0


def _refuse(conn: socket.socket) -> socket.socket:
    refused = _Refused(conn.family, conn.type, conn.proto, fileno=conn.detach())
    try:
        # The peer reads the end of the stream; Thespian reads b"" (above) and forgets it.
        refused.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone: nothing will be read from it either way
    return refused


def _admitting(original: Callable[..., Any]) -> Callable[..., Any]:
    """`TCPTransport.new_socket`, refusing accepted connections from peers the policy refuses."""

    def new_socket(self: Any, op: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        result = original(self, op, *args, **kw)
        if getattr(op, "__name__", "") != "accept":
            return result  # creating an outgoing socket: nothing to check
        conn, peer = result
        if _policy is not None and _policy.admits(peer[0]):
            return result
        # Hand back a socket that reads as closed instead of raising: an OSError out of accept
        # crashed Thespian's admin and orphaned its actors (notes/thespian.md).
        _note_refusal(peer[0])
        return _refuse(conn), peer

    new_socket._clarion_admitting = True  # type: ignore[attr-defined]
    return new_socket
