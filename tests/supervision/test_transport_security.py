"""The actor transport's allow-list and refusal, without an actor system (the running system is
tests/security/test_actor_transport.py and, across hosts, tests/cluster/test_hosts.py)."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from clarion.supervision.transport_security import PeerPolicy, _refuse, secure_transport


def _policy(own: str, *peers: str) -> PeerPolicy:
    return PeerPolicy(own, [ipaddress.ip_network(p, strict=False) for p in peers])


def test_loopback_and_the_own_address_are_always_admitted() -> None:
    policy = _policy("10.0.0.11")

    assert policy.admits("127.0.0.1") and policy.admits("127.8.9.10")
    assert policy.admits("10.0.0.11")
    assert not policy.admits("10.0.0.12")


def test_listed_addresses_and_networks_are_admitted_and_nothing_else() -> None:
    policy = _policy("10.0.0.11", "10.0.0.12", "10.0.1.0/24")

    assert policy.admits("10.0.0.12")
    assert policy.admits("10.0.1.200")
    assert policy.admits("::ffff:10.0.1.7")  # an IPv4 peer seen through an IPv6 socket
    assert not policy.admits("10.0.0.13")
    assert not policy.admits("10.0.2.1")
    assert not policy.admits("::1:10.0.1.7")


def test_a_peer_that_is_no_ip_address_is_refused() -> None:
    assert not _policy("127.0.0.1").admits("")
    assert not _policy("127.0.0.1").admits("localhost")


def _accepted_with_bytes_waiting(payload: bytes) -> tuple[socket.socket, socket.socket]:
    """(client, server side) of a loopback connection whose client already sent `payload`."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        client.sendall(payload)
        server, _ = listener.accept()
    time.sleep(0.05)  # the bytes are in the server's receive buffer
    return client, server


def test_a_shutdown_alone_leaves_what_the_peer_sent_readable() -> None:
    # Why refusing takes more than shutdown(): Linux keeps the bytes that came first readable.
    client, server = _accepted_with_bytes_waiting(b"a pickle")
    with client, server:
        server.shutdown(socket.SHUT_RDWR)
        assert server.recv(100) == b"a pickle"


def test_a_refused_connection_reads_as_closed_on_both_sides() -> None:
    client, server = _accepted_with_bytes_waiting(b"a pickle")
    refused = _refuse(server)
    with client, refused:
        assert refused.recv(100) == b""
        assert refused.recv_into(bytearray(100)) == 0
        # Thespian sets this on every accepted socket; it must still work on a refused one.
        refused.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(5)
        assert client.recv(100) == b""


def test_the_transport_refuses_to_bind_every_interface() -> None:
    with pytest.raises(ValueError, match="0.0.0.0"):
        secure_transport("0.0.0.0")
