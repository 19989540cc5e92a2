"""A whole running Clarion for end-to-end tests: the actor system, `clarion serve`, the simulator."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clarion.config.settings import Settings, settings_to_env


def port_open(port: int, timeout: float = 1.0) -> bool:
    """Whether something on 127.0.0.1 accepts connections on `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    settings: Settings
    base_url: str
    api_key: str
    simulator: Any
    pgid: int
    http: subprocess.Popen[bytes]
    log_dir: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=15,
                              headers={"Authorization": f"Bearer {self.api_key}"})
        self.clients.append(client)
        return client

    def code_user_and_template(self, push_tokens: list[str] | None = None) -> tuple[str, str]:
        """A fresh user with an email address (and these push tokens) and a fresh template
        whose subject and body show the `code` variable: (user_id, template_key)."""
        client = self.client()
        user_id, key = f"u-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:6]}"
        user = {"user_id": user_id, "email_address": f"{user_id}@example.com"}
        if push_tokens is not None:
            user["push_tokens"] = push_tokens
        assert client.post("/v1/users", json=user).status_code == 201
        assert client.post("/v1/templates", json={
            "template_key": key, "subject": "Code {{ code }}", "body": "Your code: {{ code }}",
        }).status_code == 201
        return user_id, key

    def actors(self) -> dict[str, dict[str, Any]]:
        """The Supervisor's view of its children, by name."""
        reply = self.client().get("/v1/system/actors")
        reply.raise_for_status()
        return {c["name"]: c for c in reply.json()["data"]["children"]}

    def wait_for_status(self, notification_id: str, wanted: set[str],
                        timeout: float = 20.0) -> dict[str, Any]:
        client = self.client()
        deadline = time.monotonic() + timeout
        data: dict[str, Any] = {"status": "unknown"}
        while True:
            reply = client.get(f"/v1/notifications/{notification_id}")
            if reply.status_code == 200:  # not while storage is away (an outage test)
                data = reply.json()["data"]
            if data["status"] in wanted or time.monotonic() > deadline:
                return data
            time.sleep(0.05)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTP server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def start_stack(settings: Settings, simulator: Any, log_dir: Path, tries: int = 3) -> Stack:
    """Start the actor system and `clarion serve` as a real deployment would.

    The ports come from `free_port()`, which another process can take before we bind them;
    then the start is tried again on fresh ports.
    """
    for attempt in range(1, tries + 1):
        try:
            return _start_stack(settings, simulator, log_dir)
        except Exception:
            if attempt == tries:
                raise
            settings = new_stack_settings(settings)
    raise AssertionError("unreachable")


def _start_stack(settings: Settings, simulator: Any, log_dir: Path) -> Stack:
    from clarion.persistence import api_keys, database
    from clarion.node.launcher import start_actor_system

    with database.connect(settings.database_url, autocommit=True) as conn:
        key = api_keys.create_api_key(conn, f"tests-{uuid.uuid4().hex[:6]}", scope="admin")
    pgid = start_actor_system(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(settings_to_env(settings))
    out = open(log_dir / "http.out", "ab")  # noqa: SIM115 - closed with the stack
    http = subprocess.Popen([sys.executable, "-m", "clarion.cli", "serve"], env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out.close()
    base_url = f"http://{settings.http_host}:{settings.http_port}"
    try:
        _wait_http(base_url + "/health/ready", http, 30)
    except Exception:
        stop_stack_processes(http, settings, pgid)
        raise
    return Stack(settings, base_url, key, simulator, pgid, http, log_dir)


def stop_stack_processes(http: subprocess.Popen[bytes], settings: Settings, pgid: int) -> None:
    from clarion.node.launcher import stop_actor_system

    if http.poll() is None:
        http.send_signal(signal.SIGTERM)
        try:
            http.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(http.pid, signal.SIGKILL)
            http.wait(5)
    stop_actor_system(settings, pgid)


def stop_stack(stack: Stack) -> None:
    for client in stack.clients:
        client.close()
    stop_stack_processes(stack.http, stack.settings, stack.pgid)


@contextmanager
def running_stack(settings: Settings, simulator: Any, log_dir: Path,
                  **changes: Any) -> Iterator[Stack]:
    """A stack started on fresh ports with `changes` to these settings, stopped on leaving."""
    stack = start_stack(new_stack_settings(settings).model_copy(update=changes), simulator,
                        log_dir)
    try:
        yield stack
    finally:
        stop_stack(stack)


def rabbitmqctl(*args: str) -> None:
    """Run `rabbitmqctl -q args`; the test fails if it does."""
    import pytest

    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")


def new_stack_settings(settings: Settings) -> Settings:
    """The same settings on fresh ports (each stack has its own actor system)."""
    return settings.model_copy(update={"actor_port": free_port(), "http_port": free_port()})
