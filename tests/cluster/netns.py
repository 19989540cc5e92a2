"""The project's own test hosts: Linux network namespaces on a private bridge, for cluster tests.

`TestNetwork(["gw", "d1", "d2"])` gives each host its own network namespace with one interface,
`eth0` (198.51.100.11, .12, ... /24, RFC 5737 documentation range), cabled by a veth pair to a
bridge in the test process's namespace that holds 198.51.100.1, the hosts' default gateway. Hosts
reach each other through the bridge. PostgreSQL, Redis and RabbitMQ only listen on 127.0.0.1, which
a namespace cannot reach, so `forward(port)` relays 198.51.100.1:port to 127.0.0.1:port from a
thread of the test process. IP forwarding on the machine is left as it is (off here): nothing a host
sends leaves the bridge except to 198.51.100.1 itself.

Needs root and iproute2 (`ip`); `netns_available()` says why not otherwise. Interface and namespace
names carry the creating process id, so `cleanup_stale()` can remove what a crashed run left behind.
One network exists at a time per machine (the subnet and gateway address are fixed): a second
`TestNetwork` waits on a lock file until the first one is closed.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)

SUBNET = "198.51.100"             # RFC 5737 TEST-NET-2: never routed anywhere real
GATEWAY = f"{SUBNET}.1"
FIRST_HOST = 11                   # host i gets SUBNET.(FIRST_HOST + i)
LOCK_PATH = Path("/run/clarion-testnet.lock")
LOCK_WAIT = 300.0                 # seconds a second run waits for the first one to finish
IFNAMSIZ = 15                     # Linux interface names are at most 15 bytes

_counter = itertools.count()      # tells apart networks made one after another by one process
_active: TestNetwork | None = None  # the one open network of this process, if any


class NetnsError(RuntimeError):
    """An `ip` command failed while building or tearing down the test network."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


# ---- names -------------------------------------------------------------------------------------
# Namespaces: "<prefix>-<pid>-<n>-<host>" (no length limit). Interfaces, limited to 15 bytes, carry
# the pid in hex: bridge "<prefix>br<pid>-<n>", host-side veth "<prefix><pid>-<n>v<i>". The other
# veth end is created directly inside its namespace as eth0, so it never needs a name out here.
# ("br" cannot be read as hex, so the two interface forms never parse as each other.)

def _ns_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-(\d+)-\d+-")


def _link_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}(?:br)?([0-9a-f]+)-\d+(?:v\d+)?$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    # "7: clrbr1a2b-0: <BROADCAST,..." or "8: clr1a2b-0v0@if2: <...": the name sits before "@" or ":".
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


# ---- br_netfilter -------------------------------------------------------------------------------
# With the br_netfilter module loaded and net.bridge.bridge-nf-call-iptables = 1 (Docker sets both),
# packets between two ports of a bridge go through iptables' FORWARD chain, whose policy is then
# often DROP: host-to-host traffic would vanish while host-to-gateway traffic (INPUT) still works.
# The per-bridge nf_call_iptables option cannot opt out (the kernel ORs it with the sysctl), and
# turning the sysctl off would change every bridge on the machine, so each network inserts a rule
# accepting traffic that stays on its own bridge and deletes it at teardown.

def _bridge_filtered() -> bool:
    try:
        return Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1"
    except OSError:   # no br_netfilter: bridged frames never meet iptables
        return False


def _accept_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def _iptables(op: str, rule: list[str], check: bool = False) -> None:
    result = subprocess.run(["iptables", "-w", "10", op, *rule], check=False,
                            capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise NetnsError(f"iptables {op} {' '.join(rule)}: {result.stderr.strip()}")


def _stale_accept_rules(prefix: str) -> list[str]:
    """Bridges of dead runs that still have an accept rule in FORWARD."""
    if shutil.which("iptables") is None:
        return []
    out = subprocess.run(["iptables", "-w", "10", "-S", "FORWARD"], check=False,
                         capture_output=True, text=True, timeout=30).stdout
    link_re = _link_pattern(prefix)
    bridges = []
    for line in out.splitlines():
        words = line.split()   # "-A FORWARD -i BRIDGE -o BRIDGE -j ACCEPT"
        if len(words) != 8 or words[0] != "-A" or words[1:] != _accept_rule(words[3]):
            continue
        m = link_re.match(words[3])
        if m and not _pid_alive(int(m.group(1), 16)):
            bridges.append(words[3])
    return bridges


def namespace_pids(ns: str) -> list[int]:
    """Every process whose network namespace is `ns` (`ip netns pids`)."""
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def kill_namespace(ns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in `ns` until none is left (a process may fork while we kill)."""
    deadline = time.monotonic() + timeout
    while pids := namespace_pids(ns):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {ns} survived SIGKILL for {timeout}s")
        # A killed process leaves the namespace once the kernel has torn it down (it may stay a
        # zombie of its parent, but a zombie no longer has a network namespace).
        time.sleep(0.02)


def _delete_namespace(ns: str) -> None:
    kill_namespace(ns)
    _ip("netns", "delete", ns, check=False)


def cleanup_stale(prefix: str = "clr") -> list[str]:
    """Remove namespaces and interfaces named with `prefix` whose creating process is gone (a run
    that crashed or was killed before its teardown). Returns what was removed."""
    removed = []
    for ns in _namespaces():
        m = _ns_pattern(prefix).match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _delete_namespace(ns)
            removed.append(ns)
    link_re = _link_pattern(prefix)
    for link in _links():
        m = link_re.match(link)
        if m and not _pid_alive(int(m.group(1), 16)):
            _ip("link", "delete", link, check=False)   # a veth may already be gone with its peer
            removed.append(link)
    for bridge in _stale_accept_rules(prefix):
        _iptables("-D", _accept_rule(bridge))
        removed.append(f"iptables accept rule for {bridge}")
    return removed


@functools.cache
def netns_available() -> str | None:
    """None if this machine can run `TestNetwork`, else why not (for a skip or a CI failure)."""
    if os.geteuid() != 0:
        return "network namespaces need root (tests/cluster create veths, bridges and namespaces)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is missing (apt-get install iproute2)"
    # Build and remove a miniature network: a bridge, a namespace and a veth between them, which is
    # what a container or a kernel without bridge/veth support refuses.
    tag = f"{os.getpid():x}-p"
    bridge, veth, ns = f"clrpbr{tag}", f"clrp{tag}v", f"clrprobe-{os.getpid()}"
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", bridge)
        _ip("-n", ns, "link", "set", "lo", "up")
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create network namespaces here: {exc}"
    finally:
        _ip("link", "delete", veth, check=False)
        _ip("netns", "delete", ns, check=False)
        _ip("link", "delete", bridge, check=False)
    return None


# ---- TCP forwarders ----------------------------------------------------------------------------

_BUFFER_LIMIT = 256 * 1024   # stop reading one side while this much waits to be written to the other


class _Connection:
    """One relayed connection. Index 0 is the client side, 1 the upstream (target) side;
    `pending[i]` holds bytes read from the other side and not yet written to `socks[i]`."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.socks = (client, upstream)
        self.pending = (bytearray(), bytearray())
        self.eof = [False, False]        # eof[i]: socks[i] sent FIN (recv returned b"")
        self.write_shut = [False, False]  # write_shut[i]: the FIN was passed on to socks[i]
        self.connecting = True           # upstream's non-blocking connect is in progress
        self.closed = False

    def interest(self, i: int) -> int:
        events = 0
        if not self.connecting and not self.eof[i] and len(self.pending[1 - i]) < _BUFFER_LIMIT:
            events |= selectors.EVENT_READ
        if self.pending[i] or (i == 1 and self.connecting):
            events |= selectors.EVENT_WRITE
        return events


class _Relay:
    """All forwarders of a network in one thread: a selector loop over listening sockets and
    relayed connections. Half-closes are passed on (a FIN from one side becomes shutdown(SHUT_WR)
    towards the other, once everything read before it has been written), so request/response
    protocols that close their sending side first still get their answer."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._new_listeners: list[tuple[socket.socket, tuple[str, int]]] = []
        self._listeners: list[socket.socket] = []
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="testnet-relay", daemon=True)
        self._thread.start()

    def add(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(listen)             # bind here, so a busy port fails in the caller
        sock.listen(256)
        sock.setblocking(False)
        with self._lock:
            self._new_listeners.append((sock, target))
        self._wake_w.send(b"x")

    def close(self) -> None:
        if self._thread.is_alive():
            self._stopping = True
            self._wake_w.send(b"x")
            self._thread.join(timeout=10)
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._selector.select():
                    kind, data = key.data
                    try:
                        if kind == "wake":
                            self._drain_wakeups()
                        elif kind == "listen":
                            self._accept(key.fileobj, data)  # type: ignore[arg-type]
                        else:
                            self._service(data[0], data[1], events)
                    except Exception:  # one bad connection must not stop the others
                        log.exception("test network relay: %s failed", kind)
                        if kind == "conn":
                            self._close(data[0])
        finally:
            for conn in list(self._connections):
                self._close(conn)
            for sock in self._listeners:
                self._selector.unregister(sock)
                sock.close()
            with self._lock:
                for sock, _ in self._new_listeners:
                    sock.close()
            self._selector.close()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            new, self._new_listeners = self._new_listeners, []
        for sock, target in new:
            self._selector.register(sock, selectors.EVENT_READ, ("listen", target))
            self._listeners.append(sock)

    def _accept(self, listener: socket.socket, target: tuple[str, int]) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                return
            client.setblocking(False)
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(client, upstream)
            self._connections.add(conn)
            upstream.connect_ex(target)     # completes (or fails) as upstream becomes writable
            self._update(conn)

    def _service(self, conn: _Connection, i: int, events: int) -> None:
        sock, other = conn.socks[i], 1 - i
        if events & selectors.EVENT_WRITE:
            if i == 1 and conn.connecting:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    return self._close(conn)   # target down: the client sees its connection close
                conn.connecting = False
            elif conn.pending[i]:
                try:
                    sent = sock.send(conn.pending[i])
                except BlockingIOError:
                    sent = 0
                except OSError:
                    return self._close(conn)
                del conn.pending[i][:sent]
        if events & selectors.EVENT_READ and not conn.eof[i]:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:                  # reset by peer: pass the abort on by closing both
                return self._close(conn)
            if data:
                conn.pending[other].extend(data)
            elif data == b"":
                conn.eof[i] = True
        # Pass a FIN on once everything that came before it has been written.
        for j in (0, 1):
            if conn.eof[j] and not conn.pending[1 - j] and not conn.write_shut[1 - j]:
                try:
                    conn.socks[1 - j].shutdown(socket.SHUT_WR)
                except OSError:
                    return self._close(conn)
                conn.write_shut[1 - j] = True
        if all(conn.write_shut):
            return self._close(conn)
        self._update(conn)

    def _update(self, conn: _Connection) -> None:
        for i, sock in enumerate(conn.socks):
            events = conn.interest(i)
            registered = self._selector.get_map().get(sock.fileno()) if sock.fileno() >= 0 else None
            if events and registered:
                if registered.events != events:
                    self._selector.modify(sock, events, ("conn", (conn, i)))
            elif events:
                self._selector.register(sock, events, ("conn", (conn, i)))
            elif registered:
                self._selector.unregister(sock)

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._connections.discard(conn)
        for sock in conn.socks:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()


# ---- the network -------------------------------------------------------------------------------

class TestNetwork:
    """A bridge plus one namespace per host; see the module docstring. Use it as a context manager
    (or call `close()`): teardown kills every process left in the namespaces."""

    __test__ = False   # not a pytest test class, despite the name
    host_address = GATEWAY

    def __init__(self, hosts: Sequence[str], prefix: str = "clr") -> None:
        if len(set(hosts)) != len(hosts) or not hosts:
            raise ValueError(f"host names must be unique and non-empty: {hosts!r}")
        if not re.fullmatch(r"[a-z]{1,3}", prefix):
            raise ValueError("prefix: 1-3 lowercase letters (interface names are short)")
        self.hosts = list(hosts)
        self.prefix = prefix
        pid, n = os.getpid(), next(_counter)
        self.bridge = f"{prefix}br{pid:x}-{n}"
        self._veths = {h: f"{prefix}{pid:x}-{n}v{i}" for i, h in enumerate(self.hosts)}
        self._namespaces = {h: f"{prefix}-{pid}-{n}-{h}" for h in self.hosts}
        self._addresses = {h: f"{SUBNET}.{FIRST_HOST + i}" for i, h in enumerate(self.hosts)}
        if max(len(name) for name in [self.bridge, *self._veths.values()]) > IFNAMSIZ:
            raise ValueError("too many hosts or too long a prefix for 15-byte interface names")
        self._relay: _Relay | None = None
        self._accept_rule: list[str] | None = None
        self._closed = False
        global _active
        if _active is not None:   # waiting for our own lock would only time out
            raise NetnsError(f"this process already has an open test network ({_active.bridge})")
        self._lock_file = self._acquire_lock()
        _active = self
        try:
            cleanup_stale(prefix)
            self._build()
        except BaseException:
            self.close()
            raise

    # -- public API --

    def address(self, host: str) -> str:
        return self._addresses[host]

    def namespace(self, host: str) -> str:
        return self._namespaces[host]

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside `host`'s namespace (for subprocess.run / Popen)."""
        return ["ip", "netns", "exec", self._namespaces[host], *argv]

    def pids(self, host: str) -> list[int]:
        return namespace_pids(self._namespaces[host])

    def forward(self, port: int, target: tuple[str, int] | None = None) -> None:
        """Relay connections to host_address:port (as the hosts see it) to `target`,
        by default 127.0.0.1:port in the test process's namespace."""
        if self._relay is None:
            self._relay = _Relay()
        self._relay.add((GATEWAY, port), target or ("127.0.0.1", port))

    def kill_host(self, host: str) -> None:
        """The host crashes: SIGKILL every process in its namespace. The namespace and its
        address stay, so the host can be started again."""
        kill_namespace(self._namespaces[host])

    def close(self) -> None:
        """Stop the forwarders, kill what runs on the hosts, remove namespaces, veths and the
        bridge. Safe to call twice, and after a half-built network."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._relay is not None:
                self._relay.close()
                self._relay = None
            for host in self.hosts:
                ns = self._namespaces[host]
                kill_namespace(ns)
                # Deleting the host side removes the pair at once; deleting only the namespace
                # would leave the kernel to destroy eth0 (and so the pair) asynchronously.
                _ip("link", "delete", self._veths[host], check=False)
                _ip("netns", "delete", ns, check=False)
            _ip("link", "delete", self.bridge, check=False)
            if self._accept_rule is not None:
                _iptables("-D", self._accept_rule)
                self._accept_rule = None
        finally:
            global _active
            _active = None
            self._lock_file.close()   # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- construction --

    @staticmethod
    def _acquire_lock() -> IO[str]:
        lock_file = open(LOCK_PATH, "a+")  # noqa: SIM115 - held for the network's lifetime
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return lock_file
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock_file.close()
                    raise NetnsError(f"another test network held {LOCK_PATH} for {LOCK_WAIT}s")
                time.sleep(0.2)

    def _build(self) -> None:
        # Someone else's interface holding the gateway address would make routing ambiguous.
        taken = _ip("-o", "-4", "addr", "show", "to", f"{GATEWAY}/32").stdout.strip()
        if taken:
            raise NetnsError(f"{GATEWAY} is already in use on this machine: {taken}")
        # The bridge gets a fixed MAC: otherwise it takes the lowest of its ports' and changes as
        # ports join, which leaves the hosts' ARP entries for the gateway stale for a moment.
        _ip("link", "add", self.bridge, "address", "02:00:c6:33:64:01", "type", "bridge",
            "stp_state", "0", "forward_delay", "0")
        _ip("addr", "add", f"{GATEWAY}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        if _bridge_filtered():
            if shutil.which("iptables") is None:
                # Nothing to inspect the rules with; if some filter drops bridged traffic, the
                # host-to-host test of tests/cluster/test_netns.py is what will say so.
                log.warning("bridge-nf-call-iptables is on and iptables is missing")
            else:
                self._accept_rule = _accept_rule(self.bridge)
                _iptables("-I", self._accept_rule, check=True)
        for host in self.hosts:
            ns, veth = self._namespaces[host], self._veths[host]
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{self._addresses[host]}/24", "dev", "eth0")
            # eth0 must be up before the default route: a gateway on a down link is refused.
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "default", "via", GATEWAY)
