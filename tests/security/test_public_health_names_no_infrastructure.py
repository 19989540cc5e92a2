"""Finding: the unauthenticated `/health/ready` listed every host's address, admin port, pid and
actors' pids. Public answers now name no host address, port or pid; that detail is behind auth
in /v1/system/cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster.nodes import wait
from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("health")) as running:
        yield running


def test_the_public_health_answers_name_no_address_port_or_pid(stack: Stack) -> None:
    cluster = stack.client().get("/v1/system/cluster").json()["data"]["hosts"]
    here = next(h for h in cluster if h["node"] == stack.settings.node_name)
    # What must not leak: the host's address and admin port, the Supervisor's and actors' pids.
    secrets = {here["address"], str(here["admin_port"]), str(here["pid"]),
               *(str(a["pid"]) for a in here["actors"] if a["pid"])}

    for path in ("/health", "/health/ready"):
        reply = httpx.get(stack.base_url + path, timeout=15)
        assert reply.status_code == 200
        numbers = set(re.findall(r"[0-9][0-9.]*", reply.text))
        assert not secrets & (numbers | {reply.text}), (path, reply.text)
        assert not re.search(r'"(address|admin_port|pid|node|convention)"', reply.text), reply.text
    # How many hosts are up is still there (once this host's first heartbeat is in the view).
    wait(lambda: httpx.get(stack.base_url + "/health/ready").json()["data"]["hosts"]["up"] >= 1,
         10, "this host counted up")
