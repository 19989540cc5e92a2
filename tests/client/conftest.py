"""The Python client (`client/`, package `clarion_client`) against a real running Clarion: the
actor system, `clarion serve` and the provider simulator, as the other end-to-end tests start
them. The client must be installed (`pip install -e client`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from clarion_client import Clarion

from tests.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(provider_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    simulator.state.reset()  # no fault injected by an earlier module
    with running_stack(provider_settings, simulator, tmp_path_factory.mktemp("stack-logs"),
                       # the status-callback test's receiver listens on 127.0.0.1
                       callbacks_allow_private=True, callback_backoff=0.2) as running:
        yield running


@pytest.fixture(scope="module")
def clarion(stack: Stack) -> Iterator[Clarion]:
    """The client, with the stack's admin key."""
    with Clarion(stack.base_url, stack.api_key) as client:
        yield client
