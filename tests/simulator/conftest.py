"""The simulator's tests share one running simulator per module, reset before each test, and an
HTTP client to it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from clarion.simulator.server import SimulatorServer


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer() as srv:
        yield srv


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    server.state.reset()
    return server


@pytest.fixture
def http(sim: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=5) as client:
        yield client
