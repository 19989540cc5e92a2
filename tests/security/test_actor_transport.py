"""Finding: the actor transport listened on every interface (about 14 sockets on `make run`),
and Thespian unpickles whatever reaches them. On one host every actor socket now listens on
127.0.0.1 only. (Across hosts, a host outside the cluster's peers is dropped before a byte is
unpickled: tests/cluster/test_hosts.py, which needs network namespaces.)"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("transport")) as running:
        yield running


def _listening_sockets() -> list[tuple[str, int, set[int]]]:
    """(local address, port, pids holding it) of every listening TCP socket on the machine."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    found = []
    for line in out.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        found.append((address.strip("[]"), int(port), pids))
    return found


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_no_clarion_process_listens_beyond_loopback(stack: Stack) -> None:
    # The actors are one process group; `clarion serve` and its workers another.
    groups = {stack.pgid, stack.http.pid}
    clarion = [(address, port) for address, port, pids in _listening_sockets()
               if any(_group(pid) in groups for pid in pids)]

    ports = {port for _, port in clarion}
    assert stack.settings.actor_port in ports  # the admin is among them
    assert len(ports) >= 9  # the admin, every actor process and the bridge's endpoints
    assert {address for address, _ in clarion} == {"127.0.0.1"}, clarion
