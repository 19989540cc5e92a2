"""Finding: auth decided on `scope["path"]`, which includes `root_path`, while routing matches the
path without it: under `uvicorn --root-path /clarion` every /v1 route and /metrics answered
without credentials. Auth now decides on the route path, and anything no rule names needs an
admin key (it fails closed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from clarion.config.settings import settings_to_env
from clarion.node.launcher import metrics_dir
from tests.stack import Stack, _wait_http, free_port, running_stack

pytestmark = pytest.mark.e2e

PREFIX = "/clarion"


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("root-path")) as running:
        yield running


@pytest.fixture(scope="module")
def prefixed(stack: Stack) -> Iterator[str]:
    """A second HTTP server on the same actors, as deployed behind a proxy that serves it under
    /clarion and strips that prefix: uvicorn then hands the app `path` = /clarion + the path
    asked for, with `root_path` = /clarion, and routing matches the path without it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(settings_to_env(stack.settings))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(stack.settings))
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "clarion.http.app:app_factory", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--root-path", PREFIX,
         "--log-level", "warning"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/health", server, 30)
        yield base
    finally:
        server.terminate()
        server.wait(15)


SECURED = ["/v1/users", "/v1/templates", "/v1/notifications", "/v1/outbox", "/v1/dlq",
           "/v1/system/actors", "/v1/system/cluster", "/v1/alerts", "/metrics"]


@pytest.mark.parametrize("path", SECURED)
def test_under_a_root_path_every_secured_route_still_needs_credentials(
        prefixed: str, path: str) -> None:
    reply = httpx.get(f"{prefixed}{path}", timeout=15)

    assert reply.status_code == 401, reply.text
    assert reply.json()["error"] == "unauthorized"


def test_under_a_root_path_a_key_reaches_the_routes_and_the_public_ones_stay_public(
        prefixed: str, stack: Stack) -> None:
    key = {"Authorization": f"Bearer {stack.api_key}"}

    assert httpx.get(f"{prefixed}/v1/users", headers=key, timeout=15).status_code == 200
    assert httpx.get(f"{prefixed}/health", timeout=15).status_code == 200


def test_a_path_no_rule_names_needs_an_admin_key_before_it_is_even_found(
        prefixed: str, stack: Stack) -> None:
    key = {"Authorization": f"Bearer {stack.api_key}"}

    for url in (f"{prefixed}/internal/anything", f"{stack.base_url}/v2/users"):
        assert httpx.get(url, timeout=15).status_code == 401
        assert httpx.get(url, headers=key, timeout=15).status_code == 404
