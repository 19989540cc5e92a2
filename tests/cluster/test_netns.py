"""The test-host fixture itself: namespaces that reach each other and the machine's services,
a host that can crash and come back, and a teardown that leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.netns import TestNetwork, namespace_pids, netns_available

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["gw", "d1", "d2"]
SERVICES = {"PostgreSQL": 5432, "Redis": 6379, "RabbitMQ": 5672}


def _require_netns() -> None:
    reason = netns_available()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"cluster tests need network namespaces: {reason}", pytrace=False)
    pytest.skip(reason)


def _run_in(net: TestNetwork, host: str, code: str, timeout: float = 60) -> str:
    """Run a Python snippet with this interpreter inside `host`; return its stdout."""
    result = subprocess.run(net.command(host, [sys.executable, "-c", textwrap.dedent(code)]),
                            check=False, capture_output=True, text=True, timeout=timeout,
                            cwd=REPO)
    assert result.returncode == 0, f"on {host}: {result.stderr}"
    return result.stdout


def _our_names(net: TestNetwork) -> set[str]:
    return {net.bridge, *net._veths.values(), *(net.namespace(h) for h in net.hosts)}


def _existing_names() -> set[str]:
    """Interfaces and namespaces on the machine, plus the bridges named in FORWARD rules."""
    links = subprocess.run(["ip", "-o", "link", "show"], check=False, capture_output=True,
                           text=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True,
                           text=True).stdout
    rules = subprocess.run(["iptables", "-w", "10", "-S", "FORWARD"], check=False,
                           capture_output=True, text=True).stdout if shutil.which("iptables") else ""
    return ({line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
            | {line.split()[0] for line in netns.splitlines() if line.strip()}
            | {word for line in rules.splitlines() for word in line.split()[3:4]})


# A listener started inside one host: answers each client with the address it saw the client
# connect from, then exits after `count` clients.
LISTENER = """
import socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    conn, peer = srv.accept()
    with conn:
        conn.recv(100)
        conn.sendall(peer[0].encode())
"""


@pytest.fixture(scope="class")
def net() -> Iterator[TestNetwork]:
    """Three hosts that reach PostgreSQL, Redis and RabbitMQ on the gateway; class-scoped, so
    TestTeardown (which builds networks of its own, one at a time) never overlaps it."""
    _require_netns()
    with TestNetwork(HOSTS) as net:
        for port in SERVICES.values():
            net.forward(port)
        yield net


class TestHostsOnOneNetwork:
    def test_each_host_reaches_the_other_two_over_tcp(self, net: TestNetwork) -> None:
        for server in HOSTS:
            clients = [h for h in HOSTS if h != server]
            listener = subprocess.Popen(
                net.command(server, [sys.executable, "-c", LISTENER, "7000", str(len(clients))]),
                stdout=subprocess.PIPE, text=True)
            try:
                assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
                for client in clients:
                    seen_as = _run_in(net, client, f"""
                        import socket
                        with socket.create_connection(("{net.address(server)}", 7000), 5) as s:
                            s.sendall(b"hello")
                            print(s.recv(100).decode())
                    """).strip()
                    # Bridged, not NATed: the server sees the client's own address.
                    assert seen_as == net.address(client)
                assert listener.wait(timeout=10) == 0
            finally:
                listener.kill()
                listener.wait()

    def test_each_host_reaches_postgresql_redis_and_rabbitmq_through_the_gateway(
            self, net: TestNetwork) -> None:
        for host in HOSTS:
            out = _run_in(net, host, f"""
                import pika, psycopg, redis
                gw = "{net.host_address}"
                with psycopg.connect(host=gw, port=5432, user="postgres", dbname="postgres",
                                     connect_timeout=10) as conn:
                    print(conn.execute("SELECT 1").fetchone()[0])
                print(redis.Redis(host=gw, port=6379, socket_timeout=10).ping())
                amqp = pika.BlockingConnection(pika.ConnectionParameters(
                    host=gw, port=5672, credentials=pika.PlainCredentials("guest", "guest"),
                    socket_timeout=10))
                print(amqp.is_open)
                amqp.close()
            """)
            assert out.split() == ["1", "True", "True"], host

    def test_the_forwarder_carries_concurrent_bulk_connections_and_half_closes(
            self, net: TestNetwork) -> None:
        # An upstream that reads until the client's FIN, then answers with everything it read
        # reversed: only a relay that passes the half-close on gets an answer at all.
        upstream = socket.create_server(("127.0.0.1", 0))
        port = upstream.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    conn, _ = upstream.accept()
                except OSError:
                    return
                with conn:
                    data = bytearray()
                    while chunk := conn.recv(65536):
                        data += chunk
                    conn.sendall(bytes(reversed(data)))

        threads = [threading.Thread(target=serve, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            net.forward(17000, target=("127.0.0.1", port))
            out = _run_in(net, "d1", f"""
                import os, socket
                from concurrent.futures import ThreadPoolExecutor
                def one(i):
                    payload = os.urandom(1_000_000 if i % 10 == 0 else 1000)
                    with socket.create_connection(("{net.host_address}", 17000), 20) as s:
                        s.sendall(payload)
                        s.shutdown(socket.SHUT_WR)
                        got = bytearray()
                        while chunk := s.recv(65536):
                            got += chunk
                    return bytes(got) == payload[::-1]
                with ThreadPoolExecutor(40) as pool:
                    print(sum(pool.map(one, range(200))))
            """, timeout=120)
            assert out.strip() == "200"
        finally:
            upstream.close()

    def test_kill_host_leaves_no_process_and_the_host_can_start_again(
            self, net: TestNetwork) -> None:
        # A daemon-like tree: a detached grandchild that outlives the process that started it.
        starter = subprocess.run(net.command("d2", [
            "sh", "-c", "setsid sleep 600 >/dev/null 2>&1 & sleep 600 >/dev/null 2>&1 & echo ok"]),
            check=False, capture_output=True, text=True, timeout=10)
        assert starter.stdout.strip() == "ok"
        assert len(net.pids("d2")) == 2
        net.kill_host("d2")
        assert net.pids("d2") == []
        assert _run_in(net, "d2", "print('back')").strip() == "back"
        assert net.pids("gw") == [] and net.pids("d1") == []


class TestTeardown:
    def test_closing_the_network_leaves_no_namespace_link_or_process(self) -> None:
        _require_netns()
        with TestNetwork(HOSTS) as net:
            names = _our_names(net)
            assert names <= _existing_names()
            net.forward(6379)
            sleepers = [subprocess.Popen(net.command(h, ["sleep", "600"])) for h in HOSTS]
            namespaces = [net.namespace(h) for h in HOSTS]
        assert not names & _existing_names()
        assert all(namespace_pids(ns) == [] for ns in namespaces)
        assert all(p.wait(timeout=10) == -signal.SIGKILL for p in sleepers)
        # The forwarder's listener is closed too. (Nothing may connect to 198.51.100.1 now: with
        # the bridge gone, the machine's default route would send that traffic off the machine.)
        listening = subprocess.run(["ss", "-Hltn"], check=False, capture_output=True,
                                   text=True).stdout
        assert f"{net.host_address}:6379" not in listening
        net.close()   # idempotent

    def test_a_new_network_removes_what_a_crashed_run_left(self) -> None:
        _require_netns()
        crashed = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import os, signal, subprocess
            from tests.cluster.netns import TestNetwork
            net = TestNetwork(["a", "b"])
            subprocess.Popen(net.command("a", ["sleep", "600"]), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(" ".join([net.bridge, *net._veths.values(),
                            *(net.namespace(h) for h in net.hosts)]), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)   # no teardown
        """)], check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        left = set(crashed.stdout.split())
        assert len(left) == 5 and left <= _existing_names()
        started = time.monotonic()
        with TestNetwork(["x"]) as net:
            assert not left & _existing_names()
            assert net.address("x") == "198.51.100.11"
        assert time.monotonic() - started < 30
