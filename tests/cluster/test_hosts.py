"""A Clarion cluster across three real network hosts (namespaces, tests/cluster/netns.py).

    gw   198.51.100.11   clarion node --role gateway   leads the convention, serves HTTP
    d1   198.51.100.12   clarion node --role delivery
    d2   198.51.100.13   clarion node --role delivery
    x    198.51.100.14   no Clarion: a host outside the cluster's peers, on the same network

Each host reaches the shared PostgreSQL, Redis, RabbitMQ and the provider simulator only
through forwarders on 198.51.100.1. The test sends to the gateway's HTTP port, crashes d1 (every
process of that host, SIGKILL) under a steady stream, and checks that the cluster view marks it
down within 10 s, that d2 delivers everything accepted meanwhile, and that d1 rejoins. And that
a host outside the cluster's peers cannot get a pickle into any actor socket.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarion.config.settings import Settings, settings_to_env
from tests.cluster.netns import TestNetwork, netns_available
from tests.cluster.nodes import wait

# A gateway's HTTP port refuses connections until the host is up: that counts as "not yet".
_wait = functools.partial(wait, ignore=(httpx.HTTPError,))

ACTOR_PORT = 19_555  # every host has its own network, so all use the same admin port
HTTP_PORT = 8_080
HOSTS = ("gw", "d1", "d2")
OUTSIDER = "x"  # on the same network as the hosts, but not one of the cluster's peers
ROLES = {"gw": "gateway", "d1": "delivery", "d2": "delivery"}


def _netns_of(pid: int) -> str:
    return subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True,
                          text=True, timeout=10).stdout.strip()


class Cluster:
    def __init__(self, net: TestNetwork, base: Settings, simulator: Any, folder: Path) -> None:
        self.net = net
        self.suffix = uuid.uuid4().hex[:6]
        self.names = {host: f"{host}-{self.suffix}" for host in HOSTS}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.folder = folder
        gateway = net.host_address
        from clarion.simulator.credentials import write_service_account

        sim_port = int(simulator.base_url.rsplit(":", 1)[1])
        sim = f"http://{gateway}:{sim_port}"
        credentials = write_service_account(folder / "fcm.json", token_uri=sim + "/token")
        self.base = base.model_copy(update={
            "database_url": base.database_url.replace("127.0.0.1", gateway),
            "redis_url": base.redis_url.replace("127.0.0.1", gateway),
            "amqp_url": base.amqp_url.replace("127.0.0.1", gateway),
            "sendgrid_host": sim, "fcm_endpoint": sim, "fcm_credentials_file": credentials,
            "actor_port": ACTOR_PORT, "http_port": HTTP_PORT,
            "convention": f"{net.address('gw')}:{ACTOR_PORT}",
        })
        self.url = f"http://{net.address('gw')}:{HTTP_PORT}"

    def start(self, host: str) -> None:
        settings = self.base.model_copy(update={
            "node_name": self.names[host], "node_role": ROLES[host],
            "http_host": self.net.address(host),
            # Each host's actor sockets listen on its own address and admit only the hosts of
            # the cluster (not OUTSIDER, which shares their network).
            "node_address": self.net.address(host),
            "cluster_peers": ",".join(self.net.address(h) for h in HOSTS),
            "state_dir": self.folder / host})
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        env.update(settings_to_env(settings))
        with open(self.folder / f"{host}.out", "ab") as out:
            self.processes[host] = subprocess.Popen(
                self.net.command(host, [sys.executable, "-m", "clarion.cli", "node"]),
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def stop(self, host: str) -> None:
        proc = self.processes.pop(host, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self.net.kill_host(host)  # whatever an orderly stop left
        if proc is not None and proc.poll() is None:
            proc.wait(5)

    def hosts(self, client: httpx.Client) -> dict[str, dict[str, Any]]:
        reply = client.get("/v1/system/cluster")
        reply.raise_for_status()
        return {h["node"]: h for h in reply.json()["data"]["hosts"]}

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace")
                                                      .splitlines()[-15:])
                         for p in sorted(self.folder.glob("*.out")))


@pytest.fixture(scope="module")
def cluster(provider_settings: Settings, simulator: Any,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = netns_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"network namespaces are needed for the cluster test: {reason}")
        pytest.skip(f"network namespaces unavailable here: {reason}")
    simulator_port = int(simulator.base_url.rsplit(":", 1)[1])
    with TestNetwork([*HOSTS, OUTSIDER]) as net:
        for port in (5432, 6379, 5672, simulator_port):
            net.forward(port)
        running = Cluster(net, provider_settings, simulator,
                          Path(tmp_path_factory.mktemp("hosts")))
        try:
            for host in HOSTS:
                running.start(host)
            yield running
        finally:
            for host in reversed(HOSTS):
                running.stop(host)


@pytest.fixture(scope="module")
def client(cluster: Cluster, provider_settings: Settings) -> Iterator[httpx.Client]:
    from clarion.persistence import api_keys, database

    with database.connect(provider_settings.database_url, autocommit=True) as conn:
        key = api_keys.create_api_key(conn, f"hosts-{cluster.suffix}", scope="admin")
    with httpx.Client(base_url=cluster.url, timeout=15,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        try:
            _wait(lambda: http.get("/health/ready").status_code == 200, 60,
                  "the gateway host ready")
        except AssertionError:
            raise AssertionError("the gateway host did not get ready:\n" + cluster.log_tail())
        yield http


def _send(client: httpx.Client, user_id: str, key: str, code: str) -> str | None:
    reply = client.post("/v1/notifications", json={
        "user_id": user_id, "template_key": key, "message_data": {"code": code}})
    return reply.json()["data"]["notification_id"] if reply.status_code == 202 else None


def _status(client: httpx.Client, notification_id: str) -> str:
    reply = client.get(f"/v1/notifications/{notification_id}")
    return str(reply.json()["data"]["status"]) if reply.status_code == 200 else "unknown"


def test_three_hosts_join_and_the_delivery_hosts_deliver(
    cluster: Cluster, client: httpx.Client, clean_simulator: None,
) -> None:
    names = cluster.names
    _wait(lambda: all(cluster.hosts(client).get(names[h], {}).get("status") == "up"
                      for h in HOSTS), 30, "all three hosts beating")
    _wait(lambda: set(cluster.hosts(client)[names["gw"]]["convention_members"]) ==
          {names["d1"], names["d2"]}, 30, "both delivery hosts in the gateway's convention")

    hosts = cluster.hosts(client)
    assert hosts[names["gw"]]["leader"]
    assert not {"email", "push"} & {a["name"] for a in hosts[names["gw"]]["actors"]}
    for host in ("d1", "d2"):
        entry = hosts[names[host]]
        # The host says where it is, and its delivery actors' processes are in its namespace.
        assert entry["address"] == cluster.net.address(host)
        actors = {a["name"]: a for a in entry["actors"]}
        assert actors["email"]["state"] == actors["push"]["state"] == "running"
        for name in ("email", "push"):
            assert _netns_of(actors[name]["pid"]) == cluster.net.namespace(host)

    user_id, key = _user_and_template(client)
    ids = [_send(client, user_id, key, f"c{i}") for i in range(10)]
    assert None not in ids
    for notification_id in ids:
        assert notification_id is not None
        _wait(lambda n=notification_id: _status(client, n) == "sent", 30, "delivered")


def _listeners(net: TestNetwork, host: str) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket inside `host`."""
    out = subprocess.run(net.command(host, ["ss", "-Hltn"]), capture_output=True, text=True,
                         timeout=10, check=True).stdout
    found = []
    for line in out.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        found.append((address.strip("[]"), int(port)))
    return found


def _pickle_frame(marker: Path) -> bytes:
    """One Thespian transport frame ("<length>>" and a pickle) whose unpickling creates
    `marker`: any callable would run the same way."""
    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return open, (str(marker), "a")

    data = pickle.dumps(Payload())
    return f"{len(data)}>".encode() + data


SEND_FRAME = """
import json, socket, sys
frame, answers = bytes.fromhex(sys.argv[1]), {}
for target in sys.argv[2:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), 5) as s:
            s.sendall(frame)
            s.settimeout(2)
            answers[target] = s.recv(100).decode("latin-1")
    except OSError as exc:  # reset or broken pipe: dropped as well
        answers[target] = type(exc).__name__
print(json.dumps(answers))
"""


def _send_frame(net: TestNetwork, source: str, frame: bytes,
                targets: list[tuple[str, int]]) -> dict[str, str]:
    result = subprocess.run(
        net.command(source, [sys.executable, "-c", SEND_FRAME, frame.hex(),
                             *(f"{a}:{p}" for a, p in targets)]),
        capture_output=True, text=True, timeout=120, check=True)
    answers: dict[str, str] = json.loads(result.stdout)
    return answers


def test_a_host_outside_the_peers_is_dropped_by_every_actor_socket_and_runs_nothing(
    cluster: Cluster, client: httpx.Client, tmp_path: Path,
) -> None:
    net = cluster.net
    _wait(lambda: all(cluster.hosts(client).get(cluster.names[h], {}).get("status") == "up"
                      for h in HOSTS), 30, "all three hosts beating")
    targets = []
    for host in ("gw", "d1"):
        listening = _listeners(net, host)
        # Nothing of the node listens on every interface, or on another address than its own.
        assert {address for address, _ in listening} == {net.address(host)}, listening
        actor_ports = [(a, p) for a, p in listening if p != HTTP_PORT]
        assert (net.address(host), ACTOR_PORT) in actor_ports  # the admin
        assert len(actor_ports) > 3  # and the actor processes
        targets += actor_ports

    # From outside the peers: nothing is read, let alone unpickled. The admin and the actor
    # processes, which accept at all times, shut the connection at once; a socket that nobody
    # accepts on (the launcher's, inherited by the processes it forked; a bridge endpoint
    # between two sends) leaves it waiting unread until it times out.
    marker = tmp_path / "outsider-ran-code"
    answers = _send_frame(net, OUTSIDER, _pickle_frame(marker), targets)
    assert set(answers) == {f"{a}:{p}" for a, p in targets}
    assert set(answers.values()) <= {"", "ConnectionResetError", "BrokenPipeError",
                                     "TimeoutError"}, answers
    for host in ("gw", "d1"):
        assert answers[f"{net.address(host)}:{ACTOR_PORT}"] == ""
    assert sum(1 for answer in answers.values() if answer == "") >= 8
    time.sleep(1)
    assert not marker.exists()

    # The same frame from a peer is unpickled: the payload is real, and peers trust each other
    # fully (README "Security model"). Thespian then refuses it as no message ("ACK+DATAERR").
    control = tmp_path / "peer-ran-code"
    answers = _send_frame(net, "d2", _pickle_frame(control), [(net.address("d1"), ACTOR_PORT)])
    assert "ACK+DATAERR" in answers[f"{net.address('d1')}:{ACTOR_PORT}"], answers
    assert control.exists()
    assert cluster.hosts(client)[cluster.names["d1"]]["status"] == "up"


def test_a_crashed_delivery_host_is_marked_down_and_nothing_accepted_is_lost(
    cluster: Cluster, client: httpx.Client,
) -> None:
    names = cluster.names
    user_id, key = _user_and_template(client)
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=cluster.url, timeout=15,
                          headers=dict(client.headers)) as http:
            i = 0
            while not stop.is_set():
                reply = http.post("/v1/notifications", json={
                    "user_id": user_id, "template_key": key, "message_data": {"code": i}})
                if reply.status_code == 202:
                    accepted.append(reply.json()["data"]["notification_id"])
                else:
                    refused.append(reply.status_code)
                i += 1
                time.sleep(0.05)

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    try:
        time.sleep(2)  # the stream runs on both delivery hosts first
        crashed_at = time.monotonic()
        cluster.net.kill_host("d1")  # the host dies: every process on it, at once
        _wait(lambda: cluster.hosts(client)[names["d1"]]["status"] == "down", 10,
              "the crashed host marked down")
        marked_down = time.monotonic() - crashed_at
        time.sleep(3)  # d2 alone carries the stream
    finally:
        stop.set()
        sender.join(30)
    print(f"\nmarked down after {marked_down:.1f} s; {len(accepted)} accepted")
    assert marked_down < 10
    assert accepted and not refused, refused
    # Every accepted notification is delivered: d1's unacknowledged messages went back to
    # the queues and d2 delivered them.
    pending = set(accepted)
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if _status(client, n) != "sent"}
        time.sleep(0.5)
    assert not pending, f"{len(pending)} of {len(accepted)} not delivered"

    # The host comes back: it rejoins the convention and delivers again.
    cluster.processes.pop("d1", None)
    cluster.start("d1")
    _wait(lambda: cluster.hosts(client)[names["d1"]]["status"] == "up", 30, "d1 beating again")
    _wait(lambda: names["d1"] in cluster.hosts(client)[names["gw"]]["convention_members"], 30,
          "d1 back in the convention")
    actors = {a["name"]: a for a in cluster.hosts(client)[names["d1"]]["actors"]}
    assert actors["email"]["state"] == "running"
    assert _netns_of(actors["email"]["pid"]) == cluster.net.namespace("d1")


def _user_and_template(client: httpx.Client) -> tuple[str, str]:
    user_id, key = f"u-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:6]}"
    assert client.post("/v1/users", json={
        "user_id": user_id, "email_address": f"{user_id}@example.com",
        "push_tokens": [f"tok-{uuid.uuid4().hex[:8]}"]}).status_code == 201
    assert client.post("/v1/templates", json={
        "template_key": key, "subject": "Code {{ code }}", "body": "Your code: {{ code }}",
    }).status_code == 201
    return user_id, key
